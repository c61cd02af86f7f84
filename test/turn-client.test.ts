// The TURN client (src/client/turn-client.ts) against a real coturn, over loopback:
// each client and each peer on its own 127.0.120.x address, coturn relaying on
// 127.0.0.1. Credentials are minted as the tracker will mint them
// (src/relay/credentials.ts), and coturn's own turnutils_uclient cross-checks the
// scheme. No timing assertions: counts and bytes, with generous waits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import type { RemoteInfo } from 'node:dgram';
import { TrackerClient } from '../src/client/tracker-client.js';
import { relayPath } from '../src/client/relay-path.js';
import { probe } from '../src/client/peer-path.js';
import { TurnClient, TurnError, socketTransport, trackerTransport, type TurnClientOptions, type TurnTransport } from '../src/client/turn-client.js';
import { mintTurnCredential } from '../src/relay/credentials.js';
import { ATTR, CLASS_ERROR, CLASS_REQUEST, attribute, decodeMessage, errorCode, fingerprint, type StunMessage } from '../src/stun/codec.js';
import { coturnUnavailableReason, withCoturn, type Coturn } from './helpers/coturn.js';
import { EXPECT_MS, onceInNativePass, withTracker } from './helpers/wire.js';

const skip = coturnUnavailableReason() ?? onceInNativePass('the TURN client against coturn has no tracker in it');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A plain UDP socket on its own address, with what it received. */
interface Udp {
  socket: dgram.Socket;
  address: string;
  port: number;
  inbox: { msg: Buffer; from: RemoteInfo }[];
  close(): void;
}

async function udp(address: string): Promise<Udp> {
  const socket = dgram.createSocket('udp4');
  const inbox: Udp['inbox'] = [];
  socket.on('message', (msg, from) => inbox.push({ msg, from }));
  socket.on('error', () => {}); // ICMP unreachable from a released relay port
  await new Promise<void>((r) => socket.bind(0, address, () => r()));
  socket.unref();
  return { socket, address, port: socket.address().port, inbox, close: () => socket.close() };
}

/** Waits until `done()` or `ms` have passed (EXPECT_MS: it only bounds a failing test); returns done(). */
async function until(done: () => boolean, ms = EXPECT_MS): Promise<boolean> {
  const end = Date.now() + ms;
  while (!done() && Date.now() < end) await sleep(20);
  return done();
}

/** Every request sent and response received over a transport, decoded. */
function recording(inner: TurnTransport): TurnTransport & { requests: StunMessage[]; responses: StunMessage[] } {
  const requests: StunMessage[] = [];
  const responses: StunMessage[] = [];
  return {
    ...inner,
    requests,
    responses,
    request: async (msg, host, port, opts) => {
      requests.push(decodeMessage(msg) as StunMessage);
      const reply = await inner.request(msg, host, port, opts);
      responses.push(reply.message);
      return reply;
    },
  };
}

const codeOf = (m: StunMessage): number | undefined => (m.cls === CLASS_ERROR ? errorCode(m)?.code : undefined);

/** A request's timeout is EXPECT_MS (not 5 s): it only bounds a failing test. */
function options(coturn: Coturn, cred = mintTurnCredential(coturn.secret, 'share-a', 600), more: Partial<TurnClientOptions> = {}): TurnClientOptions {
  return { server: { host: coturn.host, port: coturn.port }, username: cred.username, password: cred.credential, timeoutMs: EXPECT_MS, ...more };
}

/** A TurnClient on its own socket at `address`. */
async function allocateOn(address: string, coturn: Coturn, opts: TurnClientOptions = options(coturn)) {
  const s = await udp(address);
  const transport = recording(socketTransport(s.socket));
  const turn = await TurnClient.allocate(transport, opts);
  return { turn, transport, socket: s, close: async () => { await turn.close(); s.close(); } };
}

async function refused(p: Promise<unknown>): Promise<TurnError> {
  const err = await p.then(() => assert.fail('expected a TurnError'), (e: unknown) => e);
  assert.ok(err instanceof TurnError, String(err));
  return err;
}

/**
 * The refusal (401) of a fresh Allocate with `cred` once it has expired: first until our
 * clock is past the expiry in the username, then again until coturn's is too (it reads
 * a clock it updates about once a second, so later on a loaded machine).
 */
