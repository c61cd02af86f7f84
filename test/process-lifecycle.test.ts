// The real process: start, serve, stop cleanly on SIGTERM / SIGINT.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WirePeer } from './helpers/wire.js';
import { runTracker } from './helpers/process.js';

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal} stops the tracker: it exits 0, within its own shutdown watchdog, and says so`, async () => {
    const t = await runTracker(['--host', '127.0.0.1', '--port', '0', '--shards', '2']);
    const a = await WirePeer.open({ address: '127.0.0.1', port: t.port });
    const b = await WirePeer.open({ address: '127.0.0.1', port: t.port });
    const idA = await a.announce();
    await b.announce();
    assert.equal((await b.request({ action: 'push', shareId: idA }, 'pushReceived')).data!.peeraddr, a.address);
    t.child.kill(signal);
    // No clock here: a shutdown that outlasts the tracker's 5 s watchdog exits 1 and says so.
    const { code } = await t.exited;
    assert.equal(code, 0, t.output());
    assert.doesNotMatch(t.output(), /shutdown took too long/);
    assert.match(t.output(), /sobani-tracker stopped/);
    a.close(); b.close();
  });
}

test('a SIGTERM the moment the tracker says it listens still stops it cleanly (exit 0), every time', async () => {
  for (let i = 0; i < 10; i++) {
    const t = await runTracker(['--host', '127.0.0.1', '--port', '0', '--shards', '1']);
    t.child.kill('SIGTERM');
    const { code, signal } = await t.exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, `run ${i}: ${t.output()}`);
  }
});

test('one start-up log line carries the effective config; nothing is logged per datagram at info', async () => {
  const t = await runTracker(['--host', '127.0.0.1', '--port', '0', '--shards', '1', '--ttl', '42']);
  const p = await WirePeer.open({ address: '127.0.0.1', port: t.port });
  await p.announce();
  for (let i = 0; i < 50; i++) await p.request({ action: 'pulse' }, 'pulseReceived');
  p.send('garbage that is long enough to get an error reply back');
  await p.next('error');
  t.child.kill('SIGTERM');
  await t.exited;
  const lines = t.output().trim().split('\n');
  const start = JSON.parse(lines.find((l) => l.includes('listening'))!);
  assert.equal(start.config.ttl, 42);
  assert.equal(start.config.shards, 1);
  assert.deepEqual(lines.map((l) => JSON.parse(l).msg), ['sobani-tracker listening', 'sobani-tracker stopped']);
  p.close();
});
