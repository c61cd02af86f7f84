// Property-based fuzzing: for any input, the parser returns a request or an error,
// and a shard answers with well-formed replies or drops; neither ever throws, and
// the peer table stays consistent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseRequest } from '../src/protocol/request.js';
import { Shard } from '../src/shard/shard.js';
import { defaultConfig } from '../src/config.js';

const limits = { shareIdLength: 12, maxMultiaddr: 256 };
const KNOWN_REPLIES = new Set(['announceReceived', 'announced', 'pulseReceived', 'alived', 'expired', 'pushReceived', 'pushed', 'income', 'error']);

const jsonish = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc.json({ maxDepth: 3 }).map((s) => Buffer.from(s)),
  fc.record({
    action: fc.constantFrom('announce', 'pulse', 'alive', 'push', 'x', 5, null),
    shareId: fc.oneof(fc.string({ maxLength: 20 }), fc.boolean(), fc.integer()),
    override: fc.oneof(fc.boolean(), fc.constantFrom('true', 'false', 'yes', 1)),
    ip: fc.oneof(fc.ipV4(), fc.ipV6(), fc.string({ maxLength: 70 })),
    port: fc.oneof(fc.integer({ min: -5, max: 70000 }), fc.string({ maxLength: 6 })),
    multiaddr: fc.oneof(fc.string({ maxLength: 300 }), fc.integer()),
  }, { requiredKeys: [] }).map((o) => Buffer.from(JSON.stringify(o))),
);

test('parseRequest never throws and always yields a request or a coded error', () => {
  fc.assert(fc.property(jsonish, (bytes) => {
    const r = parseRequest(bytes, 0, bytes.length, limits);
    assert.ok(['announce', 'pulse', 'alive', 'push', 'invalid'].includes(r.action), r.action);
    if (r.action === 'invalid') assert.ok(r.code.length > 0, 'has a code');
  }), { numRuns: 3000 });
});

/** A request batch in io/frame.ts layout, as the main thread writes it. */
function batch(records: { ip: string; port: number; payload: Uint8Array }[]): Buffer {
  const parts: Buffer[] = [];
  for (const r of records) {
    const h = Buffer.alloc(6);
    h[0] = 0; h.writeUInt16BE(r.port, 1); h.writeUInt16BE(0, 3); h[5] = r.ip.length;
    const len = Buffer.alloc(2); len.writeUInt16BE(r.payload.length);
    parts.push(h, Buffer.from(r.ip, 'latin1'), len, Buffer.from(r.payload));
  }
  return Buffer.concat(parts);
}

test('a shard fed any batch of any datagrams from a few addresses never throws and replies only well-formed JSON', () => {
  const c = defaultConfig(); // production limits: the amplification budget and rate limits are fuzzed too
  const shard = new Shard({
    index: 0, shards: 1, ttlMs: 60_000, shareIdLength: 12, announceReply: 'both', maxMultiaddr: 256, socketTypes: ['udp4'],
    maxSessions: c.maxSessions, maxSessionsPerIp: c.maxSessionsPerIp, maxTrackedIps: c.maxTrackedIps,
    ipRate: c.ipRate, ipBurst: c.ipBurst, pushRate: c.pushRate, pushBurst: c.pushBurst,
  });
  let internalErrors = 0;
  shard.onInternalError = () => { internalErrors++; };
  const record = fc.record({
    ip: fc.constantFrom('127.0.0.1', '10.0.0.2', '10.0.0.3', '::1', 'not an ip'),
    port: fc.integer({ min: 1, max: 4 }),
    payload: fc.oneof(jsonish, fc.constantFrom(...['{"action":"announce"}', '{"action":"pulse"}', '{"action":"alive"}', '{"action":"pulse","shareId":true}'].map((s) => Buffer.from(s)))),
  });
  fc.assert(fc.property(fc.array(record, { maxLength: 40 }), (records) => {
    const buf = batch(records);
    shard.handleBatch(buf, buf.length);
    const { out } = shard.finishBatch();
    if (out === null) return;
    const b = Buffer.from(out);
    for (let o = 0; o < b.length;) {
      let at: number;
      if (b[o] === 0) at = o + 3;
      else at = o + 5 + b[o + 4]!;
      const len = b.readUInt16BE(at);
      const msg = JSON.parse(b.toString('utf8', at + 2, at + 2 + len)) as { action: string };
      assert.ok(KNOWN_REPLIES.has(msg.action), msg.action);
      o = at + 2 + len;
    }
  }), { numRuns: 1500 });
  assert.equal(internalErrors, 0, 'no handler threw');
  assert.ok(shard.peers <= 4 * 4, 'at most one session per address');
});
