// Hard limits and rate limits: each is hit, answered (or dropped and counted where
// an answer would amplify), and leaves every other client's session alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EXPECT_MS, PADDED_ANNOUNCE, untilValue, WirePeer, withTracker } from './helpers/wire.js';
import type { Tracker } from '../src/tracker.js';
import { defaultConfig } from '../src/config.js';
import { Shard, shardOptions } from '../src/shard/shard.js';
import { ONE_UDP4_SOCKET, readReplies, requestBatch } from './helpers/batch.js';

async function drops(t: Tracker, reason: string): Promise<number> {
  return (await t.stats()).shards.reduce((n, s) => n + (s.counters.drops[reason] ?? 0), 0);
}

/** Seconds since `t0` (performance.now()): what a token bucket refills over, however slow the machine. */
const secondsSince = (t0: number): number => (performance.now() - t0) / 1000;

test('sessions per IP: the announce past the cap gets SESSION_LIMIT; the IP\'s live sessions are untouched', () =>
  withTracker({ maxSessionsPerIp: 3 }, async (_t, target) => {
    const peers = await Promise.all([1, 2, 3, 4].map(() => WirePeer.open(target, '127.0.60.1')));
    const ids = [];
    for (const p of peers.slice(0, 3)) ids.push(await p.announce());
    const refused = await peers[3]!.request(PADDED_ANNOUNCE, 'error');
    assert.equal(refused.data!.code, 'SESSION_LIMIT');
    const other = await WirePeer.open(target, '127.0.60.2');
    assert.ok((await other.announce()).length === 12, 'another IP is not limited');
    for (const [i, p] of peers.slice(0, 3).entries()) {
      assert.equal((await p.request({ action: 'pulse' }, 'pulseReceived')).data!.shareId, ids[i]);
    }
    // when one session goes (replaced by a new announce after a keep-alive it frees nothing; expiry does),
    // a re-announce of an existing session is never refused
    assert.equal((await peers[0]!.request(PADDED_ANNOUNCE, 'announceReceived')).action, 'announceReceived');
    for (const p of [...peers, other]) p.close();
  }));

test('live sessions in total: the announce past the cap gets TRACKER_FULL', () =>
  withTracker({ shards: 1, maxSessions: 2 }, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.61.1');
    const b = await WirePeer.open(target, '127.0.61.2');
    const c = await WirePeer.open(target, '127.0.61.3');
    const idA = await a.announce();
    await b.announce();
    assert.equal((await c.request(PADDED_ANNOUNCE, 'error')).data!.code, 'TRACKER_FULL');
    assert.equal((await b.request({ action: 'push', shareId: idA }, 'pushReceived')).data!.peerShareId, idA);
    a.close(); b.close(); c.close();
  }));

test('requests per IP beyond the token bucket are dropped and counted; other IPs are served', () =>
  withTracker({ shards: 1, ipRate: 5, ipBurst: 20 }, async (tracker, target) => {
    const flooder = await WirePeer.open(target, '127.0.62.1');
    const honest = await WirePeer.open(target, '127.0.62.2');
    const id = await honest.announce();
    const t0 = performance.now();
    for (let i = 0; i < 200; i++) flooder.send('{"action":"alive"}');
    // Each alive is either served (and answered `expired`: no session) or dropped as
    // rate_limited; no barrier of the flooder's own would get through, so count them.
    const answered = await untilValue('every alive of the flood served or dropped', async () => {
      const c = (await tracker.stats()).shards[0]!.counters;
      return c.requests.alive! + (c.drops.rate_limited ?? 0) >= 200 ? c.requests.alive! : null;
    });
    // The burst, plus what the bucket refilled (5 a second) while the flood was served,
    // plus one (as before): 21 unless the flood took 200 ms or more.
    const bound = 20 + 1 + Math.floor(5 * secondsSince(t0));
    assert.ok(answered <= bound, `at most the burst (+ refill) answered, got ${answered} (bound ${bound})`);
    for (let i = 0; i < answered; i++) await flooder.next('expired');
    assert.ok(await drops(tracker, 'rate_limited') >= 200 - bound);
    assert.equal((await honest.request({ action: 'pulse' }, 'pulseReceived')).data!.shareId, id);
    flooder.close(); honest.close();
  }));

test('pushes per IP are rate-limited, so shareId enumeration is slow and counted', () =>
  withTracker({ shards: 1, pushRate: 1, pushBurst: 5 }, async (tracker, target) => {
    const p = await WirePeer.open(target, '127.0.63.1');
    await p.announce();
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) p.send({ action: 'push', shareId: `AA${String(i).padStart(10, '0')}` });
    const replies = await p.settle(); // the Binding spends no push token
    // the burst, plus the refill (1 a second) while they were served, plus one (as before)
    const bound = 5 + 1 + Math.floor(1 * secondsSince(t0));
    assert.ok(replies.length <= bound, `${replies.length} push replies (bound ${bound})`);
    assert.ok(replies.every((r) => r.data!.code === 'UNKNOWN_SHARE_ID'));
    assert.ok(await drops(tracker, 'push_rate_limited') >= 50 - bound);
    p.close();
  }));

test('when the per-IP table is full, a new IP is still served (each reply within 3x its request)', () =>
  withTracker({ shards: 1, maxTrackedIps: 2 }, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.64.1');
    const b = await WirePeer.open(target, '127.0.64.2');
    const c = await WirePeer.open(target, '127.0.64.3'); // the third IP: not tracked
    await a.announce();
    await b.announce();
    const id = await c.announce();
    assert.equal(id.length, 12);
    a.close(); b.close(); c.close();
  }));

