// A shard thread that dies is logged, counted and replaced; the process serves on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { WirePeer, withTracker } from './helpers/wire.js';
import { addressBucket, shardOfBucket } from '../src/routing.js';

test('killing one shard loses only its sessions; the others keep working and it comes back empty', () =>
  withTracker({ shards: 2 }, async (tracker, target) => {
    // Sessions are routed by source IP: give each peer its own loopback address.
    const ips = Array.from({ length: 40 }, (_, i) => `127.0.1.${i + 1}`);
    const peers = await Promise.all(ips.map((ip) => WirePeer.open(target, ip)));
    const ids = await Promise.all(peers.map((p) => p.announce()));
    const shardOf = (p: WirePeer): number => shardOfBucket(addressBucket(p.socket.address().address), 2);
    const lost = peers.filter((p) => shardOf(p) === 0);
    const kept = peers.filter((p) => shardOf(p) === 1);
    assert.ok(lost.length > 0 && kept.length > 0);

    await tracker.terminateShard(0);
    // until the replacement is counted, however long a new worker thread takes to start (the bound only ends a failing test)
    const deadline = Date.now() + 60_000;
    let stats = await tracker.stats();
    while (stats.shards[0]!.restarts === 0 && Date.now() < deadline) { await sleep(50); stats = await tracker.stats(); }
    assert.equal(stats.shards[0]!.restarts, 1);
    assert.equal(stats.shards[0]!.lostPeers, lost.length);

    for (const p of kept) assert.equal((await p.request({ action: 'pulse' }, 'pulseReceived')).data!.status, '0');
    for (const p of lost) assert.equal((await p.request({ action: 'pulse' }, 'pulseReceived')).data!.status, '1');
    // The replacement shard serves: a lost peer announces again and is found.
    const again = await lost[0]!.announce();
    const viaKept = await kept[0]!.request({ action: 'push', shareId: again }, 'pushReceived');
    assert.equal(viaKept.data!.peeraddr, lost[0]!.address);
    assert.equal((await kept[0]!.request({ action: 'push', shareId: ids[peers.indexOf(kept[1]!)] }, 'pushReceived')).action, 'pushReceived');
    for (const p of peers) p.close();
  }));
