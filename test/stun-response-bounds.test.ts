// A STUN response never exceeds what a UDP datagram, a reply record (u16 length,
// src/wire/frame.ts) and config maxDatagram can hold: PADDING is cut to fit. Before,
// a verified requester's Binding with a 65,424-byte PADDING got a 65,544-byte
// response on an IPv6 tracker with discovery: its record length wrapped, and the
// main thread framed the rest of the response as records, among them one the
// request's transaction id spelled: SEND_TO [::1]:<any port>. Requests are written
// byte by byte as RFC 8489 lays them out, to a real tracker over real UDP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { EXPECT_MS, PADDED_ANNOUNCE, TEST_IO } from './helpers/wire.js';
import { runTracker } from './helpers/process.js';
import { startTracker } from '../src/tracker.js';

const COOKIE = 0x2112a442;
const BINDING = 0x0001, BINDING_SUCCESS = 0x0101;
const PADDING = 0x0026, XOR_MAPPED_ADDRESS = 0x0020;
/** The largest maxDatagram config takes (io/datagram-io.ts MAX_DATAGRAM). */
const MAX_DATAGRAM = 65_464;

/** A Binding request: header, then PADDING of `padding` zero bytes if > 0. */
function binding(txid: Buffer, padding = 0): Buffer {
  const body = padding > 0 ? Buffer.alloc(4 + padding + ((4 - (padding % 4)) % 4)) : Buffer.alloc(0);
  if (padding > 0) { body.writeUInt16BE(PADDING, 0); body.writeUInt16BE(padding, 2); }
  const head = Buffer.alloc(20);
  head.writeUInt16BE(BINDING, 0);
  head.writeUInt16BE(body.length, 2);
  head.writeUInt32BE(COOKIE, 4);
  txid.copy(head, 8);
  return Buffer.concat([head, body]);
}

/** The attributes of a STUN message, by type (asserting its framing holds). */
function attributes(raw: Buffer): Map<number, Buffer> {
  assert.ok(raw.length >= 20);
  assert.equal(raw.readUInt16BE(2), raw.length - 20, 'the length field covers the attributes');
  const attrs = new Map<number, Buffer>();
  for (let o = 20; o < raw.length;) {
    const t = raw.readUInt16BE(o), n = raw.readUInt16BE(o + 2);
    assert.ok(o + 4 + n <= raw.length, 'an attribute within the message');
    attrs.set(t, raw.subarray(o + 4, o + 4 + n));
    o += 4 + n + ((4 - (n % 4)) % 4);
  }
  return attrs;
}

interface Peer {
  socket: dgram.Socket;
  port: number;
  inbox: Buffer[];
  /** Sends a bare Binding and returns everything that arrived before its response (a barrier: the tracker answers one source in order). */
  barrier: (port: number, host: string) => Promise<Buffer[]>;
  /** The next JSON reply with this action (others are kept). */
  json: (action: string) => Promise<Record<string, unknown>>;
}

