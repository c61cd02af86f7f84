// The sobani desktop client, which cannot change, replayed byte for byte on its own
// timers (helpers/desktop-client.ts, after PROTOCOL-NOTES.md): two users start it,
// one clicks Connect with the other's shareId soon after, and both must get their
// answer in time to knock through. Every client has its own loopback IP.
//
// "In time" is counted in the client's own retries, not in milliseconds: which push
// (or announce) the tracker answered is read from the order of its replies, so a
// slow round on a loaded machine changes nothing that is asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { DesktopClient, type Release } from './helpers/desktop-client.js';
import { EXPECT_MS, withTracker, wireBytes } from './helpers/wire.js';

/** Connect clicked this long after the target's `announced`: before, around and after its first alive (at 2 s). */
const CLICK_DELAYS_S = [0, 1, 3];

/** Bounds on how long a failing test takes (several rounds of the clients' 1 s and 2 s timers), not speeds. */
const WAIT_MS = 6 * EXPECT_MS;
const TEST_MS = 5 * 60_000;

/** Polls until `done()`; false if it still is not after WAIT_MS (the assertions that follow say what is missing). */
async function until(done: () => boolean, ms = WAIT_MS): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/**
 * What the announces a client sent from a fresh address are answered with, in order,
 * by the amplification budget: each earns 3x its wire bytes, and each form of the
 * reply goes out if the credit left covers it. The later build's session has no known
 * dialect, so the documented form first, then the legacy one; v0.1.2's "id" marks it
 * legacy: its own form only. (Two announces when the client got its answer before its
 * next resend; more, when it did not.)
 */
function announceAnswers(c: DesktopClient): string[] {
  const shareId = c.shareId!;
  const forms = c.release === 'later'
    ? [`{"action":"announceReceived","data":{"shareId":"${shareId}"}}`, `{"action":"announced","data":{"shareId":"${shareId}"}}`]
    : [`{"action":"announced","data":{"shareId":"${shareId}"}}`];
  const answers: string[] = [];
  let credit = 0;
  for (let i = 0; i < c.sent.announce; i++) {
    credit += 3 * wireBytes(c.message('announce'));
    for (const form of forms) {
      if (credit < wireBytes(form)) continue;
      credit -= wireBytes(form);
      answers.push((JSON.parse(form) as { action: string }).action);
    }
  }
  return answers;
}

