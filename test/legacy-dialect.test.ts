// The sobani desktop client's dialect (PROTOCOL-NOTES.md), replayed byte for byte,
// alone and mixed with documented-API clients on the same port.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { EXPECT_MS, WirePeer, withTracker } from './helpers/wire.js';
import type { Tracker } from '../src/tracker.js';

// The exact datagrams the desktop client sends.
const ANNOUNCE = '{"action":"announce"}';
const ALIVE = '{"action":"alive"}';
const push = (id: string): string => `{"action":"push","shareId":"${id}"}`;

/** A bound on how long a client's retries may take in all: it only bounds a failing test. */
const RETRIES_MS = 3 * EXPECT_MS;

/**
 * What the desktop client does on start: announce every second until `announced`
 * arrives (the documented form it also gets is logged and ignored). A slow round
 * just means one more resend; the barrier then takes in the replies to them all.
 */
async function legacyAnnounce(p: WirePeer): Promise<string> {
  const deadline = Date.now() + RETRIES_MS;
  while (Date.now() < deadline) {
    p.send(ANNOUNCE);
    const r = await p.next('announced', 1000).catch(() => null); // the client's resend timer
    if (r !== null) {
      await p.settle();
      return r.data!.shareId as string;
    }
  }
  throw new Error(`no announced within ${RETRIES_MS} ms of announcing every second`);
}

/**
 * With a 1 s ttl: announce, then alive, until the alive is answered `alived`. A round
 * slow enough for the ttl to pass between the two is told `expired`, and the client
 * announces again, as it does on `expired`.
 */
async function liveSession(p: WirePeer): Promise<void> {
  const deadline = Date.now() + RETRIES_MS;
  while (Date.now() < deadline) {
    await legacyAnnounce(p); // its barrier leaves nothing else to come
    p.send(ALIVE);
    const r = await p.next();
    if (r.action === 'alived') return;
    assert.equal(r.raw, '{"action":"expired"}');
  }
  throw new Error(`no alived within ${RETRIES_MS} ms`);
}

/** Waits until the tracker holds no session: every one has expired. */
async function allExpired(tracker: Tracker): Promise<void> {
  const deadline = Date.now() + RETRIES_MS;
  while ((await tracker.stats()).peers > 0) {
    if (Date.now() > deadline) throw new Error(`sessions still live ${RETRIES_MS} ms on, with a 1 s ttl`);
    await sleep(20);
  }
}

/**
 * Announce, then the alives the desktop client sends every 2 s from then on
 * (sent back to back here). Each earns reply credit (alive is 18 bytes in,
 * alived 19 out), so by the time a friend pushes, the tracker may send income.
 */
async function legacyStart(p: WirePeer): Promise<string> {
  const id = await legacyAnnounce(p);
  for (let i = 0; i < 3; i++) await p.request(ALIVE, 'alived');
  return id;
}

test('announce resent every second until answered keeps one shareId; every resend is answered', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target);
    for (let i = 0; i < 3; i++) { p.send(ANNOUNCE); await sleep(1000); } // as if the answers were lost
    const all = await p.settle();
    assert.equal(new Set(all.map((r) => r.data!.shareId)).size, 1, 'every resend answered with the same shareId');
    // From a new address the first announce's credit covers the documented form only;
    // from the first resend on, each one is answered in both forms, documented first.
    assert.deepEqual(all.map((r) => r.action), ['announceReceived', 'announceReceived', 'announced', 'announceReceived', 'announced']);
    p.close();
  }));

test('alive every 2 s answers alived with exactly {"action":"alived"}', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target);
    await legacyAnnounce(p);
    for (let i = 0; i < 3; i++) {
      const r = await p.request(ALIVE, 'alived');
      assert.equal(r.raw, '{"action":"alived"}');
      if (i < 2) await sleep(2000);
    }
    p.close();
  }));

test('alive from an unknown or expired client answers {"action":"expired"}', () =>
  withTracker({ ttl: 1 }, async (tracker, target) => {
    const stranger = await WirePeer.open(target);
    assert.equal((await stranger.request(ALIVE, 'expired')).raw, '{"action":"expired"}');
    const p = await WirePeer.open(target);
    await liveSession(p);
    await allExpired(tracker); // the client was suspended past the ttl
    assert.equal((await p.request(ALIVE, 'expired')).raw, '{"action":"expired"}');
    // what the client does next: announce again, and it is back
    await liveSession(p);
    stranger.close(); p.close();
  }));