async function refusedOnceExpired(coturn: Coturn, cred: ReturnType<typeof mintTurnCredential>, address: string): Promise<TurnError> {
  const expiry = Number(cred.username.slice(0, cred.username.indexOf(':')));
  await sleep(Math.max(0, (expiry + 1) * 1000 - Date.now()));
  const end = Date.now() + EXPECT_MS;
  for (;;) {
    const s = await udp(address);
    try {
      const turn = await TurnClient.allocate(socketTransport(s.socket), options(coturn, cred));
      await turn.close(); // still accepted by coturn's clock
    } catch (e) {
      if (e instanceof TurnError && e.code === 401) return e;
      throw e;
    } finally {
      s.close();
    }
    assert.ok(Date.now() < end, `coturn still accepts ${cred.username} ${EXPECT_MS} ms past its expiry`);
    await sleep(250);
  }
}

test('a minted credential allocates: the first Allocate goes without credentials, the 401 gives REALM and NONCE, the second is authenticated', { skip }, () =>
  withCoturn({}, async (coturn) => {
    const cred = mintTurnCredential(coturn.secret, 'share-a', 600);
    const c = await allocateOn('127.0.120.1', coturn, options(coturn, cred));
    const [first, second] = c.transport.requests;
    assert.equal(c.transport.requests.length, 2);
    assert.equal(codeOf(c.transport.responses[0]!), 401);
    assert.equal(attribute(first!, ATTR.MESSAGE_INTEGRITY), undefined, 'no credentials at first');
    assert.equal(attribute(first!, ATTR.USERNAME), undefined);
    assert.equal(attribute(second!, ATTR.USERNAME)?.toString(), cred.username);
    assert.equal(attribute(second!, ATTR.REALM)?.toString(), coturn.realm);
    assert.ok(attribute(second!, ATTR.NONCE)?.equals(attribute(c.transport.responses[0]!, ATTR.NONCE)!));
    assert.equal(attribute(second!, ATTR.MESSAGE_INTEGRITY)?.length, 20);
    assert.equal(c.turn.relayed.address, coturn.relayIp, 'relayed on coturn\'s relay IP');
    assert.deepEqual({ address: c.turn.mapped.address, port: c.turn.mapped.port }, { address: '127.0.120.1', port: c.socket.port }, 'mapped: our own socket');
    assert.equal(c.turn.lifetime, 600);
    await c.close();
  }));

test('a peer and the client exchange datagrams through the relay both ways: Data and Send indications before ChannelBind, ChannelData after, 500 each way without loss', { skip }, () =>
  withCoturn({}, async (coturn) => {
    const c = await allocateOn('127.0.120.2', coturn);
    const peer = await udp('127.0.120.3');
    const peerAddr = { address: peer.address, port: peer.port };
    const got: { data: string; via: string; from: string }[] = [];
    c.turn.on('data', (data, from, via) => got.push({ data: data.toString(), via, from: `${from.address}:${from.port}` }));
    const toRelay = (s: string | Buffer): void => { peer.socket.send(s, c.turn.relayed.port, c.turn.relayed.address); };

    const release = await c.turn.createPermission(peer.address);
    toRelay('before the channel');
    c.turn.send(Buffer.from('send indication'), peerAddr);
    assert.ok(await until(() => got.length === 1 && peer.inbox.length === 1));
    assert.deepEqual(got[0], { data: 'before the channel', via: 'indication', from: `${peer.address}:${peer.port}` });
    assert.equal(peer.inbox[0]!.msg.toString(), 'send indication');
    assert.equal(`${peer.inbox[0]!.from.address}:${peer.inbox[0]!.from.port}`, `${c.turn.relayed.address}:${c.turn.relayed.port}`, 'from the relayed address');

    // the permission is for the IP: another port of it gets through too
    const samePeerIp = await udp('127.0.120.3');
    samePeerIp.socket.send('another port', c.turn.relayed.port, c.turn.relayed.address);
    assert.ok(await until(() => got.length === 2));
    assert.deepEqual(got[1], { data: 'another port', via: 'indication', from: `${peer.address}:${samePeerIp.port}` });

    const { channel } = await c.turn.bindChannel(peerAddr);
    assert.ok(channel >= 0x4000 && channel <= 0x4fff);
    assert.equal((await c.turn.bindChannel(peerAddr)).channel, channel, 'the same peer keeps its channel');
    got.length = 0;
    peer.inbox.length = 0;
    // odd lengths: unpadded ChannelData is accepted, and coturn's (padded or not) is read right
    toRelay('abcde');
    c.turn.send(Buffer.from('xyz'), peerAddr);
    assert.ok(await until(() => got.length === 1 && peer.inbox.length === 1));
    assert.deepEqual(got[0], { data: 'abcde', via: 'channel', from: `${peer.address}:${peer.port}` });
    assert.equal(peer.inbox[0]!.msg.toString(), 'xyz');
    assert.equal(c.turn.counters.channelDataOut, 1);

    // 500 each way, at once, in windows of 50
    got.length = 0;
    peer.inbox.length = 0;
    const N = 500;
    for (let sent = 0; sent < N; sent += 50) {
      for (let i = sent; i < sent + 50; i++) {
        toRelay(`p${i}`);
        c.turn.send(Buffer.from(`c${i}`), peerAddr);
      }
      await until(() => got.length >= sent + 50 && peer.inbox.length >= sent + 50);
    }
    assert.ok(await until(() => got.length === N && peer.inbox.length === N), `client got ${got.length}, peer got ${peer.inbox.length}`);
    assert.deepEqual(new Set(got.map((g) => g.data)), new Set(Array.from({ length: N }, (_, i) => `p${i}`)));
    assert.deepEqual(new Set(peer.inbox.map((g) => g.msg.toString())), new Set(Array.from({ length: N }, (_, i) => `c${i}`)));
    assert.ok(got.every((g) => g.via === 'channel'));
    assert.equal(c.turn.counters.indicationsOut, 1);
    assert.equal(c.turn.counters.channelDataOut, 1 + N);
    release();
    peer.close();
    samePeerIp.close();
    await c.close();
  }));

