// A call that survives a network change (issue 24), on the client's side, over
// real UDP on loopback: the exchange's end is an event, not a clock; discovery's
// wait is an option; a client notices it moved; a path migrates without a close.
// The namespace-lab scenarios (a NAT switching its public IP mid-exchange) are in
// test/nat-roaming.test.ts.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import type os from 'node:os';
import type { RemoteInfo, Socket } from 'node:dgram';
import { after, afterEach, before, describe, test } from 'node:test';
import { ATTR, CLASS_REQUEST, CLASS_SUCCESS, METHOD, MessageBuilder, decodeMessage, messageType } from '../src/stun/codec.js';
import { dataEndSent, dataSeq, exchange, probe, probeSender, socketPath, type Peer, type PeerPath } from '../src/client/peer-path.js';
import { MigratingPath, Roaming, type RoamingEvent } from '../src/client/roaming.js';
import { formatPeerAddr } from '../src/client/peer-addr.js';
import type { IncomeEvent, TrackerClientOptions } from '../src/client/tracker-client.js';
import { startTracker } from '../src/tracker.js';
import { punch, type PunchEvent } from '../src/client/punch.js';
import { TrackerClient } from '../src/client/tracker-client.js';
import { EXPECT_MS, TEST_IO, onceInNativePass } from './helpers/wire.js';

// None of this exercises the tracker's datagram I/O path.
const skip = onceInNativePass('client-side only: no tracker I/O');

const sockets: Socket[] = [];
async function bound(): Promise<Socket> {
  const s = dgram.createSocket('udp4');
  s.on('error', () => undefined);
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  sockets.push(s);
  return s;
}
after(() => { for (const s of sockets) s.close(); });

/** A path from `s` to `to`, counting what it sends. */
function pathOver(s: Socket, to: Socket, onSend?: (msg: Buffer) => void): PeerPath {
  const subscribe = (fn: (msg: Buffer, from: RemoteInfo) => void): (() => void) => { s.on('message', fn); return () => s.off('message', fn); };
  return socketPath('direct', (msg, address, port) => { onSend?.(msg); s.send(msg, port, address); }, { address: '127.0.0.1', port: to.address().port }, subscribe);
}

describe('the exchange ends on the peer\'s end marker, not on a clock', { skip }, () => {
  test('a peer that starts only after we sent our last datagram is still counted in full, and both sides end (no fixed tail)', async () => {
    const [sa, sb] = await Promise.all([bound(), bound()]);
    let aSentData = 0;
    let aDone!: () => void;
    const aFinishedSending = new Promise<void>((r) => { aDone = r; });
    const pa = pathOver(sa, sb, (msg) => { if (dataSeq(msg) >= 0 && ++aSentData === 10) aDone(); });
    const pb = pathOver(sb, sa);
    // B's side listens from the start (as punch's early set does) and starts its exchange only once A sent everything
    const early = new Set<number>();
    const earlyListener = (msg: Buffer): void => { const seq = dataSeq(msg); if (seq >= 0) early.add(seq); };
    sb.on('message', earlyListener);
    // a bound no test waits out: only the peer's marker can end A's wait
    const a = exchange(pa, 0.2, new Set(), { endWaitMs: 600_000 });
    await aFinishedSending;
    sb.off('message', earlyListener);
    const b = exchange(pb, 0.2, early, { endWaitMs: 600_000 });
    const [ra, rb] = await Promise.all([a, b]);
    assert.deepEqual(ra, { sent: 10, received: 10 });
    assert.deepEqual(rb, { sent: 10, received: 10 });
  });

  test('the end marker carries the count', () => {
    assert.equal(dataEndSent(Buffer.from('{"action":"data-end","sent":42}')), 42);
    assert.equal(dataEndSent(Buffer.from('{"action":"data","seq":42}')), -1);
  });
});

/** A STUN server that answers a Binding only on its `answerOn`-th retransmission (no OTHER-ADDRESS: the NAT type is then "unknown" for a known reason). */
async function slowStun(answerOn: number): Promise<{ socket: Socket; seen: () => number }> {
  const s = await bound();
  let seen = 0;
  s.on('message', (msg, from) => {
    const m = decodeMessage(msg);
    if (typeof m === 'string' || m.cls !== CLASS_REQUEST) return; // an announce (JSON): never answered here
    if (++seen < answerOn) return;
    const reply = new MessageBuilder(messageType(METHOD.BINDING, CLASS_SUCCESS), m.transactionId)
      .addAddress(ATTR.XOR_MAPPED_ADDRESS, from.address, from.port).build({ withFingerprint: true });
    s.send(reply, from.port, from.address);
  });
  return { socket: s, seen: () => seen };
}

