// What a datagram forged from the tracker's address, or sent by anyone while a
// client punches, can make the client do (issue 23, findings 1, 3 and 7). The
// forger is off-path: it sends with the tracker's source address (a raw socket,
// root) and never sees what the tracker sends the client. A token client drops
// what its tag check refuses; a client without a token (a tracker without tokens,
// or token: false) cannot tell, so what one message can make it send is bounded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import type { Socket } from 'node:dgram';
import { punch, TrackerClient, type PunchEvent } from '../src/client/index.js';
import { EARLY_SENDERS, EARLY_SEQS, type PunchStats } from '../src/client/punch.js';
import { dataMessage, UNPROVEN_PROBES } from '../src/client/peer-path.js';
import { countSentTo } from './helpers/count-to.js';
import { canForge, forge } from './helpers/forge.js';
import { EXPECT_MS, TEST_IO, until, withTracker } from './helpers/wire.js';

const skip = canForge ? false : 'forging a source address needs root (raw sockets, nftables)';

async function bound(host: string): Promise<Socket> {
  const s = dgram.createSocket('udp4');
  s.on('error', () => undefined);
  await new Promise<void>((r) => s.bind(0, host, () => r()));
  return s;
}

/** Sends `marker` from the client's socket to `to` and waits for it there: everything the socket sent before is out. */
async function flushed(client: TrackerClient, to: Socket): Promise<void> {
  const arrived = new Promise<void>((r) => to.once('message', () => r()));
  await client.send('marker', to.address().address, to.address().port);
  await arrived;
}

const income = (victim: string, relay?: string) => JSON.stringify({
  action: 'income',
  data: { peeraddr: victim, peerShareId: 'AAAAAAAAAAAA', nat: 'address-and-port-dependent', peerVerified: true, ...(relay !== undefined ? { relay } : {}) },
});

for (const token of [true, false]) {
  const who = token ? 'a token client' : 'a client without a token';
  test(`finding 1: a forged income naming a victim (peerVerified, a hard NAT): ${who} sends the victim at most ${UNPROVEN_PROBES} datagrams, counted on every port`, { skip }, () =>
    withTracker({ io: TEST_IO }, async (_t, tracker) => {
      const VICTIM = token ? '127.0.98.1' : '127.0.98.3';
      const target = new TrackerClient({ tracker: { host: tracker.address, port: tracker.port }, socket: { host: token ? '127.0.98.2' : '127.0.98.4' }, token });
      await target.announce();
      assert.equal(target.token !== undefined, token, `the tracker issued a token: ${target.token}`);
      const counter = countSentTo(VICTIM);
      const marker = await bound(VICTIM); // the victim's own socket, where the count ends
      const events: PunchEvent[] = [];
      const done = new AbortController();
      // an easy NAT (discovery off: unknown counts as easy) against the claimed hard one: a birthday spray, if believed
      const punching = punch({ client: target, discover: false, timeoutMs: token ? 3 * EXPECT_MS : 3000, signal: done.signal, onEvent: (e) => events.push(e) });
      await until('the punch announced', () => events.some((e) => e.event === 'announced'));
      const me = target.trackerAddress!;
      const local = await target.ready();
      await forge({ from: { address: me.address, port: me.port }, to: { address: local.address, port: local.port }, payload: income(`${VICTIM}:5555`) });
      if (token) {
        // dropped: the punch still waits, and a real peer that pushes gets it
        await until('the forged income was counted untrusted', () => target.stats.untrusted === 1);
        const real = new TrackerClient({ tracker: { host: tracker.address, port: tracker.port }, socket: { host: '127.0.98.5' } });
        const pushing = punch({ client: real, peer: target.shareId!, discover: false, timeoutMs: 3 * EXPECT_MS });
        const [mine, theirs] = await Promise.all([punching, pushing]);
        assert.ok(mine.ok && theirs.ok, `both connected: ${JSON.stringify(events)}`);
        assert.equal(mine.peerShareId, real.shareId, 'the target punched with the peer that pushed, not with the forged one');
        mine.path.close(); theirs.path.close();
        await real.close();
      } else {
        const result = await punching;
        assert.equal(result.ok, false);
        const peer = events.find((e) => e.event === 'peer');
        assert.ok(peer?.event === 'peer' && peer.peeraddr === `${VICTIM}:5555` && peer.strategy === 'birthday-easy', JSON.stringify(events));
      }
      await flushed(target, marker);
      const reached = counter.read() - 1; // less the marker
      counter.close();
      marker.close();
      await target.close();
      if (token) assert.equal(reached, 0, 'nothing reached the victim');
      else {
        assert.ok(reached <= UNPROVEN_PROBES, `the victim got ${reached} datagrams (at most ${UNPROVEN_PROBES})`);
        assert.ok(reached > 0, 'a real peer might be there: it got a few probes');
      }
    }));
}

