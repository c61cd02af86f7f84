// Sessions that never proved anything cannot crowd out those that did (issue 23,
// finding 4): a new session lives announceTtl until its first keep-alive; in a full
// table a new announce ends one that never kept alive (oldest first), then the least
// recently kept alive that never proved anything; a proven session never gives way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PADDED_ANNOUNCE, untilValue, WirePeer, withTracker } from './helpers/wire.js';
import type { Tracker } from '../src/tracker.js';
import type { Config } from '../src/config.js';
import { AUTH } from '../src/shard/peer-table.js';
import { freePort, httpGet, sample } from './helpers/ops.js';
import { simulatedShard } from './helpers/sim-shard.js';

async function counters(t: Tracker) {
  return (await t.stats()).shards.map((s) => s.counters!);
}

/** Sockets on 127.1.0.1, 127.1.0.2, ...: each its own source IP, as forged announces would be. */
async function forgers(target: { address: string; port: number }, from: number, n: number): Promise<WirePeer[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => WirePeer.open(target, `127.1.${Math.floor((from + i) / 250)}.${((from + i) % 250) + 1}`)));
}

test('a table full of forged announces: a real client still gets a session, and a push to it works; proven sessions never give way', () =>
  withTracker({ shards: 1, maxSessions: 200 }, async (tracker, target) => {
    const victim = await WirePeer.open(target, '127.0.70.1');
    const victimId = await victim.announce(); // proven (its pulse carried its shareId)
    // 250 announces from 250 addresses, never kept alive: they fill the table and overflow it
    const flood = await forgers(target, 1, 250);
    for (const f of flood) f.send('{"action":"announce"}');
    await untilValue('every forged announce handled', async () => ((await counters(tracker))[0]!.requests.announce! >= 1 + 250 ? true : null));
    let c = (await counters(tracker))[0]!;
    assert.equal((await tracker.stats()).peers, 200, 'the table is full');
    assert.equal(c.errors.TRACKER_FULL, undefined, 'no forged announce was refused: each ended an older one that never kept alive');
    assert.equal(c.evictedNeverKeptAlive, 51);
    // a real client announces, proves itself, and is reachable by push
    const real = await WirePeer.open(target, '127.0.70.2');
    const realId = await real.announce();
    const pusher = await WirePeer.open(target, '127.0.70.3');
    const pusherId = await pusher.announce();
    assert.equal((await pusher.request({ action: 'push', shareId: realId }, 'pushReceived')).data!.peerShareId, realId);
    assert.equal((await real.next('income')).data!.peerShareId, pusherId);
    // the real client and the pusher each made room by ending a forged session that never kept alive
    assert.equal((await counters(tracker))[0]!.evictedNeverKeptAlive, 53);
    // now the forgers keep alive too (an alive from a forged address is as easy as an announce),
    // and 250 more forged announces come: the first ends the least recently kept alive of
    // them, and each next one ends the one before it (never kept alive: it goes first)
    for (const f of flood) f.send('{"action":"alive"}');
    await untilValue('every forged alive handled', async () => ((await counters(tracker))[0]!.requests.alive! >= 250 ? true : null));
    const more = await forgers(target, 300, 250);
    for (const f of more) f.send('{"action":"announce"}');
    await untilValue('every second forged announce handled', async () => ((await counters(tracker))[0]!.requests.announce! >= 3 + 250 + 250 ? true : null));
    c = (await counters(tracker))[0]!;
    assert.equal(c.errors.TRACKER_FULL, undefined);
    assert.equal(c.evictedNotProven, 1);
    assert.equal(c.evictedNeverKeptAlive, 53 + 249);
    // the three proven sessions are where they were
    for (const [p, id] of [[victim, victimId], [real, realId]] as const) {
      const { status, shareId } = (await p.request({ action: 'pulse' }, 'pulseReceived')).data!;
      assert.deepEqual({ status, shareId }, { status: '0', shareId: id });
    }
    assert.equal((await pusher.request({ action: 'push', shareId: victimId }, 'pushReceived')).data!.peerShareId, victimId);
    for (const p of [victim, real, pusher, ...flood, ...more]) p.close();
  }));