test('a shard that is not keeping up: past maxShardQueue full batches, datagrams are dropped and counted; it recovers', () =>
  withTracker({ shards: 1, maxShardQueue: 1, ipRate: 1_000_000, ipBurst: 1_000_000 }, async (tracker, target) => {
    const p = await WirePeer.open(target, '127.0.65.1');
    p.socket.setRecvBufferSize(4 << 20); // room for the replies to the flood, and the barrier's after them
    const id = await p.announce();
    const pad = JSON.stringify({ action: 'pulse', pad: 'x'.repeat(80) });
    // The stall is queued on the shard's port ahead of every batch sent after it, so the
    // flood always meets a blocked shard; it only has to reach the main thread before the
    // 1.5 s are up. A round in which it did not (this process was descheduled that long)
    // is done again: the shard merely kept up.
    const deadline = Date.now() + 3 * EXPECT_MS;
    for (;;) {
      const stalled = tracker.stallShard(0, 1500); // the shard's event loop is blocked for 1.5 s
      // ~300 KiB of pulses: far more than one in-flight batch plus one full pending batch
      for (let i = 0; i < 3000; i++) { p.send(pad); if (i % 200 === 0) await new Promise((r) => setImmediate(r)); }
      await stalled;
      // A marker behind the whole flood (the socket is read in order): its answer means
      // every pulse before it was served or dropped. The main thread may still be dropping
      // when it comes, so it is resent every second (as a client would) until one is answered.
      // (an unknown action: its error fits 3x the marker's own bytes, a proven address being exempt no more)
      const marker = '{"action":"marker"}';
      for (p.send(marker); !(await p.next('error', 1000).then(() => true, () => false));) {
        assert.ok(Date.now() < deadline, 'no answer to a request sent after the flood');
        p.send(marker);
      }
      await p.settle(); // nothing is dropped now: every reply to the flood (and the markers) is in
      if ((await tracker.stats()).main.shardBusy > 0) break;
      assert.ok(Date.now() < deadline, 'no datagram was ever dropped over the queue limit');
    }
    assert.equal((await p.request({ action: 'pulse' }, 'pulseReceived')).data!.shareId, id, 'the session survived and is served again');
    p.close();
  }));

test('with the default limits, an IP at its session cap keeps every session alive at the desktop client\'s cadence, for minutes', () => {
  // Unit-level, on a simulated clock: 300 s of alive every 2 s from maxSessionsPerIp
  // sessions behind one address, spread evenly over each 2 s, in batches of 64.
  let now = 0;
  const config = { ...defaultConfig(), shards: 1 };
  const shard = new Shard({ ...shardOptions(config, 0, ONE_UDP4_SOCKET), now: () => now });
  const ip = '100.64.0.1';
  const sessions = config.maxSessionsPerIp;
  const ports = Array.from({ length: sessions }, (_, i) => 1024 + i);
  const run = (payload: string, spreadMs: number): Map<string, number> => {
    const seen = new Map<string, number>();
    for (let i = 0; i < ports.length; i += 64) {
      const records = ports.slice(i, i + 64).map((port) => ({ ip, port, payload }));
      const buf = requestBatch(records);
      shard.handleBatch(buf, buf.length);
      for (const r of readReplies(shard.finishBatch().out)) {
        const action = (JSON.parse(r.payload) as { action: string }).action;
        seen.set(action, (seen.get(action) ?? 0) + 1);
      }
      now += (spreadMs * 64) / sessions;
    }
    return seen;
  };
  assert.equal(run('{"action":"announce"}', 2000).get('announceReceived'), sessions);
  for (let round = 0; round < 150; round++) {
    const seen = run('{"action":"alive"}', 2000);
    assert.equal(seen.get('alived'), sessions, `round ${round}: ${JSON.stringify(Object.fromEntries(seen))}`);
  }
  assert.equal(shard.counters.snapshot().drops.rate_limited, undefined, 'no request was rate-limited');
});

test('sessions per IPv6 /64: the addresses of one /64 share maxSessionsPerIpv6Prefix; another /64 and IPv4 keep their own caps', () => {
  const shard = new Shard(shardOptions({ ...defaultConfig(), shards: 1, maxSessionsPerIp: 2, maxSessionsPerIpv6Prefix: 3 }, 0, ONE_UDP4_SOCKET));
  const announce = (ip: string, port = 5000): string => {
    const buf = requestBatch([{ ip, port, payload: PADDED_ANNOUNCE }]);
    shard.handleBatch(buf, buf.length);
    const first = JSON.parse(readReplies(shard.finishBatch().out)[0]!.payload) as { action: string; data: { code?: string } };
    return first.action === 'error' ? first.data.code! : first.action;
  };
  // four hosts of 2001:db8:0:1::/64 (each its own /128, as one host holding the /64 could be)
  assert.deepEqual(['::1', '::2', ':a:b:c:d', '::4'].map((h) => announce(`2001:db8:0:1${h}`)),
    ['announceReceived', 'announceReceived', 'announceReceived', 'SESSION_LIMIT']);
  assert.equal(announce('2001:db8:0:2::1'), 'announceReceived', 'another /64');
  assert.deepEqual([announce('192.0.2.1', 1), announce('192.0.2.1', 2), announce('192.0.2.1', 3), announce('192.0.2.2')],
    ['announceReceived', 'announceReceived', 'SESSION_LIMIT', 'announceReceived'], 'IPv4: per address, maxSessionsPerIp');
});
