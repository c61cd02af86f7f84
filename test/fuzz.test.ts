// Property-based fuzzing: for any input, the parser returns a request or an error,
// and a shard answers with well-formed replies or drops; neither ever throws, and
// the peer table stays consistent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseRequest } from '../src/protocol/request.js';
import { Shard, shardOptions } from '../src/shard/shard.js';
import { defaultConfig } from '../src/config.js';
import { ONE_UDP4_SOCKET, readReplies, requestBatch } from './helpers/batch.js';
import { CLASS_ERROR, CLASS_SUCCESS, decodeMessage, looksLikeStun } from '../src/stun/codec.js';

const limits = { shareIdLength: 12, maxMultiaddr: 256 };
const KNOWN_REPLIES = new Set(['announceReceived', 'announced', 'pulseReceived', 'alived', 'expired', 'pushReceived', 'pushed', 'income', 'relayReceived', 'error']);

/** STUN-shaped datagrams: a valid header (any type, the cookie, any transaction id) and any attributes, well framed or not. */
const stunish = fc.record({
  type: fc.oneof(fc.constant(0x0001), fc.constant(0x0011), fc.constant(0x0003), fc.integer({ min: 0, max: 0x3fff })),
  txid: fc.uint8Array({ minLength: 12, maxLength: 12 }),
  attrs: fc.array(fc.record({ type: fc.oneof(fc.constantFrom(0x0003, 0x0026, 0x0027, 0x8028, 0x0006, 0x8022), fc.integer({ min: 0, max: 0xffff })),
    value: fc.uint8Array({ maxLength: 24 }), lie: fc.integer({ min: -4, max: 8 }) }), { maxLength: 4 }),
}).map(({ type, txid, attrs }) => {
  const body = Buffer.concat(attrs.map((a) => {
    const b = Buffer.alloc(4 + a.value.length + ((4 - (a.value.length % 4)) % 4));
    b.writeUInt16BE(a.type, 0); b.writeUInt16BE(Math.max(0, a.value.length + (a.lie > 4 ? a.lie : 0)), 2); b.set(a.value, 4);
    return b;
  }));
  const head = Buffer.alloc(20);
  head.writeUInt16BE(type, 0); head.writeUInt16BE(body.length, 2); head.writeUInt32BE(0x2112a442, 4); head.set(txid, 8);
  return Buffer.concat([head, body]);
});

const jsonish = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc.json({ maxDepth: 3 }).map((s) => Buffer.from(s)),
  stunish,
  fc.record({
    action: fc.constantFrom('announce', 'pulse', 'alive', 'push', 'relay', 'x', 5, null),
    shareId: fc.oneof(fc.string({ maxLength: 20 }), fc.boolean(), fc.integer()),
    nat: fc.oneof(fc.constantFrom('unknown', 'endpoint-independent', 'address-dependent', 'address-and-port-dependent', 'symmetric'), fc.integer()),
    relay: fc.oneof(fc.constantFrom('198.51.100.9:49160', '[2001:db8::1]:3478', '1.2.3.4'), fc.string({ maxLength: 30 })),
    override: fc.oneof(fc.boolean(), fc.constantFrom('true', 'false', 'yes', 1)),
    ip: fc.oneof(fc.ipV4(), fc.ipV6(), fc.string({ maxLength: 70 })),
    port: fc.oneof(fc.integer({ min: -5, max: 70000 }), fc.string({ maxLength: 6 })),
    multiaddr: fc.oneof(fc.string({ maxLength: 300 }), fc.integer()),
  }, { requiredKeys: [] }).map((o) => Buffer.from(JSON.stringify(o))),
);

test('parseRequest never throws and always yields a request or a coded error', () => {
  fc.assert(fc.property(jsonish, (bytes) => {
    const r = parseRequest(bytes, 0, bytes.length, limits);
    assert.ok(['announce', 'pulse', 'alive', 'push', 'relay', 'invalid'].includes(r.action), r.action);
    if (r.action === 'invalid') assert.ok(r.code.length > 0, 'has a code');
  }), { numRuns: 3000 });
});

for (const relay of [false, true]) test(`a shard fed any batch of any datagrams from a few addresses never throws and replies only well-formed JSON or STUN${relay ? ' (a relay configured)' : ''}`, () => {
  // production limits: the amplification budget and rate limits are fuzzed too
  const config = { ...defaultConfig(), shards: 1, ttl: 60, ...(relay ? { turnUrl: 'turn:127.0.0.1:3478' } : {}) };
  const shard = new Shard(shardOptions(config, 0, ONE_UDP4_SOCKET, relay ? 'fuzz-secret' : null));
  let internalErrors = 0;
  shard.onInternalError = () => { internalErrors++; };
  const from = (ip: string, payload: string) => { const b = requestBatch([{ ip, port: 1, payload }]); shard.handleBatch(b, b.length); return readReplies(shard.finishBatch().out); };
  const record = fc.record({
    ip: fc.constantFrom('127.0.0.1', '10.0.0.2', '10.0.0.3', '::1', 'not an ip'),
    port: fc.integer({ min: 1, max: 4 }),
    payload: fc.oneof(jsonish, fc.constantFrom(...['{"action":"announce"}', '{"action":"pulse"}', '{"action":"alive"}', '{"action":"pulse","shareId":true}',
      '{"action":"relay"}', '{"action":"announce","token":true}', '{"action":"pulse","token":"AAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA"}'].map((s) => Buffer.from(s)))),
  });
  fc.assert(fc.property(fc.array(record, { maxLength: 40 }), (records) => {
    const buf = requestBatch(records);
    shard.handleBatch(buf, buf.length);
    for (const reply of readReplies(shard.finishBatch().out)) {
      if (looksLikeStun(reply.bytes, 0, reply.bytes.length)) {
        const m = decodeMessage(reply.bytes);
        assert.ok(typeof m !== 'string' && (m.cls === CLASS_SUCCESS || m.cls === CLASS_ERROR), `a well-formed STUN response (${String(m)})`);
        continue;
      }
      const msg = JSON.parse(reply.payload) as { action: string };
      assert.ok(KNOWN_REPLIES.has(msg.action), msg.action);
    }
  }), { numRuns: 1500 });
  assert.equal(internalErrors, 0, 'no handler threw');
  assert.ok(shard.peers <= 4 * 4, 'at most one session per address');
  // afterwards the shard serves a new proved session as ever, relay credentials included
  const id = (JSON.parse(from('10.9.9.9', '{"action":"announce","pad":"xxxxxxxxxxxxxxxxxx"}')[0]!.payload) as { data: { shareId: string } }).data.shareId;
  from('10.9.9.9', `{"action":"pulse","shareId":"${id}"}`);
  // (padded: relayReceived is more than 3x a bare relay request, and a proved address is not exempt)
  const relayReq = JSON.stringify({ action: 'relay', pad: 'x'.repeat(64) });
  assert.equal((JSON.parse(from('10.9.9.9', relayReq)[0]!.payload) as { action: string }).action, relay ? 'relayReceived' : 'error');
});