test('a table of proven sessions only: a new announce gets TRACKER_FULL, and no session gives way', () =>
  withTracker({ shards: 1, maxSessions: 2 }, async (tracker, target) => {
    const [a, b, c] = await Promise.all(['127.0.71.1', '127.0.71.2', '127.0.71.3'].map((ip) => WirePeer.open(target, ip)));
    const idA = await a!.announce();
    const idB = await b!.announce();
    assert.equal((await c!.request(PADDED_ANNOUNCE, 'error')).data!.code, 'TRACKER_FULL');
    assert.equal((await a!.request({ action: 'pulse' }, 'pulseReceived')).data!.shareId, idA);
    assert.equal((await b!.request({ action: 'pulse' }, 'pulseReceived')).data!.shareId, idB);
    const k = (await counters(tracker))[0]!;
    assert.equal(k.evictedNeverKeptAlive + k.evictedNotProven, 0);
    for (const p of [a!, b!, c!]) p.close();
  }));

test('/metrics counts the sessions that gave way, by which', async () => {
  const metricsPort = await freePort();
  await withTracker({ shards: 1, maxSessions: 2, metricsPort }, async (_t, target) => {
    const [a, b, c, d] = await Promise.all(['127.0.72.1', '127.0.72.2', '127.0.72.3', '127.0.72.4'].map((ip) => WirePeer.open(target, ip)));
    await a!.request(PADDED_ANNOUNCE, 'announceReceived');
    await b!.request(PADDED_ANNOUNCE, 'announceReceived');
    await b!.request('{"action":"alive"}', 'alived'); // kept alive, never proved
    await c!.request(PADDED_ANNOUNCE, 'announceReceived'); // a gives way
    await c!.request('{"action":"alive"}', 'alived');
    await d!.request(PADDED_ANNOUNCE, 'announceReceived'); // b gives way (kept alive less recently than c)
    const m = (await httpGet(metricsPort, '/metrics')).body;
    assert.equal(sample(m, 'sobani_sessions_evicted_total', { session: 'never_kept_alive' }), 1);
    assert.equal(sample(m, 'sobani_sessions_evicted_total', { session: 'not_proven' }), 1);
    assert.equal((await c!.request({ action: 'pulse' }, 'pulseReceived')).data!.status, '0', 'c, kept alive last, stayed');
    assert.equal((await b!.request({ action: 'pulse' }, 'pulseReceived')).data!.status, '1', 'b gave way');
    for (const p of [a!, b!, c!, d!]) p.close();
  });
});

/** A shard on a simulated clock (helpers/sim-shard.ts), with an announce and a liveness check. */
function simulated(config: Partial<Config>) {
  const s = simulatedShard(config);
  const announce = (port: number): string => s.reply(port, PADDED_ANNOUNCE, 'announceReceived').shareId!;
  /** Still live: a pulse is answered status 0 (and counts as a keep-alive: use it last). */
  const live = (port: number): boolean => s.reply(port, { action: 'pulse' }, 'pulseReceived').status === '0';
  return { ...s, announce, live };
}

test('a session that never kept alive lives announceTtl; after its first keep-alive, ttl (simulated clock)', () => {
  const s = simulated({ ttl: 300, announceTtl: 10 });
  s.announce(40001); // never keeps alive
  s.announce(40002);
  s.reply(40002, { action: 'alive' }, 'alived'); // keeps alive once
  s.announce(40003);
  s.wait(6000);
  s.announce(40003); // a retried announce (no keep-alive yet) gets another announceTtl
  s.wait(5000); // 11 s
  assert.equal(s.shard.peers, 2, 'the session that never kept alive expired after announceTtl');
  assert.equal(s.shard.counters.snapshot().expired, 1);
  s.wait(5100);
  assert.equal(s.shard.peers, 1, 'and so did the retried one, announceTtl after its last announce');
  s.wait(280_000); // 296 s after the keep-alive
  assert.equal(s.live(40002), true, 'the kept-alive session lives its full ttl');
  s.wait(301_000);
  assert.equal(s.shard.peers, 0);
});

test('announceTtl is at most the ttl (simulated clock)', () => {
  const s = simulated({ ttl: 5, announceTtl: 120 });
  s.announce(40010);
  s.wait(4900);
  assert.equal(s.shard.peers, 1);
  s.wait(200);
  assert.equal(s.shard.peers, 0);
});

