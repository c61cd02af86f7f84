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

test('a shard fed any batch of any datagrams from a few addresses never throws and replies only well-formed JSON', () => {
  // production limits: the amplification budget and rate limits are fuzzed too
  const shard = new Shard(shardOptions({ ...defaultConfig(), shards: 1, ttl: 60 }, 0, ONE_UDP4_SOCKET));
  let internalErrors = 0;
  shard.onInternalError = () => { internalErrors++; };
  const record = fc.record({
    ip: fc.constantFrom('127.0.0.1', '10.0.0.2', '10.0.0.3', '::1', 'not an ip'),
    port: fc.integer({ min: 1, max: 4 }),
    payload: fc.oneof(jsonish, fc.constantFrom(...['{"action":"announce"}', '{"action":"pulse"}', '{"action":"alive"}', '{"action":"pulse","shareId":true}'].map((s) => Buffer.from(s)))),
  });
  fc.assert(fc.property(fc.array(record, { maxLength: 40 }), (records) => {
    const buf = requestBatch(records);
    shard.handleBatch(buf, buf.length);
    for (const reply of readReplies(shard.finishBatch().out)) {
      const msg = JSON.parse(reply.payload) as { action: string };
      assert.ok(KNOWN_REPLIES.has(msg.action), msg.action);
    }
  }), { numRuns: 1500 });
  assert.equal(internalErrors, 0, 'no handler threw');
  assert.ok(shard.peers <= 4 * 4, 'at most one session per address');
});