test('Refresh: an explicit one is granted; the client refreshes before the allocation expires, and renews held permissions and channels past their lifetimes', { skip }, () =>
  // Each renewal comes seconds before its lifetime ends (the allocation's at half of its 8 s,
  // the others every 0.5 s of 4 s and 5 s): a late timer on a loaded machine does not lose them.
  withCoturn({ extra: ['--max-allocate-lifetime=8', '--permission-lifetime=4', '--channel-lifetime=5'] }, async (coturn) => {
    const c = await allocateOn('127.0.120.4', coturn, options(coturn, undefined, { permissionRefreshMs: 500, channelRefreshMs: 500 }));
    assert.equal(c.turn.lifetime, 8, 'coturn grants at most --max-allocate-lifetime');
    assert.equal(await c.turn.refresh(), 8);
    const lost: TurnError[] = [];
    c.turn.on('lost', (e) => lost.push(e));
    const peer = await udp('127.0.120.5');
    const other = await udp('127.0.120.5'); // same IP, no channel: needs the permission
    const got: string[] = [];
    c.turn.on('data', (d, _from, via) => got.push(`${d}/${via}`));
    await c.turn.createPermission(peer.address);
    await c.turn.bindChannel({ address: peer.address, port: peer.port });
    const refreshes = (): number => c.transport.requests.filter((m) => m.method === 0x004 && m.cls === CLASS_REQUEST).length;
    await sleep(17_000); // over twice every lifetime (wall-clock time: a slow machine only waits longer)
    // the explicit one and two of the client's own (due every 4 s), however late its timers ran
    assert.ok(await until(() => refreshes() >= 3), `${refreshes()} Refresh requests in 17 s of an 8 s lifetime`);
    peer.socket.send('on the channel', c.turn.relayed.port, c.turn.relayed.address);
    other.socket.send('by permission', c.turn.relayed.port, c.turn.relayed.address);
    c.turn.send(Buffer.from('back'), { address: peer.address, port: peer.port });
    assert.ok(await until(() => got.length === 2 && peer.inbox.length === 1), `got ${got.join(', ')}; the peer got ${peer.inbox.length}`);
    assert.deepEqual(got.sort(), ['by permission/indication', 'on the channel/channel']);
    assert.deepEqual(lost, []);
    peer.close();
    other.close();
    await c.close();
  }));