test('who gives way in a full table: never kept alive, oldest first; then the least recently kept alive unproven; never a proven or token session', () => {
  const s = simulated({ maxSessions: 5 });
  const proven = 41000, token = 41001, unprovenOld = 41002, unprovenNew = 41003, fresh = 41004;
  const at = (port: number): number => s.shard.sessions.at(keyOf('127.0.0.1'), port);
  /** A pulse carrying the session's own shareId: it proves it receives. */
  const prove = (port: number): void => { s.reply(port, { action: 'pulse', shareId: s.shard.table.shareId(at(port)) }, 'pulseReceived'); };
  s.announce(proven);
  prove(proven);
  s.announce(token);
  s.reply(token, { action: 'alive' }, 'alived');
  // as the token code marks a session that kept alive with its token
  s.shard.table.flags[at(token)]! |= AUTH;
  s.announce(unprovenOld);
  s.reply(unprovenOld, { action: 'alive' }, 'alived');
  s.announce(unprovenNew);
  s.wait(1000);
  s.reply(unprovenNew, { action: 'alive' }, 'alived');
  s.reply(unprovenOld, { action: 'alive' }, 'alived'); // unprovenOld is now the more recently kept alive
  s.announce(fresh);
  s.announce(fresh + 1); // the table is full: fresh (never kept alive) gives way
  s.announce(fresh + 2); // fresh + 1 gives way: the oldest that never kept alive
  let c = s.shard.counters.snapshot();
  assert.equal(c.evictedNeverKeptAlive, 2);
  assert.deepEqual([at(fresh), at(fresh + 1)], [-1, -1]);
  s.reply(fresh + 2, { action: 'alive' }, 'alived'); // now every session has kept alive
  s.announce(fresh + 3); // proven and token are skipped; unprovenNew gives way: kept alive least recently
  assert.equal(at(unprovenNew), -1);
  prove(fresh + 3);
  s.announce(fresh + 4); // unprovenOld
  assert.equal(at(unprovenOld), -1);
  s.announce(fresh + 5); // fresh + 4: it never kept alive
  assert.equal(at(fresh + 4), -1);
  s.reply(fresh + 5, { action: 'alive' }, 'alived');
  s.announce(fresh + 6); // fresh + 2: kept alive, unproven, before fresh + 5
  assert.equal(at(fresh + 2), -1);
  c = s.shard.counters.snapshot();
  assert.equal(c.evictedNeverKeptAlive, 3);
  assert.equal(c.evictedNotProven, 3);
  // left: proven, token, fresh + 3 (proven), fresh + 5 (kept alive), fresh + 6 (never kept alive)
  s.announce(fresh + 7); // fresh + 6
  prove(fresh + 7);
  s.announce(fresh + 8); // fresh + 5
  prove(fresh + 8);
  assert.deepEqual([at(fresh + 6), at(fresh + 5)], [-1, -1]);
  // every session is proven now: nobody gives way
  const full = s.ask(fresh + 9, PADDED_ANNOUNCE);
  assert.equal(full[0]!.data!.code, 'TRACKER_FULL');
  for (const port of [proven, fresh + 3, fresh + 7, fresh + 8]) assert.equal(s.live(port), true, `port ${port} kept its session`);
  // a token session answers a keep-alive without its token with TOKEN_REQUIRED: asked of the table instead
  assert.ok(at(token) >= 0, 'the token session kept its session');
  assert.equal(s.shard.counters.snapshot().errors.TRACKER_FULL, 1);
});

test('a token session that never kept alive with its token still gives way (a forged announce may ask for a token)', () => {
  const s = simulated({ maxSessions: 1 });
  s.announce(42000);
  s.shard.table.flags[s.shard.sessions.at(keyOf('127.0.0.1'), 42000)]! |= AUTH;
  s.announce(42001);
  assert.equal(s.shard.sessions.at(keyOf('127.0.0.1'), 42000), -1);
  assert.equal(s.shard.counters.snapshot().evictedNeverKeptAlive, 1);
});

function keyOf(ip: string): Uint8Array {
  const k = new Uint8Array(16);
  k[10] = 0xff; k[11] = 0xff;
  ip.split('.').forEach((b, i) => { k[12 + i] = Number(b); });
  return k;
}

test('restored from a snapshot, a session keeps its place: one that never kept alive lives at most announceTtl and gives way first; a proven one never', () => {
  const a = simulated({ ttl: 300, announceTtl: 10 });
  a.announce(43000);
  const provenId = a.announce(43001);
  a.reply(43001, { action: 'pulse', shareId: provenId }, 'pulseReceived');
  const block = a.shard.exportSessions();
  const b = simulated({ ttl: 300, announceTtl: 10, maxSessions: 2 });
  assert.equal(b.shard.importSessions(block), 2);
  b.announce(43002); // the table is full: the restored session that never kept alive gives way
  assert.equal(b.shard.sessions.at(keyOf('127.0.0.1'), 43000), -1);
  assert.equal(b.shard.counters.snapshot().evictedNeverKeptAlive, 1);
  const c = simulated({ ttl: 300, announceTtl: 10 });
  c.shard.importSessions(block);
  c.wait(10_100);
  assert.equal(c.shard.peers, 1, 'the restored never-kept-alive session lived at most announceTtl');
  assert.equal(c.live(43001), true);
});
