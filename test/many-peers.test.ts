// 320 peers announcing at once, spread over 4 shards, each finding its own
// address through another peer's push (most pushes cross shards).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PADDED_ANNOUNCE, WirePeer, withTracker } from './helpers/wire.js';

test('320 simultaneous peers over 4 shards all announce, and every push resolves to the right address', () =>
  withTracker({ shards: 4 }, async (tracker, target) => {
    // one loopback address each: sessions are routed by source IP
    const peers = await Promise.all(Array.from({ length: 320 }, (_, i) => WirePeer.open(target, `127.0.${2 + Math.floor(i / 250)}.${(i % 250) + 1}`)));
    for (const p of peers) p.send(PADDED_ANNOUNCE); // one burst, no pacing
    const ids = await Promise.all(peers.map(async (p) => (await p.next('announceReceived')).data!.shareId as string));
    // each proves it receives at its address, so the tracker may send it income freely
    await Promise.all(peers.map((p, i) => p.request({ action: 'pulse', shareId: ids[i] }, 'pulseReceived')));
    await Promise.all(peers.map((p) => p.settle())); // the legacy forms of the announces, and anything else: dropped
    assert.equal(new Set(ids).size, 320, 'shareIds are unique');
    const stats = await tracker.stats();
    assert.equal(stats.peers, 320);
    for (const s of stats.shards) assert.ok(s.peers > 40, `shard ${s.index} holds ${s.peers} peers: the spread is even enough`);

    for (let i = 0; i < peers.length; i++) peers[i]!.send({ action: 'push', shareId: ids[(i + 1) % peers.length] });
    await Promise.all(peers.map(async (p, i) => {
      const next = (i + 1) % peers.length;
      const r = await p.next('pushReceived');
      assert.equal(r.data!.peeraddr, peers[next]!.address);
      assert.equal(r.data!.peerShareId, ids[next]);
      const income = await peers[next]!.next('income');
      assert.equal(income.data!.peerShareId, ids[i]);
      assert.equal(income.data!.peeraddr, p.address);
    }));
    const after = await tracker.stats();
    assert.ok(after.shards.reduce((n, s) => n + s.counters.forwarded, 0) > 100, 'most pushes crossed shards');
    for (const p of peers) p.close();
  }));