describe('NAT discovery waits as long as it is told', { skip }, () => {
  test('a Binding answered only after 8 sends (250 ms apart) still counts with discoverTimeoutMs: the wait is an option, not 1000 ms', async () => {
    const stun = await slowStun(8);
    const c = new TrackerClient({ tracker: { host: '127.0.0.1', port: stun.socket.address().port }, retryIntervalMs: 100 });
    const stop = new AbortController();
    const events: PunchEvent[] = [];
    let natSeen!: () => void;
    const sawNat = new Promise<void>((resolve) => { natSeen = resolve; });
    const run = punch({ client: c, discoverTimeoutMs: EXPECT_MS, timeoutMs: 10 * EXPECT_MS, signal: stop.signal,
      onEvent: (e) => { events.push(e); if (e.event === 'nat') natSeen(); } });
    await sawNat;
    stop.abort();
    assert.equal((await run).ok, false);
    await c.close();
    assert.equal(stun.seen() >= 8, true);
    const nat = events.find((e) => e.event === 'nat') as Extract<PunchEvent, { event: 'nat' }>;
    // answered: the reason is the missing second address, not "the tracker did not answer STUN"
    assert.equal(nat.reason, 'the tracker has no second address (no OTHER-ADDRESS)');
    assert.match(String(nat.mapped), /^127\.0\.0\.1:\d+$/);
  });
});

describe('MigratingPath: the application holds one path while the way under it changes', { skip }, () => {
  test('listeners stay subscribed across a move, sends follow it, the previous way is closed and the path is not', async () => {
    const [s, p1, p2] = await Promise.all([bound(), bound(), bound()]);
    let firstClosed = false;
    const first = socketPath('direct', (m, a, port) => s.send(m, port, a), { address: '127.0.0.1', port: p1.address().port },
      (fn) => { s.on('message', fn); return () => s.off('message', fn); }, () => { firstClosed = true; });
    const path = new MigratingPath(first);
    const got: string[] = [];
    path.onMessage((m) => got.push(m.toString()));
    const arrived = (n: number) => until(() => got.length >= n);
    p1.send('one', s.address().port, '127.0.0.1');
    await arrived(1);
    path.migrate(pathOver(s, p2));
    assert.equal(firstClosed, true);
    assert.equal(path.closed, false);
    assert.equal(path.peeraddr, `127.0.0.1:${p2.address().port}`);
    p2.send('two', s.address().port, '127.0.0.1');
    await arrived(2);
    const atP2 = once(p2, 'message');
    path.send(Buffer.from('to-two'));
    assert.equal(String((await atP2)[0]), 'to-two');
    assert.deepEqual(got, ['one', 'two']);
  });
});

