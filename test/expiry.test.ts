// Sessions expire ttl after their last keep-alive; keep-alives keep them.
// Which session outlives which is shown on a simulated clock (a real one would
// make it a race with the scheduler); over UDP, that expiry happens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { EXPECT_MS, PADDED_ANNOUNCE, WirePeer, withTracker } from './helpers/wire.js';
import type { Tracker } from '../src/tracker.js';
import { simulatedShard } from './helpers/sim-shard.js';

/** A bound on how long a test waits for sessions to expire, or retries: it only bounds a failing test. */
const WAIT_MS = 3 * EXPECT_MS;

/** Waits until the tracker holds no session: every one has expired. */
async function allExpired(tracker: Tracker): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while ((await tracker.stats()).peers > 0) {
    if (Date.now() > deadline) throw new Error(`sessions still live ${WAIT_MS} ms on, with a 1 s ttl`);
    await sleep(20);
  }
}

test('a silent session expires after ttl; a pulsing one does not (simulated clock)', () => {
  const { reply, wait, shard } = simulatedShard({ ttl: 1 });
  /** As WirePeer.announce(): a padded announce, then the pulse that proves receipt. */
  const announce = (port: number): string => {
    const shareId = reply(port, PADDED_ANNOUNCE, 'announceReceived').shareId!;
    reply(port, { action: 'pulse', shareId }, 'pulseReceived');
    return shareId;
  };
  const [silent, busy, asker] = [40001, 40002, 40003];
  const silentId = announce(silent);
  const busyId = announce(busy);
  announce(asker);
  for (let i = 0; i < 8; i++) { // 2.4 s: well past the 1 s ttl
    wait(300);
    assert.equal(reply(busy, { action: 'pulse' }, 'pulseReceived').status, '0');
    assert.equal(reply(asker, { action: 'pulse' }, 'pulseReceived').status, '0');
  }
  assert.equal(reply(silent, { action: 'pulse' }, 'pulseReceived').status, '1');
  assert.equal(reply(asker, { action: 'push', shareId: silentId }, 'error').code, 'UNKNOWN_SHARE_ID');
  assert.equal(reply(asker, { action: 'push', shareId: busyId }, 'pushReceived').peerShareId, busyId);
  assert.equal(shard.peers, 2);
  assert.equal(shard.counters.snapshot().expired, 1);
});

test('over UDP, a silent session expires: its pulse is told to announce again, and its shareId stops resolving', () =>
  withTracker({ ttl: 1 }, async (tracker, target) => {
    const silent = await WirePeer.open(target);
    const asker = await WirePeer.open(target);
    const silentId = await silent.announce();
    await allExpired(tracker);
    assert.ok((await tracker.stats()).shards.reduce((n, s) => n + s.counters.expired, 0) >= 1, 'counted as expired');
    assert.equal((await silent.request({ action: 'pulse' }, 'pulseReceived')).data!.status, '1');
    // The asker's own session lives 1 s too: a round slow enough to let it expire before
    // its push is told NO_SESSION, and the asker announces again.
    for (const deadline = Date.now() + WAIT_MS; ;) {
      await asker.announce();
      const code = (await asker.request({ action: 'push', shareId: silentId }, 'error')).data!.code;
      if (code === 'NO_SESSION' && Date.now() < deadline) continue;
      assert.equal(code, 'UNKNOWN_SHARE_ID');
      break;
    }
    silent.close(); asker.close();
  }));

test('a session kept only by alive (legacy) expires too when alive stops', () =>
  withTracker({ ttl: 1 }, async (tracker, target) => {
    const p = await WirePeer.open(target);
    // A round slow enough for the 1 s ttl to pass between announce and alive is told
    // `expired`: the client announces again.
    for (const deadline = Date.now() + WAIT_MS; ;) {
      await p.announce();
      await p.settle(); // nothing else is on its way
      p.send({ action: 'alive' });
      const r = await p.next();
      if (r.action === 'expired' && Date.now() < deadline) continue;
      assert.equal(r.action, 'alived');
      break;
    }
    await allExpired(tracker); // alive stopped
    assert.equal((await p.request({ action: 'alive' }, 'expired')).action, 'expired');
    p.close();
  }));