test('a released permission lapses: the peer\'s datagrams stop arriving', { skip }, () =>
  withCoturn({ extra: ['--permission-lifetime=4'] }, async (coturn) => {
    const c = await allocateOn('127.0.120.6', coturn, options(coturn, undefined, { permissionRefreshMs: 250 }));
    const peer = await udp('127.0.120.7');
    // a peer whose permission is held throughout: coturn reads the relayed socket in order, so
    // once its datagram sent after the peer's is in, the peer's was relayed before it, or dropped
    // (or, on a loaded machine, delivered to coturn late: the kernel keeps no loopback order across CPUs)
    const marker = await udp('127.0.120.35');
    const got: string[] = [];
    c.turn.on('data', (d) => got.push(d.toString()));
    const release = await c.turn.createPermission(peer.address);
    await c.turn.createPermission(marker.address);
    const relayedPast = async (what: string): Promise<boolean> => {
      peer.socket.send(what, c.turn.relayed.port, c.turn.relayed.address);
      marker.socket.send(`after ${what}`, c.turn.relayed.port, c.turn.relayed.address);
      assert.ok(await until(() => got.includes(`after ${what}`)), `the marker's datagram after ${what} came through: ${got.join(', ')}`);
      return got.includes(what);
    };
    peer.socket.send('one', c.turn.relayed.port, c.turn.relayed.address);
    assert.ok(await until(() => got.includes('one')), 'relayed while held');
    release();
    // unrenewed, it lapses after its 4 s (at coturn's next timer tick): until then the peer's
    // still come; lapsed, two in a row are dropped
    const end = Date.now() + 4000 + 2 * EXPECT_MS;
    let n = 0;
    for (let dropped = 0; dropped < 2;) {
      assert.ok(Date.now() < end, 'the released permission never lapsed: still renewed?');
      dropped = (await relayedPast(`two ${++n}`)) ? 0 : dropped + 1;
      await sleep(250);
    }
    // and stays lapsed: of the peer's, one and two 1 to j came, with no gap, and nothing after
    assert.equal(await relayedPast('three'), false, 'nothing after the lapse');
    const fromPeer = got.filter((g) => !g.startsWith('after '));
    const twos = fromPeer.filter((g) => g.startsWith('two ')).map((g) => Number(g.slice(4))).sort((a, b) => a - b);
    assert.deepEqual(fromPeer.filter((g) => !g.startsWith('two ')), ['one'], fromPeer.join(', '));
    assert.deepEqual(twos, Array.from({ length: twos.length }, (_, i) => i + 1), `relayed until the lapse, none after: ${fromPeer.join(', ')}`);
    assert.ok(twos.length <= n - 2, `the last two were dropped: ${fromPeer.join(', ')}`);
    peer.close();
    marker.close();
    await c.close();
  }));

test('close sends Refresh 0: coturn frees the allocation (the peer\'s datagrams go nowhere, the socket may allocate again); before it, a second Allocate gets 437', { skip }, () =>
  withCoturn({}, async (coturn) => {
    const s = await udp('127.0.120.8');
    const transport = recording(socketTransport(s.socket));
    const turn = await TurnClient.allocate(transport, options(coturn));
    const second = await refused(TurnClient.allocate(socketTransport(s.socket), options(coturn)));
    assert.equal(second.failure, 'rejected');
    assert.equal(second.code, 437, 'one allocation per 5-tuple');
    const peer = await udp('127.0.120.9');
    let got = 0;
    turn.on('data', () => got++);
    await turn.createPermission(peer.address);
    peer.socket.send('alive', turn.relayed.port, turn.relayed.address);
    assert.ok(await until(() => got === 1));
    const relayed = turn.relayed;

    await turn.close();
    const release = transport.requests.at(-1)!;
    assert.equal(release.method, 0x004, 'a Refresh');
    assert.equal(attribute(release, ATTR.LIFETIME)!.readUInt32BE(0), 0, 'LIFETIME 0');
    assert.equal(transport.responses.at(-1)!.cls, 0x0100, 'granted');
    assert.equal(turn.closed, true);
    await refused(turn.createPermission(peer.address)).then((e) => assert.equal(e.failure, 'closed'));

    // coturn deletes the session on its next timer tick, about a second after the
    // Refresh 0 (until then it still relays, and a new Allocate gets 437); then
    // this socket may allocate again, which proves the old allocation gone
    let again: TurnClient | undefined;
    for (const end = Date.now() + EXPECT_MS; again === undefined && Date.now() < end;) {
      again = await TurnClient.allocate(socketTransport(s.socket), options(coturn)).catch(async (e: TurnError) => {
        assert.equal(e.code, 437, e.message);
        await sleep(250);
        return undefined;
      });
    }
    assert.ok(again, 'allocated again on the same socket');
    const heard: string[] = [];
    again.on('data', (d) => heard.push(d.toString()));
    await again.createPermission(peer.address);
    peer.socket.send('to the old relay', relayed.port, relayed.address);
    peer.socket.send('to the new relay', again.relayed.port, again.relayed.address);
    // the new one hears the old relayed address only if coturn gave the same port back (then both arrive)
    const samePort = again.relayed.port === relayed.port;
    const expected = samePort ? ['to the new relay', 'to the old relay'] : ['to the new relay'];
    assert.ok(await until(() => heard.length >= expected.length), `the new allocation relays: ${heard.join(', ')}`);
    assert.equal(got, 1, 'nothing more through the closed allocation');
    assert.deepEqual([...heard].sort(), expected, `same port: ${samePort}`);
    await again.close();
    peer.close();
    s.close();
  }));

