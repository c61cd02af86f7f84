// Every assert.ok here carries a message: on Node 20 under tsx, a failing
// assert.ok without one can hang while Node reads the source to build it.

/**
 * The typed client against the real tracker over loopback: announce, pulse,
 * push and income in both dialects, retries, abort, close, and the punch
 * helper and CLI commands built on it.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import type { RemoteInfo, Socket } from 'node:dgram';
import { once } from 'node:events';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  TrackerClient,
  TrackerError,
  formatPeerAddr,
  parsePeerAddr,
  punch,
  runClientCommand,
} from '../src/client/index.js';
import type { IncomeEvent, TrackerClientOptions } from '../src/client/index.js';
import { startTracker } from '../src/tracker.js';
import { EXPECT_MS, TEST_IO } from './helpers/wire.js';

type Tracker = Awaited<ReturnType<typeof startTracker>>;

/**
 * A loopback address of its own, for a client that must have no session: on 127.0.0.1 an
 * ephemeral port may be one a closed client of an earlier test announced from (its session lives on).
 */
const fresh = (n: number): { host: string } => ({ host: `127.0.98.${n}` });

/** A punch's timeout where it must connect: it only bounds a failing test. */
const PUNCH_MS = 30_000;

/** `p`, or a rejection after EXPECT_MS: the deadline only bounds a failing test. */
function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no ${what} within ${EXPECT_MS} ms`)), EXPECT_MS); });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

let tracker: Tracker;
let trackerAddr: { host: string; port: number };
const clients: TrackerClient[] = [];

before(async () => {
  tracker = await startTracker({ host: '127.0.0.1', port: 0, shards: 2, io: TEST_IO });
  const a = tracker.addresses[0];
  assert.ok(a, 'the tracker reports its address');
  trackerAddr = { host: a.address, port: a.port };
});
after(async () => {
  await tracker.close();
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

function client(opts: Partial<TrackerClientOptions> = {}): TrackerClient {
  const c = new TrackerClient({ tracker: trackerAddr, retryIntervalMs: 100, ...opts });
  clients.push(c);
  return c;
}

/** A UDP port where nobody answers. */
async function silentPort(): Promise<{ socket: Socket; port: number }> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
  socket.on('error', () => undefined);
  return { socket, port: socket.address().port };
}

/**
 * A one-client UDP relay in front of the tracker that can drop requests and
 * switch to another tracker (which then knows nothing of our session). Once
 * switched, late replies from the old one are dropped, as a changed route would.
 */
async function relay(target: { host: string; port: number }, dropFirst = 0) {
  const front = dgram.createSocket('udp4');
  const back = dgram.createSocket('udp4');
  let peer: RemoteInfo | undefined;
  let upstream = target;
  let toDrop = dropFirst;
  let dropped = 0;
  let forwarded = 0;
  front.on('message', (msg, rinfo) => {
    peer = rinfo;
    if (toDrop > 0) {
      toDrop--;
      dropped++;
      return;
    }
    forwarded++;
    back.send(msg, upstream.port, upstream.host);
  });
  back.on('message', (msg, rinfo) => {
    if (rinfo.port !== upstream.port || rinfo.address !== upstream.host) return;
    if (peer) front.send(msg, peer.port, peer.address);
  });
  await Promise.all([
    new Promise<void>((r) => front.bind(0, '127.0.0.1', () => r())),
    new Promise<void>((r) => back.bind(0, '127.0.0.1', () => r())),
  ]);
  return {
    address: { host: '127.0.0.1', port: front.address().port },
    dropped: () => dropped,
    forwarded: () => forwarded,
    switchTo(t: { host: string; port: number }) {
      upstream = t;
    },
    close() {
      front.close();
      back.close();
    },
  };
}

describe('peer addresses', () => {
  test('parsePeerAddr reads ip:port and [v6]:port, and rejects the rest', () => {
    assert.deepEqual(parsePeerAddr('1.2.3.4:5678'), { host: '1.2.3.4', port: 5678, family: 4 });
    assert.deepEqual(parsePeerAddr('[2001:db8::1]:443'), { host: '2001:db8::1', port: 443, family: 6 });
    for (const bad of ['1.2.3.4', '1.2.3.4:0', '1.2.3.4:65536', 'example.com:80', '2001:db8::1:80', '[::1]80', '1.2.3.4:8x']) {
      assert.throws(() => parsePeerAddr(bad), RangeError, bad);
    }
    assert.equal(formatPeerAddr('::1', 9), '[::1]:9');
    assert.equal(formatPeerAddr('10.0.0.1', 9), '10.0.0.1:9');
  });
});

describe('documented dialect', () => {
  test('announce resolves with a 12-character shareId and emits announced', async () => {
    const c = client();
    const announced = once(c, 'announced');
    const shareId = await c.announce();
    assert.match(shareId, /^\S{12}$/);
    assert.equal(c.shareId, shareId);
    assert.deepEqual(await announced, [shareId]);
    // The legacy duplicate that follows changes nothing, and announcing again keeps the id.
    assert.equal(await c.announce(), shareId);
  });

  test('announce is retried until the tracker answers', async () => {
    const r = await relay(trackerAddr, 2);
    try {
      const c = client({ tracker: r.address, retryIntervalMs: 50 });
      assert.match(await c.announce({ timeoutMs: EXPECT_MS }), /^\S{12}$/);
      // counted, not timed: the first two were lost, a third one got through
      assert.equal(r.dropped(), 2, 'two announces dropped');
      assert.ok(r.forwarded() >= 1, 'a retry reached the tracker');
    } finally {
      r.close();
    }
  });

  test('pulse reports status 0 for a live session and 1 for none', async () => {
    const live = client();
    const shareId = await live.announce();
    assert.deepEqual(await live.pulse(), { status: '0', overriden: false, shareId });

    const stranger = client({ reannounce: false, socket: fresh(1) });
    const r = await stranger.pulse();
    assert.equal(r.status, '1');
  });

  test('pulse can regenerate the shareId and override the multiaddr others receive', async () => {
    // not re-sent while the reply is on its way, however slow: a second regeneration would retire the first id
    const a = client({ retryIntervalMs: EXPECT_MS });
    const first = await a.announce();
    const announced = once(a, 'announced');
    const regen = await a.pulse({ regenerateShareId: true });
    assert.equal(regen.status, '0');
    assert.ok(regen.shareId && regen.shareId !== first, 'a new shareId');
    assert.equal(a.shareId, regen.shareId);
    assert.deepEqual(await announced, [regen.shareId]);

    const multiaddr = '/ip4/192.0.2.7/udp/4001/quic';
    const over = await a.pulse({ override: true, multiaddr });
    assert.equal(over.overriden, true);
    const b = client();
    await b.announce();
    const found = await b.push(regen.shareId);
    assert.equal(found.multiaddr, multiaddr);
  });

  test('automatic pulses run after announce and stop on close', async () => {
    const c = client({ pulseIntervalMs: 40 });
    await c.announce();
    let pulses = 0;
    let third!: () => void;
    const thirdPulse = new Promise<void>((r) => { third = r; });
    c.on('pulse', (p) => {
      assert.equal(p.status, '0');
      if (++pulses === 3) third();
    });
    await within(thirdPulse, 'third automatic pulse'); // however long they take: none was asked for
    await c.close();
    const seen = pulses;
    await new Promise((r) => setTimeout(r, 150)); // a 40 ms pulse timer still running would fire before this one
    assert.equal(pulses, seen, 'no pulse after close');
  });

  test('a lost session is noticed by the next pulse and re-announced (a client without a token; a token client: client-tokens.test.ts)', async () => {
    const other = await startTracker({ host: '127.0.0.1', port: 0, shards: 2, io: TEST_IO });
    const r = await relay(trackerAddr);
    try {
      const c = client({ tracker: r.address, pulseIntervalMs: 50, token: false });
      const first = await c.announce();
      // Behind the relay, the client's address now belongs to a tracker that never saw it.
      const otherAddr = other.addresses[0] as { address: string; port: number };
      r.switchTo({ host: otherAddr.address, port: otherAddr.port });
      const [lost] = await once(c, 'pulse'); // from the other tracker: the relay drops the old one's late replies
      assert.equal(lost.status, '1');
      const [again] = await once(c, 'announced');
      assert.match(again, /^\S{12}$/);
      assert.equal(c.shareId, again, `the client holds the new shareId (was ${first})`);
      const [ok] = await once(c, 'pulse');
      assert.equal(ok.status, '0');
    } finally {
      r.close();
      await other.close();
    }
  });

  test('push returns the peer address, and the target gets income with ours', async () => {
    const a = client();
    const b = client();
    const idA = await a.announce();
    const idB = await b.announce();
    const income = once(a, 'income') as Promise<[IncomeEvent]>;
    const pushed = once(b, 'pushReceived');
    const res = await b.push(idA);
    const portA = (await a.ready()).port;
    const portB = (await b.ready()).port;
    assert.equal(res.peeraddr, `127.0.0.1:${portA}`);
    assert.equal(res.peerShareId, idA);
    assert.equal(res.host, '127.0.0.1');
    assert.equal(res.port, portA);
    assert.equal((await pushed)[0].peeraddr, res.peeraddr);
    const [inc] = await income;
    assert.equal(inc.peeraddr, `127.0.0.1:${portB}`);
    assert.equal(inc.peerShareId, idB);
  });

  test('push to an unknown shareId rejects with UNKNOWN_SHARE_ID', async () => {
    const c = client();
    await c.announce();
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    await assert.rejects(c.push('nosuchshare0'), (e: unknown) => e instanceof TrackerError && e.code === 'UNKNOWN_SHARE_ID');
    assert.equal((errors[0] as TrackerError | undefined)?.code, 'UNKNOWN_SHARE_ID');
  });

  test('push without a session announces first, or rejects with NO_SESSION if told not to', async () => {
    const target = client();
    const idT = await target.announce();
    const eager = client({ socket: fresh(2) });
    const res = await eager.push(idT, { timeoutMs: EXPECT_MS });
    assert.equal(res.peerShareId, idT);
    assert.match(eager.shareId ?? '', /^\S{12}$/);

    const strict = client({ reannounce: false, socket: fresh(3) });
    await assert.rejects(strict.push(idT, { timeoutMs: EXPECT_MS }), (e: unknown) => e instanceof TrackerError && e.code === 'NO_SESSION');
  });

  test('datagrams from anyone but the tracker arrive as message events', async () => {
    const c = client();
    await c.announce();
    const { socket, port } = await silentPort();
    try {
      const msg = once(c, 'message');
      socket.send('hello', (await c.ready()).port, '127.0.0.1');
      const [buf, rinfo] = await msg;
      assert.equal(buf.toString(), 'hello');
      assert.equal(rinfo.port, port);
      const back = once(socket, 'message');
      await c.send('hi back', '127.0.0.1', port);
      assert.equal(String((await back)[0]), 'hi back');
    } finally {
      socket.close();
    }
  });
});

describe('legacy dialect', () => {
  test('announce, alive, push and income speak the desktop client dialect', async () => {
    const a = client({ dialect: 'legacy' });
    const b = client({ dialect: 'legacy' });
    const seen: string[] = [];
    b.on('reply', (r) => seen.push(r.raw.action));
    const idA = await a.announce();
    const idB = await b.announce();
    assert.match(idA, /^\S{12}$/);
    assert.deepEqual(await b.pulse(), { status: '0', overriden: false });
    // Replies arrive in order, so by now the announce replies are in too.
    assert.ok(seen.includes('announced'), `replies: ${seen.join(',')}`);
    assert.ok(seen.includes('alived'), `replies: ${seen.join(',')}`);
    const income = once(a, 'income') as Promise<[IncomeEvent]>;
    const res = await b.push(idA);
    assert.equal(res.peerShareId, idA);
    assert.equal(res.port, (await a.ready()).port);
    assert.equal((await income)[0].peerShareId, idB);
    assert.ok(seen.includes('pushed'), `replies: ${seen.join(',')}`);
  });

  test('alive without a session is answered expired', async () => {
    const c = client({ dialect: 'legacy', reannounce: false, socket: fresh(4) });
    assert.equal((await c.pulse()).status, '1');
  });

  test('override and regeneration are refused in the legacy dialect', () => {
    const c = client({ dialect: 'legacy' });
    assert.throws(() => void c.pulse({ regenerateShareId: true }), TypeError);
  });

  test('the default keep-alive interval is 2 s in legacy and 20 s in documented', () => {
    assert.equal(client({ dialect: 'legacy' }).pulseIntervalMs, 2000);
    assert.equal(client().pulseIntervalMs, 20000);
  });
});

describe('abort and close', () => {
  test('a per-call signal or timeout rejects that call only', async () => {
    const { socket, port } = await silentPort();
    try {
      const c = client({ tracker: { host: '127.0.0.1', port } });
      const ac = new AbortController();
      const pending = c.announce({ signal: ac.signal });
      setTimeout(() => ac.abort(), 50);
      await assert.rejects(pending, { name: 'AbortError' });
      await assert.rejects(c.push('whoever1234', { timeoutMs: 80 }), (e: unknown) => e instanceof TrackerError && e.code === 'TIMEOUT');
      assert.equal(c.closed, false);
    } finally {
      socket.close();
    }
  });

  test('an announce every caller gave up on stops re-sending', async () => {
    const { socket, port } = await silentPort();
    try {
      let received = 0;
      let onMarker: (() => void) | undefined;
      socket.on('message', (m) => {
        if (String(m).includes('"announce"')) received++;
        else if (String(m) === 'marker') onMarker?.();
      });
      const c = client({ tracker: { host: '127.0.0.1', port }, retryIntervalMs: 30 });
      /** The announces that reached the port, once a datagram sent now from the client's socket is in. */
      const arrived = async (): Promise<number> => {
        const marked = new Promise<void>((r) => { onMarker = r; });
        await c.send('marker', '127.0.0.1', port);
        await marked;
        return received;
      };
      // two callers share one announce: one gives up by its timeout, the other by its signal
      const ac = new AbortController();
      const byTimeout = c.announce({ timeoutMs: 100 });
      const bySignal = c.announce({ signal: ac.signal });
      await assert.rejects(byTimeout, (e: unknown) => e instanceof TrackerError && e.code === 'TIMEOUT');
      const atTimeout = await arrived();
      // it is re-sent every 30 ms while one caller waits: wait for it, however slow
      const enough = Math.max(3, atTimeout + 1);
      for (const end = Date.now() + EXPECT_MS; received < enough;) {
        assert.ok(Date.now() < end, `${received} announces sent in ${EXPECT_MS} ms at a 30 ms retry interval`);
        await new Promise((r) => setTimeout(r, 10));
      }
      ac.abort();
      await assert.rejects(bySignal, { name: 'AbortError' });
      // a 30 ms retry timer still running would fire before each of these 150 ms ones: two counts
      // taken after them differ if it did (the first one also takes in any sent before the abort)
      const pause = (): Promise<unknown> => new Promise((r) => setTimeout(r, 150));
      await pause();
      const atGiveUp = await arrived();
      await pause();
      assert.equal(await arrived(), atGiveUp, 'no announce after every caller gave up');
    } finally {
      socket.close();
    }
  });

  test('the client signal closes the client and rejects what is pending', async () => {
    const { socket, port } = await silentPort();
    try {
      const ac = new AbortController();
      const c = client({ tracker: { host: '127.0.0.1', port }, signal: ac.signal });
      const pending = c.announce();
      const closed = once(c, 'close');
      setTimeout(() => ac.abort(), 50);
      await assert.rejects(pending, (e: unknown) => e instanceof TrackerError && e.code === 'CLIENT_CLOSED');
      await closed;
      assert.equal(c.closed, true);
      await assert.rejects(c.announce(), (e: unknown) => e instanceof TrackerError && e.code === 'CLIENT_CLOSED');
    } finally {
      socket.close();
    }
  });

  test('close is idempotent and works before the socket ever opened', async () => {
    const c = client();
    await c.close();
    await c.close();
    const used = client();
    await used.announce();
    await Promise.all([used.close(), used.close()]);
    await assert.rejects(used.send('x', '127.0.0.1', 9), (e: unknown) => e instanceof TrackerError && e.code === 'CLIENT_CLOSED');
  });

  test('an already aborted signal gives a closed client', async () => {
    const c = client({ signal: AbortSignal.abort() });
    assert.equal(c.closed, true);
    await assert.rejects(c.announce(), (e: unknown) => e instanceof TrackerError && e.code === 'CLIENT_CLOSED');
  });
});

describe('punch helper over loopback', () => {
  test('two clients open a direct path and keep using their sockets', async () => {
    const a = client();
    const b = client();
    const idB = await b.announce();
    const [ra, rb] = await Promise.all([
      punch({ client: a, peer: idB, timeoutMs: PUNCH_MS, graceMs: 100 }),
      punch({ client: b, timeoutMs: PUNCH_MS, graceMs: 100 }),
    ]);
    assert.ok(ra.ok && rb.ok, `${JSON.stringify(ra)} ${JSON.stringify(rb)}`);
    assert.equal(ra.port, (await b.ready()).port);
    assert.equal(rb.port, (await a.ready()).port);
    assert.notEqual(ra.port, trackerAddr.port);
    // Probes from the grace period may still be in flight: wait for ours.
    const direct = new Promise<RemoteInfo>((resolve) =>
      b.on('message', (m, rinfo) => {
        if (String(m) === 'direct') resolve(rinfo);
      }),
    );
    await a.send('direct', ra.host, ra.port);
    assert.equal((await direct).port, (await a.ready()).port);
  });

  test('without anyone pushing it fails within its timeout and says why', async () => {
    const c = client();
    // announced already, and no discovery: the 0.3 s are spent waiting for a push alone, on any machine
    await c.announce();
    const events: unknown[] = [];
    // on time: its 0.3 s timer is due before this 1 s one, so it fires first however late both run
    let late = false;
    const reference = setTimeout(() => { late = true; }, 1000);
    const r = await punch({ client: c, timeoutMs: 300, discover: false, onEvent: (e) => events.push(e) });
    clearTimeout(reference);
    assert.deepEqual(r, { ok: false, reason: 'nobody pushed to us within 0.3 s' });
    assert.equal(late, false, 'fails on time');
    assert.deepEqual(events.at(-1), { event: 'failed', reason: 'nobody pushed to us within 0.3 s' });
  });
});

describe('client CLI commands', () => {
  const tr = (): string => `${trackerAddr.host}:${trackerAddr.port}`;
  /** --timeout where a reply is expected (the default is 5 s): it only bounds a failing test. */
  const EXPECT_S = String(EXPECT_MS / 1000);
  /** --timeout for a punch that must connect. */
  const PUNCH_S = String(PUNCH_MS / 1000);
  /** The shareId a running punch printed in its "announced" line. */
  async function announcedIn(out: string[], run: Promise<number>): Promise<string> {
    let ended = false;
    run.then(() => { ended = true; }, () => { ended = true; });
    for (const end = Date.now() + EXPECT_MS; ;) {
      const line = out.find((l) => l.includes('"announced"'));
      if (line !== undefined) return (JSON.parse(line) as { shareId: string }).shareId;
      assert.ok(!ended && Date.now() < end, `no announced line: ${out.join(' ')}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  async function cli(cmd: string, args: string[], signal?: AbortSignal) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runClientCommand(cmd, args, { stdout: (l) => out.push(l), stderr: (l) => err.push(l), signal: signal ?? new AbortController().signal });
    return { code, lines: out.map((l) => JSON.parse(l) as { action?: string; event?: string; data?: Record<string, string> }), err: err.join('\n') };
  }

  test('announce prints the replies as JSON lines', async () => {
    const r = await cli('announce', ['--tracker', tr(), '--timeout', EXPECT_S]);
    assert.equal(r.code, 0);
    assert.ok(r.lines.some((l) => l.action === 'announceReceived' && /^\S{12}$/.test(l.data?.shareId ?? '')), JSON.stringify(r.lines));
  });

  test('pulse and push announce first; push prints pushReceived, or fails with the error code', async () => {
    const target = client();
    const id = await target.announce();
    const pulse = await cli('pulse', ['--tracker', tr(), '--timeout', EXPECT_S]);
    assert.equal(pulse.code, 0);
    assert.equal(pulse.lines.find((l) => l.action === 'pulseReceived')?.data?.status, '0');
    const push = await cli('push', ['--tracker', tr(), '--timeout', EXPECT_S, id]);
    assert.equal(push.code, 0);
    assert.equal(push.lines.find((l) => l.action === 'pushReceived')?.data?.peerShareId, id);
    const bad = await cli('push', ['--tracker', tr(), '--timeout', EXPECT_S, 'nosuchshare0']);
    assert.equal(bad.code, 1);
    assert.match(JSON.stringify(bad.lines.at(-1)), /"event":"failed".*UNKNOWN_SHARE_ID/);
  });

  test('pulse --skip-announce --dialect legacy shows expired', async () => {
    const r = await cli('pulse', ['--tracker', tr(), '--skip-announce', '--dialect', 'legacy', '--timeout', EXPECT_S]);
    assert.equal(r.code, 0);
    assert.deepEqual(r.lines, [{ action: 'expired' }]);
  });

  test('usage errors exit 2 with a message', async () => {
    for (const args of [[], ['--tracker', 'nocolon'], ['--tracker', tr(), '--dialect', 'klingon'], ['--tracker', tr(), '--bogus']]) {
      const r = await cli('announce', args);
      assert.equal(r.code, 2, JSON.stringify(args));
      assert.match(r.err, /sobani-tracker announce: /);
    }
    assert.equal((await cli('push', ['--tracker', tr()])).code, 2);
  });

  test('shareIds that begin with a dash are values, not options', async () => {
    // '-' is in the shareId alphabet, so one id in 64 starts with it.
    for (const args of [[tr(), '-nosuchshar'], [tr(), '--share-id', '-nosuchshar']]) {
      const r = await cli('push', ['--timeout', EXPECT_S, '--tracker', ...args]);
      assert.equal(r.code, 1, `${JSON.stringify(args)}: ${r.err}`);
      assert.match(JSON.stringify(r.lines.at(-1)), /UNKNOWN_SHARE_ID/);
    }
    const p = await cli('punch', ['--tracker', tr(), '--peer', '-nosuchshar', '--timeout', EXPECT_S]); // it fails at the push's answer
    assert.equal(p.code, 1, p.err);
    assert.match(JSON.stringify(p.lines.at(-1)), /"event":"failed".*UNKNOWN_SHARE_ID/);
  });

  test('punch: both sides print connected with each other address', async () => {
    const outB: string[] = [];
    const b = runClientCommand('punch', ['--tracker', tr(), '--timeout', PUNCH_S], { stdout: (l) => outB.push(l), signal: new AbortController().signal });
    const idB = await announcedIn(outB, b);
    const a = await cli('punch', ['--tracker', tr(), '--peer', idB, '--timeout', PUNCH_S]);
    assert.equal(a.code, 0);
    assert.equal(await b, 0);
    const connA = a.lines.find((l) => l.event === 'connected') as { peeraddr: string } | undefined;
    const connB = outB.map((l) => JSON.parse(l) as { event: string; peeraddr?: string }).find((l) => l.event === 'connected');
    assert.ok(connA && connB, `A: ${JSON.stringify(a.lines)} B: ${outB.join(' ')}`);
    assert.notEqual(connA.peeraddr, tr());
    assert.notEqual(connB.peeraddr, tr());
    // this tracker has no second address: the NAT type is unknown, and the plain punch is used
    assert.deepEqual(a.lines[0], { event: 'nat', nat: 'unknown', mapped: `127.0.0.1:${(a.lines[0] as { mapped: string }).mapped.split(':')[1]}`,
      reason: 'the tracker has no second address (no OTHER-ADDRESS)' });
    assert.equal((a.lines.find((l) => l.event === 'peer') as { strategy?: string }).strategy, 'direct');
  });

  test('punch --exchange: each side sends 50 numbered datagrams a second over the path, and counts the other\'s', async () => {
    const outB: string[] = [];
    const b = runClientCommand('punch', ['--tracker', tr(), '--timeout', PUNCH_S, '--exchange', '1'], { stdout: (l) => outB.push(l), signal: new AbortController().signal });
    const idB = await announcedIn(outB, b);
    const a = await cli('punch', ['--tracker', tr(), '--peer', idB, '--timeout', PUNCH_S, '--exchange', '1']);
    assert.equal(a.code, 0);
    assert.equal(await b, 0);
    const exA = a.lines.find((l) => l.event === 'exchanged') as unknown as { sent: number; received: number };
    const exB = outB.map((l) => JSON.parse(l) as { event: string; sent: number; received: number }).find((l) => l.event === 'exchanged')!;
    assert.equal(exA.sent, 50);
    assert.equal(exB.sent, 50);
    assert.equal(exA.received, exB.sent, 'loopback loses nothing');
    assert.equal(exB.received, exA.sent);
  });

  test('punch without a peer fails after --timeout, exit 1', async () => {
    // long enough for discovery and the announce on any machine, so the wait for a push is what times out
    const r = await cli('punch', ['--tracker', tr(), '--timeout', EXPECT_S]);
    assert.equal(r.code, 1);
    assert.deepEqual(r.lines.at(-1), { event: 'failed', reason: `nobody pushed to us within ${EXPECT_S} s` });
  });
});