async function peer(host: string): Promise<Peer> {
  const socket = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', recvBufferSize: 4 << 20 });
  const inbox: Buffer[] = [];
  let wake: (() => void) | null = null;
  socket.on('error', () => {});
  socket.on('message', (m) => { inbox.push(m); wake?.(); });
  await new Promise<void>((r) => socket.bind(0, host, r));
  const waitFor = async (find: () => number, what: string): Promise<Buffer[]> => {
    const deadline = Date.now() + EXPECT_MS;
    for (;;) {
      const i = find();
      if (i >= 0) return inbox.splice(0, i + 1);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${EXPECT_MS} ms (${inbox.length} other datagrams)`);
      await new Promise<void>((r) => { const t = setTimeout(r, left); wake = () => { clearTimeout(t); r(); }; });
      wake = null;
    }
  };
  return {
    socket, port: socket.address().port, inbox,
    barrier: async (port, to) => {
      const txid = randomBytes(12);
      socket.send(binding(txid), port, to);
      const got = await waitFor(() => inbox.findIndex((m) => m.length >= 20 && m.readUInt16BE(0) === BINDING_SUCCESS && m.subarray(8, 20).equals(txid)), 'barrier response');
      return got.slice(0, -1);
    },
    json: async (action) => {
      const got = await waitFor(() => inbox.findIndex((m) => m.toString().includes(`"action":"${action}"`)), action);
      const m = got.pop()!;
      inbox.unshift(...got); // what came before it stays for later
      return JSON.parse(m.toString()) as Record<string, unknown>;
    },
  };
}

/** Announces from `p`, then proves it receives there (a pulse with its shareId): replies to it are no longer charged. */
async function verifiedSession(p: Peer, port: number, host: string): Promise<void> {
  p.socket.send(PADDED_ANNOUNCE, port, host);
  const shareId = ((await p.json('announceReceived')).data as { shareId: string }).shareId;
  p.socket.send(JSON.stringify({ action: 'pulse', shareId }), port, host);
  await p.json('pulseReceived');
  p.inbox.length = 0; // the legacy announced form
}

/** A port P with P and P + 1 free on every host (UDP). */
async function freePortPair(hosts: string[]): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const p = 20_000 + Math.floor(Math.random() * 40_000);
    const sockets: dgram.Socket[] = [];
    let ok = true;
    for (const host of hosts) for (const port of [p, p + 1]) {
      const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
      s.on('error', () => {});
      sockets.push(s);
      ok &&= await new Promise<boolean>((r) => { s.once('error', () => r(false)); s.bind(port, host, () => r(true)); });
    }
    await Promise.all(sockets.map((s) => new Promise<void>((r) => { try { s.close(() => r()); } catch { r(); } })));
    if (ok) return p;
  }
  throw new Error('no free port pair');
}

/** A second IPv6 address on lo for the tracker's other STUN address (loopback has ::1 alone). Root only. */
const OTHER_V6 = 'fd00:5ba:23::2';
const ipv6Unavailable = ((): string | false => {
  if (process.getuid?.() !== 0) return 'needs root (an extra IPv6 address on lo)';
  if (spawnSync('ip', ['-V']).error) return 'needs the ip command (iproute2)';
  return false;
})();

/** Adds OTHER_V6 to lo unless it is there; returns what undoes that. */
function withOtherV6(): () => void {
  const shown = spawnSync('ip', ['-6', 'addr', 'show', 'dev', 'lo']).stdout.toString();
  if (shown.includes(`${OTHER_V6}/128`)) return () => {};
  const r = spawnSync('ip', ['-6', 'addr', 'add', `${OTHER_V6}/128`, 'dev', 'lo', 'nodad']);
  assert.equal(r.status, 0, `ip -6 addr add: ${r.stderr}`);
  return () => { spawnSync('ip', ['-6', 'addr', 'del', `${OTHER_V6}/128`, 'dev', 'lo']); };
}

test('the PADDING overflow (issue 23, finding 6): IPv6 discovery, maxDatagram 65,464, a verified requester: no datagram leaves for the address its transaction id names, one response within the bound, the tracker serves on',
  { skip: ipv6Unavailable }, async () => {
    const undo = withOtherV6();
    const listener = await peer('::1');
    const requester = await peer('::1');
    const port = await freePortPair(['::1', OTHER_V6]);
    const tracker = await runTracker(['--host', '::1', '--port', String(port), '--stun-other-host', OTHER_V6, '--max-datagram', String(MAX_DATAGRAM),
      '--shards', '1', ...(TEST_IO === 'auto' ? [] : ['--io', TEST_IO])]);
    try {
      await verifiedSession(requester, port, '::1');
      // read as records after a wrapped length (65,544 - 65,536 = 8 payload bytes), the
      // transaction id is: SEND_TO, socket 0, the listener's port, "::1", 102 bytes
      const txid = Buffer.from([1, 0, listener.port >>> 8, listener.port & 0xff, 3, 0x3a, 0x3a, 0x31, 0, 0x66, 0, 0]);
      const request = binding(txid, 65_424);
      assert.equal(request.length, 65_448);
      requester.socket.send(request, port, '::1');
      const answered = await requester.barrier(port, '::1').catch((err: Error) => err);
      // (checked again below, behind a barrier of its own, once the tracker is known to serve)
      assert.equal(listener.inbox.length, 0, 'no datagram at the address the transaction id names');
      if (answered instanceof Error) throw answered;
      const got = answered;
      assert.equal(got.length, 1, `one response (got ${got.length} datagrams)`);
      const res = got[0]!;
      assert.equal(res.readUInt16BE(0), BINDING_SUCCESS);
      assert.ok(res.subarray(8, 20).equals(txid), 'the response to the padded Binding');
      assert.ok(res.length <= MAX_DATAGRAM, `${res.length} bytes: at most maxDatagram`);
      const attrs = attributes(res);
      const padding = attrs.get(PADDING);
      assert.ok(padding !== undefined && padding.length > 0 && padding.length < 65_424 && padding.length % 4 === 0, `PADDING cut to whole words (${padding?.length})`);
      assert.ok(res.length > MAX_DATAGRAM - 4, 'cut no further than the bound needs');
      assert.ok(attrs.has(XOR_MAPPED_ADDRESS));
      // nothing reached the listener: what the tracker sent it before it answers its own Binding arrives first
      assert.deepEqual(await listener.barrier(port, '::1'), [], 'no datagram at the address the transaction id names');
      // the tracker serves on
      requester.socket.send(JSON.stringify({ action: 'pulse' }), port, '::1');
      await requester.json('pulseReceived');
      assert.equal(tracker.child.exitCode, null, 'still running');
    } finally {
      tracker.child.kill('SIGTERM');
      await tracker.exited;
      listener.socket.close();
      requester.socket.close();
      undo();
    }
  });

test('an IPv4 requester\'s padded response fits an IPv4 datagram (65,507 bytes): with discovery and maxDatagram 65,464 it is cut, not refused by the kernel', async () => {
  const PRIMARY = '127.0.0.1', OTHER = '127.0.0.2';
  const port = await freePortPair([PRIMARY, OTHER]);
  const tracker = await startTracker({ host: PRIMARY, port, stunOtherHost: OTHER, maxDatagram: MAX_DATAGRAM, shards: 1, logLevel: 'silent', io: TEST_IO });
  const requester = await peer('127.0.66.1');
  try {
    await verifiedSession(requester, port, PRIMARY);
    const txid = randomBytes(12);
    const request = binding(txid, MAX_DATAGRAM - 24); // the largest request taken; its response would be 65,512 bytes
    assert.equal(request.length, MAX_DATAGRAM);
    requester.socket.send(request, port, PRIMARY);
    const got = await requester.barrier(port, PRIMARY);
    assert.equal(got.length, 1, 'one response');
    assert.ok(got[0]!.subarray(8, 20).equals(txid));
    assert.ok(got[0]!.length <= MAX_DATAGRAM, `${got[0]!.length} bytes`);
    assert.ok(attributes(got[0]!).get(PADDING)!.length > 0);
    assert.deepEqual((await tracker.stats()).main.sendErrors, {}, 'no send the kernel refused');
  } finally {
    requester.socket.close();
    await tracker.close();
  }
});

test('at the default maxDatagram (1,024) a verified requester\'s padded response is at most 1,024 bytes, PADDING cut to fit', async () => {
  const tracker = await startTracker({ host: '127.0.0.1', port: 0, shards: 1, logLevel: 'silent', io: TEST_IO });
  const port = tracker.addresses[0]!.port;
  const requester = await peer('127.0.66.2');
  try {
    await verifiedSession(requester, port, '127.0.0.1');
    const txid = randomBytes(12);
    requester.socket.send(binding(txid, 1000), port, '127.0.0.1'); // 1,024 bytes; a response as padded would be 1,072
    const got = await requester.barrier(port, '127.0.0.1');
    assert.equal(got.length, 1);
    assert.ok(got[0]!.subarray(8, 20).equals(txid));
    assert.ok(got[0]!.length <= 1024 && got[0]!.length > 1020, `${got[0]!.length} bytes`);
    // a small PADDING is carried as asked
    const small = randomBytes(12);
    requester.socket.send(binding(small, 200), port, '127.0.0.1');
    const [res] = await requester.barrier(port, '127.0.0.1');
    assert.ok(res !== undefined && res.subarray(8, 20).equals(small));
    assert.equal(attributes(res).get(PADDING)!.length, 200);
  } finally {
    requester.socket.close();
    await tracker.close();
  }
});