for (const token of [true, false]) {
  test(`finding 3: a third party's income carrying its own relay while the target punches another peer: the target connects to its real peer (${token ? 'token' : 'no token'})`, () =>
    withTracker({ io: TEST_IO, turnUrl: 'turn:127.0.0.1:3478', turnSecret: 'the-secret-coturn-has' }, async (_t, tracker) => {
      const at = { host: tracker.address, port: tracker.port };
      const base = token ? 10 : 20;
      const target = new TrackerClient({ tracker: at, socket: { host: `127.0.99.${base + 1}` }, token });
      const peer = new TrackerClient({ tracker: at, socket: { host: `127.0.99.${base + 2}` }, token });
      const third = new TrackerClient({ tracker: at, socket: { host: `127.0.99.${base + 3}` }, token });
      await Promise.all([target.announce(), peer.announce(), third.announce()]);
      // both NATs hard: no punch fits, the target waits for the relayed address its peer hands it
      await target.reportNat('address-and-port-dependent');
      await peer.reportNat('address-and-port-dependent');
      // stand-ins for the relayed addresses (on the relay's IP, as the tracker requires): each answers what it gets
      const relays = { peer: await bound('127.0.0.1'), third: await bound('127.0.0.1') };
      const got = { peer: 0, third: 0 };
      for (const k of ['peer', 'third'] as const) {
        relays[k].on('message', (_m, from) => { got[k]++; relays[k].send('relayed', from.port, from.address); });
      }
      const addr = (s: Socket) => `127.0.0.1:${s.address().port}`;
      const events: PunchEvent[] = [];
      const punching = punch({ client: target, discover: false, timeoutMs: 3 * EXPECT_MS, onEvent: (e) => events.push(e) });
      await until('the punch announced', () => events.some((e) => e.event === 'announced'));
      await peer.push(target.shareId!);
      await until('the target knows its peer', () => events.some((e) => e.event === 'peer'));
      // the third party pushes with its own relay; the income reaches the target before the peer's next push is even sent
      await third.push(target.shareId!, { relay: addr(relays.third) });
      await peer.push(target.shareId!, { relay: addr(relays.peer) });
      const result = await punching;
      assert.ok(result.ok, JSON.stringify(events));
      assert.equal(result.path.kind, 'relay');
      assert.equal(result.path.peeraddr, addr(relays.peer), 'connected through the relay its peer handed it');
      assert.equal(result.peerShareId, peer.shareId);
      assert.equal(got.third, 0, 'the third party\'s relay got nothing');
      result.path.close();
      relays.peer.close(); relays.third.close();
      await Promise.all([target.close(), peer.close(), third.close()]);
    }));
}

test(`finding 7: exchange datagrams from anyone while a punch runs are kept for ${EARLY_SENDERS} senders and ${EARLY_SEQS} numbers each; the rest is counted and dropped`, () =>
  withTracker({ io: TEST_IO }, async (_t, tracker) => {
    const target = new TrackerClient({ tracker: { host: tracker.address, port: tracker.port }, socket: { host: '127.0.99.31' } });
    const stats: PunchStats = { earlyKept: 0, earlyDropped: 0 };
    const events: PunchEvent[] = [];
    const stop = new AbortController();
    const punching = punch({ client: target, discover: false, timeoutMs: 30 * EXPECT_MS, signal: stop.signal, stats, onEvent: (e) => events.push(e) });
    await until('the punch announced', () => events.some((e) => e.event === 'announced'));
    const local = await target.ready();
    const senders = await Promise.all(Array.from({ length: EARLY_SENDERS + 2 }, () => bound('127.0.99.32')));
    const perSender = EARLY_SEQS + 100;
    let sent = 0;
    // in batches the socket's default receive buffer holds (~250 small datagrams), each waited for before the next
    for (let from = 0; from < perSender; from += 10) {
      for (const s of senders) for (let seq = from; seq < Math.min(perSender, from + 10); seq++) { s.send(dataMessage(seq), local.port, local.address); sent++; }
      await until(`${sent} datagrams counted (kept ${stats.earlyKept}, dropped ${stats.earlyDropped})`, () => stats.earlyKept + stats.earlyDropped === sent);
    }
    assert.equal(stats.earlyKept, EARLY_SENDERS * EARLY_SEQS);
    assert.equal(stats.earlyDropped, senders.length * perSender - EARLY_SENDERS * EARLY_SEQS);
    stop.abort();
    assert.equal((await punching).ok, false);
    for (const s of senders) s.close();
    await target.close();
  }));
