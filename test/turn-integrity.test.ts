// The TURN client reads only what a response's MESSAGE-INTEGRITY covers (RFC 8489
// 14.5): an attribute after it, which anyone on the path could have appended, is
// ignored, but MESSAGE-INTEGRITY-SHA256 and FINGERPRINT. A TURN server of the
// test's own, on loopback, answers the client's real requests with such responses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { TurnClient, TurnError, socketTransport } from '../src/client/turn-client.js';
import {
  ATTR, CLASS_ERROR, CLASS_SUCCESS, METHOD, MessageBuilder, checkIntegrity, decodeMessage, fingerprint, longTermKey, messageType,
  type StunMessage,
} from '../src/stun/codec.js';

const USERNAME = 'alice', PASSWORD = 'secret', REALM = 'test.realm';
const KEY = longTermKey(USERNAME, REALM, PASSWORD);
const REAL_RELAYED = { address: '198.51.100.7', port: 50_000 };
const FORGED_RELAYED = { address: '203.0.113.66', port: 6379 };

/** One address attribute (header and value) for a message with this transaction id. */
function addressAttr(type: number, txid: Buffer, a: { address: string; port: number }): Buffer {
  return new MessageBuilder(0x0101, txid).addAddress(type, a.address, a.port).build().subarray(20);
}

/** `sealed` (a message ending in MESSAGE-INTEGRITY) with `after` appended, and a FINGERPRINT over it all. */
function appendAfterIntegrity(sealed: Buffer, after: Buffer): Buffer {
  const msg = Buffer.concat([sealed, after, Buffer.alloc(8)]);
  msg.writeUInt16BE(msg.length - 20, 2);
  const fp = msg.length - 8;
  msg.writeUInt16BE(ATTR.FINGERPRINT, fp); msg.writeUInt16BE(4, fp + 2);
  msg.writeUInt32BE(fingerprint(msg, 0, fp), fp + 4);
  return msg;
}

/**
 * A TURN server that asks for credentials (401 with REALM and NONCE), then answers
 * an authenticated Allocate with XOR-MAPPED-ADDRESS, LIFETIME, `relayedBefore` (if
 * any) under MESSAGE-INTEGRITY, and a forged XOR-RELAYED-ADDRESS after it.
 */
async function fakeTurnServer(relayedBefore: { address: string; port: number } | null): Promise<{ port: number; close: () => void }> {
  const s = dgram.createSocket('udp4');
  s.on('message', (raw, from) => {
    const m = decodeMessage(raw);
    if (typeof m === 'string') return;
    const authed = m.attributes.some((a) => a.type === ATTR.MESSAGE_INTEGRITY);
    if (!authed) {
      const e = new MessageBuilder(messageType(m.method, CLASS_ERROR), m.transactionId)
        .add(ATTR.ERROR_CODE, Buffer.from([0, 0, 4, 1, ...Buffer.from('Unauthorized')]))
        .addString(ATTR.REALM, REALM).addString(ATTR.NONCE, 'nonce-1').build();
      s.send(e, from.port, from.address);
      return;
    }
    const b = new MessageBuilder(messageType(m.method, CLASS_SUCCESS), m.transactionId)
      .addAddress(ATTR.XOR_MAPPED_ADDRESS, from.address, from.port)
      .addUint32(ATTR.LIFETIME, m.method === METHOD.ALLOCATE ? 600 : 0);
    if (m.method === METHOD.ALLOCATE && relayedBefore !== null) b.addAddress(ATTR.XOR_RELAYED_ADDRESS, relayedBefore.address, relayedBefore.port);
    const sealed = b.build({ integrityKey: KEY });
    const out = m.method === METHOD.ALLOCATE ? appendAfterIntegrity(sealed, addressAttr(ATTR.XOR_RELAYED_ADDRESS, m.transactionId, FORGED_RELAYED)) : sealed;
    s.send(out, from.port, from.address);
  });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return { port: s.address().port, close: () => s.close() };
}

async function allocate(server: { port: number }): Promise<{ result: TurnClient | Error; socket: dgram.Socket }> {
  const socket = dgram.createSocket('udp4');
  socket.on('error', () => {});
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
  const result = await TurnClient.allocate(socketTransport(socket), { server: { host: '127.0.0.1', port: server.port }, username: USERNAME, password: PASSWORD, timeoutMs: 5000 })
    .catch((err: Error) => err);
  return { result, socket };
}

test('a response\'s only XOR-RELAYED-ADDRESS after MESSAGE-INTEGRITY is ignored: the Allocate fails as malformed, no relayed address is taken', async () => {
  const server = await fakeTurnServer(null);
  const { result, socket } = await allocate(server);
  try {
    assert.ok(result instanceof TurnError, `refused (got ${result instanceof TurnClient ? `relayed ${JSON.stringify(result.relayed)}` : String(result)})`);
    assert.equal(result.failure, 'malformed');
  } finally {
    if (result instanceof TurnClient) await result.close();
    socket.close();
    server.close();
  }
});

test('with an XOR-RELAYED-ADDRESS under MESSAGE-INTEGRITY and another after it, the covered one is the relayed address', async () => {
  const server = await fakeTurnServer(REAL_RELAYED);
  const { result, socket } = await allocate(server);
  try {
    assert.ok(result instanceof TurnClient, String(result));
    assert.deepEqual({ address: result.relayed.address, port: result.relayed.port }, REAL_RELAYED);
  } finally {
    if (result instanceof TurnClient) await result.close();
    socket.close();
    server.close();
  }
});

test('decodeMessage keeps what MESSAGE-INTEGRITY covers, then MESSAGE-INTEGRITY-SHA256 and FINGERPRINT alone; after MESSAGE-INTEGRITY-SHA256, FINGERPRINT alone', () => {
  const txid = Buffer.alloc(12, 9);
  const sealed = new MessageBuilder(0x0101, txid).addUint32(ATTR.LIFETIME, 600).build({ integrityKey: KEY });
  const sha256 = Buffer.alloc(36); sha256.writeUInt16BE(ATTR.MESSAGE_INTEGRITY_SHA256, 0); sha256.writeUInt16BE(32, 2);
  const lifetime = new MessageBuilder(0x0101, txid).addUint32(ATTR.LIFETIME, 1).build().subarray(20);
  const forged = addressAttr(ATTR.XOR_RELAYED_ADDRESS, txid, FORGED_RELAYED);
  const m = decodeMessage(appendAfterIntegrity(sealed, Buffer.concat([forged, sha256, lifetime]))) as StunMessage;
  assert.equal(typeof m, 'object');
  assert.deepEqual(m.attributes.map((a) => a.type), [ATTR.LIFETIME, ATTR.MESSAGE_INTEGRITY, ATTR.MESSAGE_INTEGRITY_SHA256, ATTR.FINGERPRINT]);
  assert.equal(m.attributes[0]!.value.readUInt32BE(0), 600, 'the covered LIFETIME, not the one appended');
  assert.equal(checkIntegrity(m, KEY), true, 'the integrity still checks');
  // and a FINGERPRINT after ignored attributes is still checked
  const bad = appendAfterIntegrity(sealed, forged);
  bad[bad.length - 1]! ^= 1;
  assert.equal(decodeMessage(bad), 'bad-fingerprint');
});
