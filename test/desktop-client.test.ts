// The sobani desktop client, which cannot change, replayed byte for byte on its own
// timers (helpers/desktop-client.ts, after PROTOCOL-NOTES.md): two users start it,
// one clicks Connect with the other's shareId soon after, and both must get their
// answer in time to knock through. Every client has its own loopback IP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { DesktopClient, type Release } from './helpers/desktop-client.js';
import { withTracker } from './helpers/wire.js';

/** Connect clicked this long after the target's `announced`: before, around and after its first alive (at 2 s). */
const CLICK_DELAYS_S = [0, 1, 3];

test('a user who clicks Connect 0, 1 or 3 s after the friend\'s client announced connects: pushed and income within 2 s of the push', { timeout: 30_000 }, () =>
  withTracker({}, async (tracker, target) => {
    const runs: Promise<void>[] = [];
    let ip = 1;
    for (const release of ['later', 'v0.1.2'] as Release[]) {
      for (const delay of CLICK_DELAYS_S) {
        runs.push((async () => {
          const label = `${release}, click ${delay} s after announced`;
          // both apps start at the same moment: neither tracker session has a known dialect yet
          const a = await DesktopClient.open(target, `127.0.80.${ip++}`, release);
          const b = await DesktopClient.open(target, `127.0.80.${ip++}`, release);
          a.start(); b.start();
          const idA = await a.announced();
          await sleep(delay * 1000);
          b.connect(idA);
          const deadline = Date.now() + 1000 + 2000 + 1500; // first push after 1 s, 2 s for the answers, 1.5 s to knock
          while ((a.connectedAt === 0 || b.connectedAt === 0) && Date.now() < deadline) await sleep(50);
          try {
            assert.ok(b.pushedAt > 0, `${label}: the requester never got pushed (${b.trackerActions().join(', ')})`);
            assert.ok(a.incomeAt > 0, `${label}: the target never got income (${a.trackerActions().join(', ')})`);
            assert.ok(b.pushedAt - b.firstPushAt <= 2000, `${label}: pushed ${b.pushedAt - b.firstPushAt} ms after the first push`);
            assert.ok(a.incomeAt - b.firstPushAt <= 2000, `${label}: income ${a.incomeAt - b.firstPushAt} ms after the first push`);
            assert.equal(a.peer, b.address, `${label}: income names the requester's address`);
            assert.equal(b.peer, a.address, `${label}: pushed names the target's address`);
            assert.ok(a.connectedAt > 0 && b.connectedAt > 0, `${label}: the two clients knocked through`);
          } finally {
            a.close(); b.close();
          }
        })());
      }
    }
    await Promise.all(runs);
    const stats = await tracker.stats();
    assert.equal(stats.shards.reduce((n, s) => n + (s.counters.drops.rate_limited ?? 0) + (s.counters.drops.push_rate_limited ?? 0), 0), 0);
  }));

test('the announce timeline: the later build gets announced on its first resend, v0.1.2 on its first announce; alive every 2 s gets alived', { timeout: 20_000 }, () =>
  withTracker({}, async (_t, target) => {
    const later = await DesktopClient.open(target, '127.0.81.1', 'later');
    const old = await DesktopClient.open(target, '127.0.81.2', 'v0.1.2');
    assert.equal(later.message('announce'), '{"action":"announce"}');
    assert.match(old.message('announce'), /^\{"id":"[0-9a-f]{8}","action":"announce"\}$/);
    const started = Date.now();
    later.start(); old.start();
    const [idLater, idOld] = await Promise.all([later.announced(), old.announced()]);
    // the timer's first announce goes at 1 s; a bare 21-byte announce earns room for the
    // documented form, the resend at 2 s for both; the 37-byte one, whose "id" marks it legacy, its own form at once
    assert.ok(later.announcedAt - started < 2800, `later build: announced after ${later.announcedAt - started} ms`);
    assert.ok(old.announcedAt - started < 1800, `v0.1.2: announced after ${old.announcedAt - started} ms`);
    assert.deepEqual(later.trackerActions(), ['announceReceived', 'announceReceived', 'announced']);
    assert.deepEqual(old.trackerActions(), ['announced']); // its "id" marks it legacy: only its own form
    await sleep(4300); // two alives each, at 2 s and 4 s after announced
    for (const c of [later, old]) {
      const actions = c.trackerActions();
      assert.deepEqual(actions.slice(actions.indexOf('announced') + 1), ['alived', 'alived'], c.release);
      assert.ok(c.received.filter((r) => r.action === 'alived').every((r) => r.raw === '{"action":"alived"}'));
    }
    assert.equal(new Set([idLater, idOld]).size, 2);
    later.close(); old.close();
  }));

