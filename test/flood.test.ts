// One source floods mixed junk at a good fraction of the tracker's capacity while
// 100 honest clients, each on its own loopback address, keep pulsing. Bounded in
// time and count; loopback only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { setTimeout as sleep } from 'node:timers/promises';
import { TEST_IO, WirePeer, withTracker } from './helpers/wire.js';

// The attacker runs in its own thread (a real one is another machine): it sends a
// mix of junk at `rate` datagrams/s for `ms`, paced every 10 ms, and reports the
// bytes it sent and got back.
const ATTACKER = `
const { parentPort, workerData } = require('node:worker_threads');
const dgram = require('node:dgram');
const { port, address, rate, ms } = workerData;
const junk = [
  'x', '{}', '[1,2]', '{"action":"dance"}', '{"action":"pulse"}', '{"action":"alive"}', '{"action":"announce"}',
  '{"action":"push","shareId":"AAAAAAAAAAAA"}', '{"action":"pulse","override":true,"ip":"1.2.3.4","port":1}',
  '\\u0000'.repeat(40), '{"action":"pulse","shareId":true}', 'x'.repeat(2000), '{"action":"relay"}',
  '{"action":"push","shareId":"AAAAAAAAAAAA","relay":"198.51.100.9:3478"}', Buffer.from('000100002112a442000102030405060708090a0b', 'hex').toString('latin1'),
].map((s) => Buffer.from(s, 'latin1'));
const s = dgram.createSocket('udp4');
let sent = 0, bytesOut = 0, bytesIn = 0;
s.on('message', (m) => { bytesIn += m.length; });
s.on('error', () => {});
s.bind(0, '127.0.71.1', () => {
  const started = Date.now();
  const timer = setInterval(() => {
    const due = Math.min(rate * ms / 1000, Math.floor((Date.now() - started) * rate / 1000));
    while (sent < due) { const d = junk[sent % junk.length]; s.send(d, port, address); bytesOut += d.length; sent++; }
    if (Date.now() - started >= ms) {
      clearInterval(timer);
      setTimeout(() => { parentPort.postMessage({ sent, bytesOut, bytesIn }); s.close(); }, 500);
    }
  }, 10);
});
`;

for (const relay of [false, true]) test(`a flooding source cannot push honest pulse success below 99 %, lose a session, or get back more than 3x its bytes${relay ? ' (a relay configured)' : ''}`, { timeout: 60_000 }, () =>
  withTracker({ shards: 2, ...(relay ? { turnUrl: 'turn:127.0.0.1:3478', turnSecret: 'flood-secret' } : {}) }, async (tracker, target) => {
    const honest = await Promise.all(Array.from({ length: 100 }, (_, i) => WirePeer.open(target, `127.0.70.${i + 1}`)));
    const ids = await Promise.all(honest.map((p) => p.announce()));

    // Junk for 3 s at about a third of what the I/O path answers here (the README's
    // benchmark: ~112 k/s native, ~56 k/s dgram), bounded in count and time. Past
    // what the path can read, the kernel drops whatever arrives while the receive
    // buffer is full, honest or not, and no limit in the tracker can help: measured
    // with two busy-looping processes beside this test, dgram held 100 % at 20 k/s
    // and lost whole rounds at 30 k/s and 40 k/s.
    const rate = TEST_IO === 'dgram' ? 20_000 : 40_000;
    const attacker = new Worker(ATTACKER, { eval: true, workerData: { port: target.port, address: target.address, rate, ms: 3000 } });
    const report = new Promise<{ sent: number; bytesOut: number; bytesIn: number }>((resolve) => attacker.once('message', resolve));

    let asked = 0, answered = 0;
    for (let round = 0; round < 12; round++) {
      const results = await Promise.all(honest.map(async (p, i) => {
        asked++;
        const r = await p.request({ action: 'pulse' }, 'pulseReceived', 1000).catch(() => null);
        return r !== null && r.data!.status === '0' && r.data!.shareId === ids[i];
      }));
      answered += results.filter(Boolean).length;
      await sleep(250);
    }
    const attack = await report;
    await attacker.terminate();

    const success = answered / asked;
    assert.ok(success >= 0.99, `honest pulse success ${(success * 100).toFixed(2)} % (${answered}/${asked})`);
    // no honest session was lost: every shareId still resolves
    for (let i = 0; i < honest.length; i += 10) {
      const r = await honest[(i + 1) % honest.length]!.request({ action: 'push', shareId: ids[i] }, 'pushReceived', 2000);
      assert.equal(r.data!.peerShareId, ids[i]);
    }
    assert.equal(attack.sent, rate * 3, `the attack really ran (${attack.sent} datagrams)`);
    assert.ok(attack.bytesIn <= 3 * attack.bytesOut, `attacker sent ${attack.bytesOut} B, got ${attack.bytesIn} B back`);
    const stats = await tracker.stats();
    const dropped = stats.shards.reduce((n, s) => n + (s.counters.drops.rate_limited ?? 0), 0);
    assert.ok(dropped > 0, 'the excess was dropped and counted');
    for (const p of honest) p.close();
  }));
