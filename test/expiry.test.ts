// Sessions expire ttl after their last keep-alive; keep-alives keep them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { WirePeer, withTracker } from './helpers/wire.js';

test('a silent session expires after ttl; a pulsing one does not', () =>
  withTracker({ ttl: 1 }, async (tracker, target) => {
    const silent = await WirePeer.open(target);
    const busy = await WirePeer.open(target);
    const asker = await WirePeer.open(target);
    const silentId = await silent.announce();
    const busyId = await busy.announce();
    await asker.announce();
    for (let i = 0; i < 8; i++) { // 2.4 s: well past the 1 s ttl
      await sleep(300);
      await busy.request({ action: 'pulse' }, 'pulseReceived');
      await asker.request({ action: 'pulse' }, 'pulseReceived');
    }
    assert.equal((await silent.request({ action: 'pulse' }, 'pulseReceived')).data!.status, '1');
    assert.equal((await asker.request({ action: 'push', shareId: silentId }, 'error')).data!.code, 'UNKNOWN_SHARE_ID');
    assert.equal((await asker.request({ action: 'push', shareId: busyId }, 'pushReceived')).data!.peerShareId, busyId);
    const stats = await tracker.stats();
    assert.equal(stats.peers, 2);
    assert.equal(stats.shards.reduce((n, s) => n + s.counters.expired, 0), 1);
    silent.close(); busy.close(); asker.close();
  }));

test('a session kept only by alive (legacy) expires too when alive stops', () =>
  withTracker({ ttl: 1 }, async (_t, target) => {
    const p = await WirePeer.open(target);
    await p.announce();
    assert.equal((await p.request({ action: 'alive' }, 'alived')).action, 'alived');
    await sleep(1600);
    assert.equal((await p.request({ action: 'alive' }, 'expired')).action, 'expired');
    p.close();
  }));