test('a socket closed under a TurnClient: a request rejects (closed), renewals end in \'lost\', no timer throws', { skip }, () =>
  withCoturn({}, async (coturn) => {
    const c = await allocateOn('127.0.120.30', coturn, options(coturn, undefined, { permissionRefreshMs: 200 }));
    await c.turn.createPermission('127.0.120.31');
    const lost = new Promise<TurnError>((resolve) => c.turn.once('lost', resolve));
    c.socket.close();
    const err = await refused(c.turn.refresh());
    assert.equal(err.failure, 'closed');
    assert.equal((await lost).failure, 'closed');
    assert.equal(c.turn.closed, true);
    await sleep(500); // the 200 ms renewal timer is due before this one: it would have fired by now, however late both run
    await c.turn.close(); // nothing left to release, and no throw
  }));

test('close() while a CreatePermission and a ChannelBind are in flight: both reject as closed, nothing is renewed after', { skip }, () =>
  withCoturn({}, async (coturn) => {
    const c = await allocateOn('127.0.120.32', coturn, options(coturn, undefined, { permissionRefreshMs: 100, channelRefreshMs: 100 }));
    const permission = refused(c.turn.createPermission('127.0.120.33'));
    const channel = refused(c.turn.bindChannel({ address: '127.0.120.33', port: 4000 }));
    await c.turn.close();
    assert.equal((await permission).failure, 'closed');
    assert.equal((await channel).failure, 'closed');
    const sent = c.transport.requests.length;
    await sleep(500); // a 100 ms renewal timer still running would fire before this one
    assert.equal(c.transport.requests.length, sent, 'no renewal after close');
    c.socket.close();
  }));

test('a credential past its expiry is refused (401)', { skip }, () =>
  withCoturn({}, async (coturn) => {
    const cred = mintTurnCredential(coturn.secret, 'share-late', 2);
    const err = await refusedOnceExpired(coturn, cred, '127.0.120.10');
    assert.equal(err.failure, 'rejected');
    assert.equal(err.code, 401);
    assert.equal(err.method, 'Allocate');
    assert.match(err.message, /credentials refused/);
  }));

test('a tampered credential, a tampered username and a credential minted with another secret are refused (401)', { skip }, () =>
  withCoturn({}, async (coturn) => {
    const good = mintTurnCredential(coturn.secret, 'share-b', 600);
    const flip = (s: string, i: number): string => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
    const cases = {
      credential: { ...good, credential: flip(good.credential, 5) },
      username: { ...good, username: good.username.replace(/^(\d+)/, (n) => String(Number(n) + 1)) }, // a later expiry
      'other secret': mintTurnCredential('not-the-secret', 'share-b', 600),
    };
    let i = 11;
    for (const [what, cred] of Object.entries(cases)) {
      const s = await udp(`127.0.120.${i++}`);
      const err = await refused(TurnClient.allocate(socketTransport(s.socket), options(coturn, cred)));
      assert.equal(err.code, 401, what);
      s.close();
    }
    // and the untouched one works
    const c = await allocateOn(`127.0.120.${i}`, coturn, options(coturn, good));
    await c.close();
  }));

test('coturn checks a credential\'s expiry only when allocating: after it, the allocation is still refreshed and gets permissions', { skip }, () =>
  withCoturn({}, async (coturn) => {
    // 5 s: the allocation below must be made before the expiry, however slow the machine
    const cred = mintTurnCredential(coturn.secret, 'share-c', 5);
    const c = await allocateOn('127.0.120.15', coturn, options(coturn, cred));
    await refusedOnceExpired(coturn, cred, '127.0.120.36'); // coturn now refuses it to a new allocation
    assert.equal(await c.turn.refresh(), 600);
    await c.turn.createPermission('127.0.120.16');
    await c.close();
  }));