test('a user who clicks Connect 0, 1 or 3 s after the friend\'s client announced connects: pushed answers the first or second push, and every push brings income', { timeout: TEST_MS }, () =>
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
          try {
            // The pushes stop at pushed; then every one of them is answered, and brings a its income.
            await until(() => a.connectedAt > 0 && b.connectedAt > 0 && b.pushedAt > 0
              && b.pushAnswers().length === b.sent.push && a.count('income') === b.sent.push);
            assert.ok(b.pushedAt > 0, `${label}: the requester never got pushed (${b.trackerActions().join(', ')})`);
            assert.ok(a.incomeAt > 0, `${label}: the target never got income (${a.trackerActions().join(', ')})`);
            // The client pushes every second: "within 2 s of the first push" was the first or second push.
            const answers = b.pushAnswers();
            assert.equal(answers.length, b.sent.push, `${label}: every push is answered (${b.trackerActions().join(', ')})`);
            const answered = answers.findIndex((r) => r.endsWith('pushed')) + 1;
            assert.ok(answered >= 1 && answered <= 2, `${label}: pushed answers push ${answered} (${answers.join(', ')})`);
            assert.equal(a.count('income'), b.sent.push, `${label}: an income for every push, the first one too`);
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

test('the announce timeline: the later build gets announced on its first resend, v0.1.2 on its first announce; alive every 2 s gets alived', { timeout: TEST_MS }, () =>
  withTracker({}, async (_t, target) => {
    const later = await DesktopClient.open(target, '127.0.81.1', 'later');
    const old = await DesktopClient.open(target, '127.0.81.2', 'v0.1.2');
    assert.equal(later.message('announce'), '{"action":"announce"}');
    assert.match(old.message('announce'), /^\{"id":"[0-9a-f]{8}","action":"announce"\}$/);
    later.start(); old.start();
    const [idLater, idOld] = await Promise.all([later.announced(), old.announced()]);
    // Two alives each (2 s and 4 s after announced); the replies to every announce came before them.
    await until(() => later.count('alived') >= 2 && old.count('alived') >= 2);
    for (const c of [later, old]) {
      // the timer's first announce goes at 1 s; a bare 21-byte announce earns room for the
      // documented form, the resend at 2 s for both; the 37-byte one, whose "id" marks it
      // legacy, its own form at once. (A resend the client made before the answer came is
      // answered like the one before it.)
      const actions = c.trackerActions(), announces = announceAnswers(c);
      assert.deepEqual(actions.slice(0, announces.length), announces, c.release);
      assert.deepEqual(actions.slice(0, c.release === 'later' ? 3 : 1), c.release === 'later' ? ['announceReceived', 'announceReceived', 'announced'] : ['announced'],
        `${c.release}: announced on its ${c.release === 'later' ? 'first resend' : 'first announce'}`);
      const alives = actions.slice(announces.length);
      assert.ok(alives.length >= 2 && alives.every((a) => a === 'alived'), `${c.release}: ${alives.join(', ')}`);
      assert.ok(alives.length <= c.sent.alive, `${c.release}: one alived per alive`);
      assert.ok(c.received.filter((r) => r.action === 'alived').every((r) => r.raw === '{"action":"alived"}'));
    }
    assert.equal(new Set([idLater, idOld]).size, 2);
    later.close(); old.close();
  }));

test('v0.1.2: a push sent 0.5 s after announced, before the first alive, is answered with pushed at once, within budget', { timeout: TEST_MS }, () =>
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
    await until(() => b.pushedAt > 0 && a.incomeAt > 0 && b.pushAnswers().length === b.sent.push);
    // (connect came before the announce timer fired, so the push timer is due before the alive timer)
    assert.ok(b.firstPushAt > 0 && (b.firstAliveAt === 0 || b.firstPushAt < b.firstAliveAt), 'the first push went out before the first alive');
    assert.equal(b.pushAnswers().length, b.sent.push, `every push is answered (B got: ${b.trackerActions().join(', ')})`);
    assert.equal(b.pushAnswers()[0], 'pushed', `pushed answers the first push (B got: ${b.trackerActions().join(', ')})`);
    assert.ok(a.incomeAt > 0, 'the friend got income');
    // a session whose announce carried "id" is legacy from the start: one form of each reply
    assert.deepEqual(b.trackerActions().slice(0, 2), ['announced', 'pushed']);
    assert.ok(b.trackerWireBytes() <= 3 * b.sent.wireBytes, `B sent ${b.sent.wireBytes} wire bytes and got ${b.trackerWireBytes()}`);
    const stats = await tracker.stats();
    assert.equal(stats.shards.reduce((n, s) => n + (s.counters.drops.amplification ?? 0), 0), 0, 'no reply was dropped for lack of budget');
    a.close(); b.close();
  }));

test('push against a shareId nobody holds is retried every second, and succeeds once the friend has announced', { timeout: TEST_MS }, () =>
  withTracker({}, async (_t, target) => {
    const a = await DesktopClient.open(target, '127.0.82.1');
    const b = await DesktopClient.open(target, '127.0.82.2');
    b.start();
    await b.announced();
    // the friend's client starts only now; the user typed the id it will get... which we
    // cannot know, so first a stale id, as the client keeps it until restarted
    b.connect('AAAAAAAAAAAA');
    await until(() => b.count('error') >= 2); // the push and its first retry, 1 s later
    assert.ok(b.count('error') >= 2, 'each retry is answered with an error the client ignores');
    assert.equal(b.pushedAt, 0);
    b.close();
    const c = await DesktopClient.open(target, '127.0.82.3');
    a.start(); c.start();
    const idA = await a.announced();
    await c.announced();
    c.connect(idA);
    await until(() => a.connectedAt > 0 && c.connectedAt > 0);
    assert.ok(a.connectedAt > 0 && c.connectedAt > 0, 'connected');
    a.close(); c.close();
  }));

test('an IP at its session cap (4096 desktop clients behind one carrier-grade NAT address) keeps every session alive', { timeout: TEST_MS }, () =>
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
    const refused = (): boolean => extra.received.some((r) => r.raw.includes('"SESSION_LIMIT"'));
    await until(refused);
    assert.ok(refused(), 'the announce past the cap is refused');
    extra.close();
    // three rounds of alive, every 2 s, from every client
    const before = clients.map((c) => c.count('alived'));
    await until(() => clients.every((c, i) => c.count('alived') - before[i]! >= 3));
    clients.forEach((c, i) => {
      const alived = c.count('alived') - before[i]!;
      assert.ok(alived >= 3, `client ${i}: ${alived} alived since the check began`);
      assert.ok(!c.received.some((r) => r.action === 'expired'), `client ${i} was never expired`);
    });
    const stats = await tracker.stats();
    assert.equal(stats.peers, cap);
    assert.equal(stats.shards.reduce((n, s) => n + (s.counters.drops.rate_limited ?? 0), 0), 0, 'no keep-alive was rate-limited');
    for (const c of clients) c.close();
  }));
