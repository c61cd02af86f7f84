// One source floods mixed junk while 100 honest clients, each on its own loopback
// address, keep pulsing. Bounded in count, not in time, so that it means the same
// on a fast machine and on a loaded one: in each of 12 rounds the attacker sends a
// burst of 3,000 junk datagrams at once, beside one pulse from every honest client,
// and the round ends when the tracker has answered them all. The bursts are sized
// to fit the socket's receive buffer, so the kernel drops nothing: what is measured
// is the tracker's work under the flood, not the kernel's queue (a flood faster
// than a machine can read loses honest and junk datagrams alike in the kernel, and
// no tracker can help that; see docs/operations.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { addressBucket, shardOfBucket } from '../src/routing.js';
import { EXPECT_MS, WirePeer, ipInShard, withTracker } from './helpers/wire.js';

const ROUNDS = 12;
const BURST = 3000;
const ATTACKER_IP = '127.0.71.1';

// The attacker runs in its own thread (a real one is another machine). On each
// message it sends a burst of junk, then a STUN Binding from a second address that
// lives in the same shard (its own address is rate-limited by then): the Binding's
// answer says the tracker has handled the whole burst. It reports the bytes it sent
// and got back at its junk address.
const ATTACKER = `
const { parentPort, workerData } = require('node:worker_threads');
const dgram = require('node:dgram');
const { port, address, attackerIp, markerIp } = workerData;
const junk = [
  'x', '{}', '[1,2]', '{"action":"dance"}', '{"action":"pulse"}', '{"action":"alive"}', '{"action":"announce"}',
  '{"action":"push","shareId":"AAAAAAAAAAAA"}', '{"action":"pulse","override":true,"ip":"1.2.3.4","port":1}',
  '\\u0000'.repeat(40), '{"action":"pulse","shareId":true}', 'x'.repeat(2000), '{"action":"relay"}',
  '{"action":"push","shareId":"AAAAAAAAAAAA","relay":"198.51.100.9:3478"}', Buffer.from('000100002112a442000102030405060708090a0b', 'hex').toString('latin1'),
].map((s) => Buffer.from(s, 'latin1'));
const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 });
const marker = dgram.createSocket('udp4');
let sent = 0, bytesOut = 0, bytesIn = 0, round = 0;
s.on('message', (m) => { bytesIn += m.length; });
s.on('error', () => {});
marker.on('error', () => {});
marker.on('message', (m) => { if (m.length >= 20 && m.readUInt16BE(0) === 0x0101 && m.readUInt32BE(16) === round) parentPort.postMessage({ round }); });
const binding = (n) => { const b = Buffer.alloc(20); b.writeUInt16BE(1, 0); b.writeUInt32BE(0x2112a442, 4); b.writeUInt32BE(n, 16); return b; };
s.bind(0, attackerIp, () => marker.bind(0, markerIp, () => parentPort.postMessage({ ready: true })));
parentPort.on('message', (m) => {
  if (m === 'report') { parentPort.postMessage({ sent, bytesOut, bytesIn }); return; }
  round = m.round;
  let left = m.burst;
  const more = () => {
    // in slices, so that a slow sender still queues in order and never blocks its thread
    for (let i = 0; i < 500 && left > 0; i++, left--) {
      const d = junk[sent % junk.length];
      // the Binding leaves once the burst's last datagram has left
      if (left === 1) s.send(d, port, address, () => marker.send(binding(round), port, address)); else s.send(d, port, address);
      bytesOut += d.length; sent++;
    }
    if (left > 0) setImmediate(more);
  };
  more();
});
`;


for (const relay of [false, true]) test(`a flooding source cannot push honest pulse success below 99 %, lose a session, or get back more than 3x its bytes${relay ? ' (a relay configured)' : ''}`, () =>
  // ipRate 1/s: the attacker's IP gets its burst of 8,192 requests handled, then
  // (almost) nothing more, however long the flood takes on this machine.
  withTracker({ shards: 2, ipRate: 1, ...(relay ? { turnUrl: 'turn:127.0.0.1:3478', turnSecret: 'flood-secret' } : {}) }, async (tracker, target) => {
    const honest = await Promise.all(Array.from({ length: 100 }, (_, i) => WirePeer.open(target, `127.0.70.${i + 1}`)));
    const ids = await Promise.all(honest.map((p) => p.announce()));

    const attacker = new Worker(ATTACKER, { eval: true, workerData: { port: target.port, address: target.address, attackerIp: ATTACKER_IP, markerIp: ipInShard('127.0.72', 2, shardOfBucket(addressBucket(ATTACKER_IP), 2)) } });
    const messages: ((m: Record<string, number>) => void)[] = [];
    attacker.on('message', (m) => messages.shift()?.(m));
    const nextMessage = (): Promise<Record<string, number>> => new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the attacker heard nothing back from the tracker')), EXPECT_MS);
      messages.push((m) => { clearTimeout(t); resolve(m); });
    });
    await nextMessage(); // bound

    let asked = 0, answered = 0;
    for (let round = 1; round <= ROUNDS; round++) {
      const burstHandled = nextMessage();
      attacker.postMessage({ round, burst: BURST });
      const results = await Promise.all(honest.map(async (p, i) => {
        asked++;
        const r = await p.request({ action: 'pulse' }, 'pulseReceived').catch(() => null);
        return r !== null && r.data!.status === '0' && r.data!.shareId === ids[i];
      }));
      answered += results.filter(Boolean).length;
      assert.equal((await burstHandled).round, round);
    }
    const report = nextMessage();
    attacker.postMessage('report');
    const attack = await report;
    await attacker.terminate();

    const success = answered / asked;
    assert.ok(success >= 0.99, `honest pulse success ${(success * 100).toFixed(2)} % (${answered}/${asked})`);
    // no honest session was lost: every shareId still resolves
    for (let i = 0; i < honest.length; i += 10) {
      const r = await honest[(i + 1) % honest.length]!.request({ action: 'push', shareId: ids[i] }, 'pushReceived');
      assert.equal(r.data!.peerShareId, ids[i]);
    }
    assert.equal(attack.sent, ROUNDS * BURST, `the attack really ran (${attack.sent} datagrams)`);
    assert.ok(attack.bytesIn! <= 3 * attack.bytesOut!, `attacker sent ${attack.bytesOut} B, got ${attack.bytesIn} B back`);
    const stats = await tracker.stats();
    const dropped = stats.shards.reduce((n, s) => n + (s.counters.drops.rate_limited ?? 0), 0);
    // 36,000 junk datagrams against a burst of 8,192 and 1 a second (3,600 if the flood took an hour): the rest are dropped, and counted
    assert.ok(dropped >= ROUNDS * BURST - 8192 - 3600, `the excess was dropped and counted (${dropped})`);
    for (const p of honest) p.close();
  }));
