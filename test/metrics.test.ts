// /metrics after real traffic over UDP: the counters move and the peer gauge matches the tables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WirePeer, withTracker } from './helpers/wire.js';
import { freePort, httpGet, sample } from './helpers/ops.js';

/** Scrapes /metrics until done(body) holds; `ms` only bounds a failing test (an expiry or a restart may take long on a loaded machine). */
async function scrapeUntil(port: number, done: (body: string) => boolean, ms = 60_000): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    const body = (await httpGet(port, '/metrics')).body;
    if (done(body) || Date.now() > deadline) return body;
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('the metrics listener is off by default', () =>
  withTracker({}, async (tracker) => {
    assert.equal(tracker.opsAddress, null);
  }));

test('/metrics reports peers per shard, datagrams by action and dialect, errors, drops, batches, loop delay', async () => {
  const metricsPort = await freePort();
  await withTracker({ shards: 2, metricsPort }, async (tracker, target) => {
    assert.deepEqual(tracker.opsAddress, { address: '127.0.0.1', port: metricsPort });
    const peers = await Promise.all(Array.from({ length: 6 }, () => WirePeer.open(target)));
    try {
      const ids = await Promise.all(peers.map((p) => p.announce()));
      const before = (await httpGet(metricsPort, '/metrics')).body;
      assert.equal(sample(before, 'sobani_datagrams_in_total', { action: 'announce' }), 6);
      // Known traffic, then the counters must have moved by exactly that much.
      for (const p of peers.slice(0, 3)) await p.request({ action: 'pulse' }, 'pulseReceived');
      for (const p of peers.slice(3)) await p.request({ action: 'alive' }, 'alived');
      await peers[0]!.request({ action: 'push', shareId: ids[1] }, 'pushReceived');
      await peers[0]!.request('{not json', 'error');
      await peers[0]!.request({ action: 'push', shareId: '!!' }, 'error');

      const res = await httpGet(metricsPort, '/metrics');
      assert.equal(res.status, 200);
      assert.match(res.type, /^text\/plain; version=0\.0\.4/);
      const m = res.body;
      const moved = (name: string, labels: Record<string, string>): number => (sample(m, name, labels) ?? 0) - (sample(before, name, labels) ?? 0);
      const stats = await tracker.stats();
      for (const s of stats.shards) assert.equal(sample(m, 'sobani_peers', { shard: String(s.index) }), s.peers, `shard ${s.index}`);
      assert.equal(sample(m, 'sobani_peers'), 6);

      assert.equal(moved('sobani_datagrams_in_total', { action: 'pulse', dialect: 'documented' }), 3);
      assert.equal(moved('sobani_datagrams_in_total', { action: 'alive', dialect: 'legacy' }), 3);
      assert.equal(moved('sobani_datagrams_in_total', { action: 'push' }), 2);
      assert.equal(moved('sobani_datagrams_in_total', { action: 'invalid' }), 1);
      assert.equal(moved('sobani_datagrams_out_total', { action: 'pulse', dialect: 'documented' }), 3);
      assert.equal(moved('sobani_datagrams_out_total', { action: 'alive', dialect: 'legacy' }), 3);
      assert.equal(moved('sobani_datagrams_out_total', { action: 'income' }), 1);
      assert.ok(sample(m, 'sobani_datagrams_out_total', { action: 'announce' })! >= 6);
      assert.equal(moved('sobani_errors_total', { code: 'NOT_JSON' }), 1);
      assert.equal(moved('sobani_errors_total', { code: 'UNKNOWN_SHARE_ID' }), 1);
      assert.equal(sample(m, 'sobani_drops_total', { reason: 'shard_busy' }), 0);
      assert.equal(sample(m, 'sobani_udp_datagrams_received_total'), stats.main.datagramsIn);
      assert.ok(moved('sobani_udp_datagrams_sent_total', {}) >= 3 + 3 + 2 + 1 + 1);
      assert.ok(sample(m, 'sobani_shard_batch_datagrams_count')! > 0);
      assert.equal(sample(m, 'sobani_shard_batch_datagrams_sum'), sample(m, 'sobani_datagrams_in_total'));
      assert.equal(sample(m, 'sobani_shard_batch_datagrams_bucket', { le: '+Inf' }), sample(m, 'sobani_shard_batch_datagrams_count'));
      assert.equal(sample(m, 'sobani_shard_queue_depth', { shard: '0' }), 0);
      assert.equal(sample(m, 'sobani_udp_send_queue_datagrams'), 0);
      assert.equal(sample(m, 'sobani_udp_send_queue_bytes'), 0);
      assert.equal(sample(m, 'sobani_expired_total'), 0);
      assert.equal(sample(m, 'sobani_shard_restarts_total', { shard: '1' }), 0);
      for (const thread of ['main', 'shard-0', 'shard-1']) {
        assert.ok(sample(m, 'sobani_event_loop_delay_max_seconds', { thread })! >= 0, thread);
      }
      assert.equal((await httpGet(metricsPort, '/nope')).status, 404);
    } finally {
      for (const p of peers) p.close();
    }
  });
});

test('expiries and shard restarts show up in /metrics', async () => {
  const metricsPort = await freePort();
  await withTracker({ shards: 2, metricsPort, ttl: 1 }, async (tracker, target) => {
    const p = await WirePeer.open(target);
    await p.announce();
    p.close();
    // ttl 1 s: the expiry comes when it comes; what is checked is that it is counted
    let m = await scrapeUntil(metricsPort, (body) => (sample(body, 'sobani_expired_total') ?? 0) > 0);
    assert.equal(sample(m, 'sobani_expired_total'), 1);
    assert.equal(sample(m, 'sobani_peers'), 0);
    await tracker.terminateShard(1);
    m = await scrapeUntil(metricsPort, (body) => (sample(body, 'sobani_shard_restarts_total', { shard: '1' }) ?? 0) > 0);
    assert.equal(sample(m, 'sobani_shard_restarts_total', { shard: '1' }), 1);
  });
});