test('438 Stale Nonce is retried with the new nonce', { skip }, () =>
  // 3 s: a retry must reach coturn within a nonce's lifetime, so it must be seconds
  withCoturn({ extra: ['--stale-nonce=3'] }, async (coturn) => {
    const c = await allocateOn('127.0.120.17', coturn);
    // past the nonce's 3 s by our clock; again if coturn's (ticking once a second) had not got there
    let tries = 0;
    do {
      assert.ok(tries++ < 5, 'no 438 in five Refreshes 4.5 s apart');
      await sleep(4500);
      assert.equal(await c.turn.refresh(), 600);
    } while (codeOf(c.transport.responses.at(-2)!) !== 438);
    const codes = c.transport.responses.map(codeOf);
    assert.deepEqual(codes.slice(-2), [438, undefined], 'a 438, then success');
    const [stale, retried] = c.transport.requests.slice(-2);
    assert.ok(!attribute(stale!, ATTR.NONCE)!.equals(attribute(retried!, ATTR.NONCE)!), 'the retry carries the new nonce');
    assert.ok(attribute(retried!, ATTR.NONCE)!.equals(attribute(c.transport.responses.at(-2)!, ATTR.NONCE)!));
    await c.close();
  }));

test('errors name the STUN code: 403 for a peer coturn does not relay to (loopback, without --allow-loopback-peers), 486 over the user quota', { skip }, async () => {
  await withCoturn({ allowLoopbackPeers: false }, async (coturn) => {
    const c = await allocateOn('127.0.120.18', coturn);
    const err = await refused(c.turn.createPermission('127.0.120.19'));
    assert.equal(err.code, 403);
    assert.equal(err.method, 'CreatePermission');
    const bind = await refused(c.turn.bindChannel({ address: '127.0.120.19', port: 5000 }));
    assert.equal(bind.code, 403);
    await c.close();
  });
  await withCoturn({ extra: ['--user-quota=1'] }, async (coturn) => {
    const opts = options(coturn);
    const a = await allocateOn('127.0.120.20', coturn, opts);
    const s = await udp('127.0.120.21');
    const err = await refused(TurnClient.allocate(socketTransport(s.socket), opts));
    assert.equal(err.code, 486);
    assert.match(err.message, /486 .*Quota/);
    s.close();
    await a.close();
  });
});

test('a success response whose MESSAGE-INTEGRITY does not check out is refused: a relayed address rewritten on the way', { skip }, () =>
  withCoturn({}, async (coturn) => {
    const s = await udp('127.0.120.22');
    const inner = socketTransport(s.socket);
    const tampering: TurnTransport = {
      ...inner,
      request: async (msg, host, port, opts) => {
        const reply = await inner.request(msg, host, port, opts);
        const relayed = reply.message.attributes.find((a) => a.type === ATTR.XOR_RELAYED_ADDRESS);
        if (relayed === undefined) return reply;
        // what an on-path attacker can do: change the port, and fix FINGERPRINT (a CRC); not the HMAC
        const raw = Buffer.from(reply.message.raw);
        const at = relayed.value.byteOffset - reply.message.raw.byteOffset;
        raw[at + 3]! ^= 0x01;
        raw.writeUInt32BE(fingerprint(raw, 0, raw.length - 8), raw.length - 4);
        return { ...reply, message: decodeMessage(raw) as StunMessage };
      },
    };
    const err = await refused(TurnClient.allocate(tampering, options(coturn)));
    assert.equal(err.failure, 'unauthenticated');
    // coturn made the allocation: release it the honest way
    const honest = await refused(TurnClient.allocate(inner, options(coturn)));
    assert.equal(honest.code, 437);
    s.close();
  }));

test('a server that does not answer: a timeout, as a TurnError', async () => {
  const silent = await udp('127.0.120.23');
  const s = await udp('127.0.120.24');
  const err = await refused(TurnClient.allocate(socketTransport(s.socket),
    { server: { host: silent.address, port: silent.port }, username: 'u', password: 'p', timeoutMs: 600, retransmitMs: 200 }));
  assert.equal(err.failure, 'timeout');
  assert.equal(err.method, 'Allocate');
  // the 200 ms retransmission is due before the 600 ms timeout, so it fires first however late
  // both ran; it may only not have been received yet
  assert.ok(await until(() => silent.inbox.length >= 2), 'retransmitted');
  silent.close();
  s.close();
});