/** Resolves once `cond()` holds (polled; EXPECT_MS only bounds a failing test). */
async function until(cond: () => boolean, what = 'the condition'): Promise<void> {
  const deadline = Date.now() + EXPECT_MS;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${EXPECT_MS} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('Roaming against a tracker on loopback', { skip }, () => {
  let tracker: Awaited<ReturnType<typeof startTracker>>;
  let at: { host: string; port: number };
  const clients: TrackerClient[] = [];
  const roamings: Roaming[] = [];
  before(async () => {
    tracker = await startTracker({ host: '127.0.0.1', port: 0, shards: 2, io: TEST_IO, logLevel: 'warn' });
    const a = tracker.addresses[0]!;
    at = { host: a.address, port: a.port };
  });
  after(async () => { await tracker.close(); });
  afterEach(async () => {
    for (const r of roamings.splice(0)) r.close();
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  let next = 10;
  /** A client on a loopback address of its own (no earlier session there), announced. */
  async function announced(opts: Partial<TrackerClientOptions> = {}): Promise<{ c: TrackerClient; id: string; addr: { address: string; port: number } }> {
    const c = new TrackerClient({ tracker: at, retryIntervalMs: 100, autoPulse: false, socket: { host: `127.0.97.${next++}` }, ...opts });
    clients.push(c);
    const id = await c.announce({ timeoutMs: EXPECT_MS });
    const { address, port } = await c.ready();
    return { c, id, addr: { address, port } };
  }
  const peerOf = (id: string, addr: { address: string; port: number }): Peer =>
    ({ host: addr.address, port: addr.port, peeraddr: formatPeerAddr(addr.address, addr.port), shareId: id, verified: true, authenticated: false });
  const clientPath = (c: TrackerClient, to: { address: string; port: number }): PeerPath =>
    socketPath('direct', (m, a, p) => { c.send(m, a, p).catch(() => undefined); }, to, (fn) => { c.on('message', fn); return () => c.off('message', fn); });
  const incomeFrom = (c: TrackerClient, id: string): Promise<IncomeEvent> =>
    new Promise((resolve) => { const on = (i: IncomeEvent): void => { if (i.peerShareId === id) { c.off('income', on); resolve(i); } }; c.on('income', on); });

  test('a local interface that changed: it keeps alive at once and pushes again to the peer (the peer gets an income)', async () => {
    const A = await announced(), B = await announced();
    let ifaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = { eth0: [{ address: '192.0.2.1', netmask: '255.255.255.0', family: 'IPv4', mac: '00:00:00:00:00:01', internal: false, cidr: '192.0.2.1/24' }] };
    const events: RoamingEvent[] = [];
    const r = new Roaming({ client: A.c, interfaces: () => ifaces, interfacePollMs: 10, onEvent: (e) => events.push(e) });
    roamings.push(r);
    r.add(peerOf(B.id, B.addr), clientPath(A.c, B.addr));
    const income = incomeFrom(B.c, A.id);
    ifaces = { wlan0: [{ address: '198.51.100.7', netmask: '255.255.255.0', family: 'IPv4', mac: '00:00:00:00:00:02', internal: false, cidr: '198.51.100.7/24' }] };
    const i = await income;
    assert.equal(i.peeraddr, formatPeerAddr(A.addr.address, A.addr.port));
    assert.deepEqual(events.find((e) => e.event === 'moved'), { event: 'moved', side: 'local', reason: 'interfaces' });
  });

  test('a peer that falls silent while it should be sending: reported, and we push again to it', async () => {
    const A = await announced(), B = await announced();
    const events: RoamingEvent[] = [];
    const r = new Roaming({ client: A.c, silenceMs: 50, interfaces: () => ({}), onEvent: (e) => events.push(e) });
    roamings.push(r);
    r.add(peerOf(B.id, B.addr), clientPath(A.c, B.addr));
    const income = incomeFrom(B.c, A.id);
    r.expectTraffic(B.id, true); // and B sends nothing
    await income;
    const silent = events.find((e) => e.event === 'silent');
    assert.ok(silent && silent.event === 'silent' && silent.peerShareId === B.id && silent.ms >= 50, JSON.stringify(events));
    assert.equal(events.some((e) => e.event === 'moved'), false, 'silence alone is no move');
  });

  test('data from an unknown address never moves the path; the tracker naming the peer\'s new address does, after a probe from there proves it is the peer, and the application sees no close', async () => {
    const A = await announced(), B = await announced();
    const events: RoamingEvent[] = [];
    const r = new Roaming({ client: B.c, interfaces: () => ({}), probeIntervalMs: 20, onEvent: (e) => events.push(e) });
    roamings.push(r);
    const path = r.add(peerOf(A.id, A.addr), clientPath(B.c, A.addr));
    const got: string[] = [];
    path.onMessage((m) => got.push(m.toString()));
    // "A at its new address": a socket elsewhere that answers B's knocks as A would
    const moved = dgram.createSocket('udp4');
    moved.on('error', () => undefined);
    await new Promise<void>((res) => moved.bind(0, '127.0.97.200', res));
    sockets.push(moved);
    const movedAt = moved.address();
    // 1. datagrams from there, even a probe with A's shareId, before anyone named the address: nothing moves
    const seenByB: string[] = [];
    B.c.on('message', (m, from) => { if (from.port === movedAt.port) seenByB.push(m.toString()); });
    moved.send(dataMessageText(1), B.addr.port, B.addr.address);
    moved.send(probe(A.id), B.addr.port, B.addr.address);
    await until(() => seenByB.length === 2, 'the stranger\'s datagrams at B');
    assert.equal(path.peeraddr, formatPeerAddr(A.addr.address, A.addr.port));
    assert.equal(got.length, 0);
    assert.equal(events.length, 0, JSON.stringify(events));
    // 2. the tracker says A is there now (an override stands in for a move on a tracker of any kind)
    moved.on('message', (m, from) => { if (probeSender(m) === B.id) moved.send(probe(A.id), from.port, from.address); });
    await A.c.pulse({ override: true, ip: movedAt.address, port: String(movedAt.port) }, { timeoutMs: EXPECT_MS });
    const reconnected = new Promise<void>((res) => r.on('event', (e) => { if (e.event === 'reconnected') res(); }));
    await B.c.push(A.id, { timeoutMs: EXPECT_MS });
    await reconnected;
    assert.equal(path.peeraddr, formatPeerAddr(movedAt.address, movedAt.port));
    assert.equal(path.closed, false);
    const peerMoved = events.find((e) => e.event === 'moved');
    assert.ok(peerMoved && peerMoved.event === 'moved' && peerMoved.side === 'peer' && peerMoved.to === path.peeraddr, JSON.stringify(events));
    moved.send(dataMessageText(2), B.addr.port, B.addr.address);
    await until(() => got.includes(dataMessageText(2)), 'data over the migrated path');
    assert.equal(got.includes(dataMessageText(1)), false, 'the stranger\'s early datagram was never delivered');
  });
});

const dataMessageText = (seq: number): string => `{"action":"data","seq":${seq}}`;

/**
 * An in-process NAT in front of the tracker, for one client: the client sends to
 * `address`, the NAT forwards from its current public socket, and answers come back
 * from `address`. `move()` replaces the public socket (a new public address; the
 * old mapping is gone, and late answers to it are dropped).
 */
async function inProcessNat(tracker: { host: string; port: number }): Promise<{ address: { host: string; port: number }; publicAddr: () => string; move: () => Promise<void> }> {
  const inside = await bound();
  let client: RemoteInfo | undefined;
  let outside: Socket;
  const open = async (): Promise<void> => {
    const s = await bound();
    s.on('message', (msg, from) => {
      if (s !== outside || client === undefined || from.port !== tracker.port) return;
      inside.send(msg, client.port, client.address);
    });
    outside = s;
  };
  await open();
  inside.on('message', (msg, from) => { client = from; outside.send(msg, tracker.port, tracker.host); });
  return {
    address: { host: '127.0.0.1', port: inside.address().port },
    publicAddr: () => `127.0.0.1:${outside.address().port}`,
    move: async () => { const old = outside; await open(); old.close(); sockets.splice(sockets.indexOf(old), 1); },
  };
}

// through the tracker's datagram I/O path: both passes
describe('a token session follows its client to a new public address', () => {
  let tracker: Awaited<ReturnType<typeof startTracker>>;
  let at: { host: string; port: number };
  before(async () => {
    tracker = await startTracker({ host: '127.0.0.1', port: 0, shards: 2, io: TEST_IO, logLevel: 'warn' });
    const a = tracker.addresses[0]!;
    at = { host: a.address, port: a.port };
  });
  after(async () => { await tracker.close(); });

  test('the keep-alive reply names the new address, the client answers the challenge, Roaming reports the move, and a push to the same shareId returns the new address', async () => {
    const nat = await inProcessNat(at);
    const c = new TrackerClient({ tracker: nat.address, retryIntervalMs: 100, autoPulse: false });
    const other = new TrackerClient({ tracker: at, retryIntervalMs: 100, autoPulse: false, socket: { host: '127.0.97.250' } });
    try {
      const id = await c.announce({ timeoutMs: EXPECT_MS });
      assert.ok(c.token, 'the tracker issued a token');
      assert.equal(c.observed, nat.publicAddr());
      const before = nat.publicAddr();
      const events: RoamingEvent[] = [];
      const r = new Roaming({ client: c, interfaces: () => ({}), onEvent: (e) => events.push(e) });
      const moved = new Promise<void>((res) => r.on('event', (e) => { if (e.event === 'moved') res(); }));
      await nat.move();
      await c.pulse({}, { timeoutMs: EXPECT_MS }); // the next keep-alive, from the new address
      await moved;
      r.close();
      assert.deepEqual(events.filter((e) => e.event === 'moved'), [{ event: 'moved', side: 'local', reason: 'observed', from: before, to: nat.publicAddr() }]);
      assert.equal(c.shareId, id, 'the same shareId');
      await other.announce({ timeoutMs: EXPECT_MS });
      const pushed = await other.push(id, { timeoutMs: EXPECT_MS });
      assert.equal(pushed.peeraddr, nat.publicAddr());
    } finally {
      await Promise.all([c.close(), other.close()]);
    }
  });
});
