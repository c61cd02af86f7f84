// /healthz is 200 only while the socket is bound and every shard answers a ping
// in time; `sobani-tracker health` turns that into an exit code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withTracker } from './helpers/wire.js';
import { freePort, httpGet } from './helpers/ops.js';
import { runCli } from './helpers/process.js';
import type { Tracker } from '../src/tracker.js';

/**
 * Keeps shard `index` stalled until stop(), however long what runs meanwhile takes (a CLI
 * process starting on a loaded machine): two stalls are always queued or running, so a
 * ping waits most of a whole stall (3 s), past its 1 s deadline. stop() resolves once the
 * last stall is over.
 */
function stallUntilStopped(tracker: Tracker, index: number): { stop: () => Promise<void> } {
  const STALL_MS = 3000;
  let stopping = false;
  const done = (async () => {
    let running = tracker.stallShard(index, STALL_MS);
    while (!stopping) {
      const queued = tracker.stallShard(index, STALL_MS);
      await running;
      running = queued;
    }
    await running;
  })();
  return { stop: () => { stopping = true; return done; } };
}

test('/healthz answers 200, then 503 naming the shard while that shard is stalled, then 200 again', async () => {
  const metricsPort = await freePort();
  await withTracker({ shards: 2, metricsPort }, async (tracker) => {
    const ok = await httpGet(metricsPort, '/healthz');
    assert.equal(ok.status, 200, ok.body);
    assert.match(ok.body, /^ok/);
    assert.equal((await runCli(['health', '--metrics-port', String(metricsPort)])).code, 0);

    const stalled = stallUntilStopped(tracker, 1);
    try {
      const bad = await httpGet(metricsPort, '/healthz');
      assert.equal(bad.status, 503);
      assert.match(bad.body, /unhealthy: shard 1 did not answer a ping within 1000 ms/);
      const cli = await runCli(['health', '--metrics-port', String(metricsPort)]);
      assert.equal(cli.code, 1);
      assert.match(cli.stderr, /shard 1 did not answer/);
    } finally {
      await stalled.stop();
    }
    assert.equal((await httpGet(metricsPort, '/healthz')).status, 200);
  });
});

test('health reports an unbound socket', () =>
  withTracker({ shards: 1 }, async (tracker) => {
    assert.equal((await tracker.health()).ok, true);
    await tracker.close();
    assert.deepEqual(await tracker.health(), { ok: false, reason: 'the UDP socket is not bound' });
  }));

test('`sobani-tracker health` exits 1 when nothing listens or the listener is off', async () => {
  const port = await freePort();
  const down = await runCli(['health', '--metrics-port', String(port)]);
  assert.equal(down.code, 1);
  assert.match(down.stderr, /unhealthy: .*ECONNREFUSED/);
  const off = await runCli(['health'], { SOBANI_METRICS_PORT: '' });
  assert.equal(off.code, 1);
  assert.match(off.stderr, /metrics listener is off/);
});