test('over a TrackerClient: the allocation shares the tracker session\'s socket, and relayPath gives a PeerPath (relay) that carries datagrams both ways and follows the peer\'s probe to another port', { skip }, () =>
  withTracker({}, (_tracker, target) => withCoturn({}, async (coturn) => {
    const client = new TrackerClient({ tracker: { host: target.address, port: target.port }, socket: { host: '127.0.120.25' } });
    const shareId = await client.announce();
    const local = await client.ready();
    const turn = await TurnClient.allocate(trackerTransport(client), options(coturn, mintTurnCredential(coturn.secret, shareId, 60)));
    assert.deepEqual({ address: turn.mapped.address, port: turn.mapped.port }, { address: '127.0.120.25', port: local.port }, 'the tracker session\'s socket');

    const peer = await udp('127.0.120.26');
    const path = await relayPath(turn, { address: peer.address, port: peer.port, shareId: 'peer-share' });
    assert.equal(path.kind, 'relay');
    assert.equal(path.peeraddr, `${peer.address}:${peer.port}`);
    const got: string[] = [];
    const stop = path.onMessage((m) => got.push(m.toString()));
    for (let i = 0; i < 20; i++) {
      path.send(Buffer.from(`to peer ${i}`));
      peer.socket.send(`to client ${i}`, turn.relayed.port, turn.relayed.address);
    }
    assert.ok(await until(() => got.length === 20 && peer.inbox.length === 20), `client ${got.length}, peer ${peer.inbox.length}`);
    assert.ok(peer.inbox.every(({ from }) => from.address === turn.relayed.address && from.port === turn.relayed.port));
    assert.equal(turn.counters.channelDataOut, 20, 'ChannelData out');
    assert.equal((await client.pulse()).status, '0', 'the tracker session lives on beside the relay');

    // the peer's NAT gave it another port towards the relay: a stranger's datagram from there is ignored, its probe moves the path
    const moved = await udp('127.0.120.26');
    moved.socket.send('stranger', turn.relayed.port, turn.relayed.address);
    // sent after it from the same socket, so relayed after it: once the probe is in, the stranger was dropped
    moved.socket.send(probe('peer-share'), turn.relayed.port, turn.relayed.address);
    assert.ok(await until(() => got.length >= 21), `got ${got.length}`);
    assert.deepEqual(got.slice(20), [probe('peer-share').toString()], 'the stranger\'s datagram is not the peer\'s');
    assert.equal(path.peeraddr, `${moved.address}:${moved.port}`);
    path.send(Buffer.from('to the new port'));
    assert.ok(await until(() => moved.inbox.some((x) => x.msg.toString() === 'to the new port')));
    stop();
    path.close();
    await turn.close();
    await client.close();
    peer.close();
    moved.close();
  })));

test('coturn\'s turnutils_uclient accepts credentials from the same secret: its own (-W) and ours (-u, -w); not one minted with another secret', { skip }, () =>
  withCoturn({}, async (coturn) => {
    const uclient = (args: string[]): Promise<{ code: number; out: string }> => new Promise((resolve) => {
      // -y: two clients relay to each other; -c: no RTCP allocation; 1 client pair, 5 messages of 100 bytes
      execFile('turnutils_uclient', ['-y', '-c', '-m', '1', '-n', '5', '-l', '100', '-e', '127.0.0.1', '-p', String(coturn.port), ...args, coturn.host],
        { timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: `${stdout}${stderr}` })); // bounds a failing run only
    });
    const relayed = (r: { code: number; out: string }): boolean => r.code === 0 && /Total lost packets 0 \(/.test(r.out) && /tot_recv_msgs=[1-9]/.test(r.out);

    const own = await uclient(['-W', coturn.secret, '-u', 'uclient']);
    assert.ok(relayed(own), own.out);
    const ours = mintTurnCredential(coturn.secret, 'share-u', 600);
    const withOurs = await uclient(['-u', ours.username, '-w', ours.credential]);
    assert.ok(relayed(withOurs), withOurs.out);
    const other = mintTurnCredential('not-the-secret', 'share-u', 600);
    const refusedRun = await uclient(['-u', other.username, '-w', other.credential]);
    assert.notEqual(refusedRun.code, 0);
    assert.match(refusedRun.out, /Cannot complete Allocation/);
  }));