test('two legacy clients find each other: pushed to the requester, income to the target', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target);
    const b = await WirePeer.open(target);
    const idA = await legacyStart(a);
    const idB = await legacyStart(b);
    b.send(push(idA));
    const pushed = await b.next('pushed');
    assert.equal(pushed.raw, `{"action":"pushed","data":{"peeraddr":"${a.address}","peerShareId":"${idA}"}}`);
    const income = await a.next('income');
    assert.equal(income.raw, `{"action":"income","data":{"peeraddr":"${b.address}","peerShareId":"${idB}"}}`);
    assert.deepEqual((await b.settle()).map((r) => r.action), [], 'a legacy requester gets only pushed');
    // peeraddr splits on ':' into a dotted quad and a port, as the desktop client does
    const [ip, port] = (pushed.data!.peeraddr as string).split(':');
    assert.match(ip!, /^\d+\.\d+\.\d+\.\d+$/);
    assert.equal(Number(port), a.port);
    a.close(); b.close();
  }));

test('push retried until pushed: a push sent before the friend announced succeeds on a later retry', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target);
    const b = await WirePeer.open(target);
    await legacyStart(b);
    // b retries the push every second; the first attempt names an id nobody holds yet,
    // then a's announce happens and the retry (with a's real id) is answered.
    b.send(push('AAAAAAAAAAAA'));
    assert.equal((await b.next('error')).data!.code, 'UNKNOWN_SHARE_ID');
    const idA = await legacyStart(a);
    let pushed;
    for (const deadline = Date.now() + RETRIES_MS; !pushed && Date.now() < deadline;) {
      b.send(push(idA));
      pushed = await b.next('pushed', 1000).catch(() => undefined); // the client's resend timer
    }
    assert.ok(pushed);
    assert.equal(pushed.data!.peerShareId, idA);
    assert.equal((await a.next('income')).data!.peeraddr, b.address);
    a.close(); b.close();
  }));

test('mixed pairs work both ways: documented -> legacy and legacy -> documented', () =>
  withTracker({ shards: 3 }, async (_t, target) => {
    const legacy = await WirePeer.open(target);
    const documented = await WirePeer.open(target);
    const idL = await legacyStart(legacy);
    const idD = await documented.announce();

    documented.send({ action: 'push', shareId: idL });
    assert.deepEqual((await documented.next('pushReceived')).data, { peeraddr: legacy.address, peerShareId: idL });
    assert.deepEqual((await legacy.next('income')).data, { peeraddr: documented.address, peerShareId: idD });

    legacy.send(push(idD));
    assert.deepEqual((await legacy.next('pushed')).data, { peeraddr: documented.address, peerShareId: idD });
    assert.deepEqual((await documented.next('income')).data, { peeraddr: legacy.address, peerShareId: idL });
    legacy.close(); documented.close();
  }));

test('a session whose dialect is not known yet gets push answered in both forms', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target);
    const b = await WirePeer.open(target);
    const idA = await a.announce();
    await b.announce({ verify: false }); // no keep-alive yet: could be either client
    b.send(push(idA));
    const replies = await b.settle();
    assert.deepEqual(replies.map((r) => r.action), ['pushReceived', 'pushed'], 'the documented form first');
    a.close(); b.close();
  }));

test('a legacy client asking for an IPv6-only peer gets a clear error, and the peer is not told', () =>
  withTracker({ host: '::' }, async (_t, target) => {
    const v6 = await WirePeer.open({ address: '::1', port: target.port }, '::1');
    const legacy = await WirePeer.open({ address: '127.0.0.1', port: target.port }, '127.0.0.1');
    const id6 = await v6.announce();
    const idL = await legacyStart(legacy);
    legacy.send(push(id6));
    const err = await legacy.next('error');
    assert.equal(err.data!.code, 'PEER_ADDRESS_UNSUPPORTED');
    // the error came from the shard that holds id6 (the push was forwarded there if need
    // be), and v6's barrier goes to that shard: an income would have come before it
    assert.deepEqual(await v6.settle(), [], 'no income to the IPv6 peer');
    // and the other way round: the IPv6 peer is refused too, and the legacy client is not handed an IPv6 address
    const back = await v6.request({ action: 'push', shareId: idL }, 'error');
    assert.equal(back.data!.code, 'PEER_ADDRESS_UNSUPPORTED');
    assert.deepEqual(await legacy.settle(), []); // likewise: idL's shard answered the IPv6 peer
    v6.close(); legacy.close();
  }));

test('announceReply can be set to a single form', async () => {
  for (const [mode, action] of [['legacy', 'announced'], ['documented', 'announceReceived']] as const) {
    await withTracker({ announceReply: mode }, async (_t, target) => {
      const p = await WirePeer.open(target);
      p.send(ANNOUNCE);
      const replies = await p.settle();
      assert.deepEqual(replies.map((r) => r.action), [action], mode);
      p.close();
    });
  }
});