test('v0.1.2: a push sent 0.5 s after announced, before the first alive, is answered with pushed at once, within budget', { timeout: 20_000 }, () =>
  withTracker({}, async (tracker, target) => {
    const a = await DesktopClient.open(target, '127.0.84.1', 'v0.1.2');
    const b = await DesktopClient.open(target, '127.0.84.2', 'v0.1.2');
    a.start();
    const idA = await a.announced();
    // B's app starts and its user clicks Connect half a second later: the announce
    // timer fires at 1 s (answered at once), the push timer at 1.5 s.
    b.start();
    await sleep(500);
    b.connect(idA);
    await b.announced();
    const deadline = Date.now() + 5000;
    while ((b.pushedAt === 0 || a.incomeAt === 0) && Date.now() < deadline) await sleep(20);
    assert.ok(b.firstPushAt > 0 && (b.firstAliveAt === 0 || b.firstPushAt < b.firstAliveAt), 'the first push went out before the first alive');
    assert.equal(b.pushesBeforePushed, 1, `pushed answers the first push (B got: ${b.trackerActions().join(', ')})`);
    assert.ok(a.incomeAt > 0, 'the friend got income');
    // a session whose announce carried "id" is legacy from the start: one form of each reply
    assert.deepEqual(b.trackerActions().slice(0, 2), ['announced', 'pushed']);
    assert.ok(b.trackerWireBytes() <= 3 * b.sent.wireBytes, `B sent ${b.sent.wireBytes} wire bytes and got ${b.trackerWireBytes()}`);
    const stats = await tracker.stats();
    assert.equal(stats.shards.reduce((n, s) => n + (s.counters.drops.amplification ?? 0), 0), 0, 'no reply was dropped for lack of budget');
    a.close(); b.close();
  }));

test('push against a shareId nobody holds is retried every second, and succeeds once the friend has announced', { timeout: 20_000 }, () =>
  withTracker({}, async (_t, target) => {
    const a = await DesktopClient.open(target, '127.0.82.1');
    const b = await DesktopClient.open(target, '127.0.82.2');
    b.start();
    await b.announced();
    // the friend's client starts only now; the user typed the id it will get... which we
    // cannot know, so first a stale id, as the client keeps it until restarted
    b.connect('AAAAAAAAAAAA');
    await sleep(2500);
    assert.ok(b.received.filter((r) => r.action === 'error').length >= 2, 'each retry is answered with an error the client ignores');
    assert.equal(b.pushedAt, 0);
    b.close();
    const c = await DesktopClient.open(target, '127.0.82.3');
    a.start(); c.start();
    const idA = await a.announced();
    await c.announced();
    c.connect(idA);
    const deadline = Date.now() + 4000;
    while ((a.connectedAt === 0 || c.connectedAt === 0) && Date.now() < deadline) await sleep(50);
    assert.ok(a.connectedAt > 0 && c.connectedAt > 0, 'connected');
    a.close(); c.close();
  }));

test('an IP at its session cap (4096 desktop clients behind one carrier-grade NAT address) keeps every session alive', { timeout: 60_000 }, () =>
  withTracker({}, async (tracker, target) => {
    const cap = tracker.config.maxSessionsPerIp;
    const clients = await Promise.all(Array.from({ length: cap + 1 }, () => DesktopClient.open(target, '127.0.83.1')));
    const extra = clients.pop()!;
    // The users start over ~2 s, so their 1 s and 2 s timers are spread out as in real life.
    for (let i = 0; i < clients.length; i++) {
      clients[i]!.start();
      if (i % 256 === 255) await sleep(125);
    }
    await Promise.all(clients.map((c) => c.announced()));
    // one more client behind the same address is refused with a clear error
    extra.start();
    await sleep(1500);
    assert.ok(extra.received.some((r) => r.raw.includes('"SESSION_LIMIT"')), 'the announce past the cap is refused');
    extra.close();
    // three rounds of alive, every 2 s, from every client
    const before = clients.map((c) => c.received.filter((r) => r.action === 'alived').length);
    await sleep(6200);
    clients.forEach((c, i) => {
      const alived = c.received.filter((r) => r.action === 'alived').length - before[i]!;
      assert.ok(alived >= 3, `client ${i}: ${alived} alived in 6.2 s`);
      assert.ok(!c.received.some((r) => r.action === 'expired'), `client ${i} was never expired`);
    });
    const stats = await tracker.stats();
    assert.equal(stats.peers, cap);
    assert.equal(stats.shards.reduce((n, s) => n + (s.counters.drops.rate_limited ?? 0), 0), 0, 'no keep-alive was rate-limited');
    for (const c of clients) c.close();
  }));
