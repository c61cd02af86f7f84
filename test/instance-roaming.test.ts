// A token session follows its client to another instance (src/shard/claims.ts,
// src/directory/remote-claims.ts): a real redis-server on a free port, tracker
// processes sharing one --session-key-file, each client on its own loopback IP
// speaking raw datagrams; a client "moves" by sending from the same socket to
// another instance, as when its tracker's name resolves elsewhere.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { Redis } from 'ioredis';
import { until, WirePeer, type Reply } from './helpers/wire.js';
import { secretOfToken, verifyTagged } from '../src/auth/tag.js';
import { SessionKey } from '../src/auth/session-key.js';
import { DirectoryMessages } from '../src/directory/messages.js';
import { runTracker, type Running } from './helpers/process.js';
import { redisMissing, startRedis, type RedisServer } from './helpers/redis.js';
import { freePort, httpGet } from './helpers/ops.js';

const skip = redisMissing() ?? false;

interface Instance { id: string; host: string; port: number; metricsPort: number; proc: Running }
const target = (i: Instance) => ({ address: i.host, port: i.port });

async function startInstance(redis: RedisServer, id: string, host: string, keyFile: string, extra: string[] = []): Promise<Instance> {
  const metricsPort = await freePort();
  const proc = await runTracker(['--host', host, '--port', '0', '--shards', '2', '--directory', redis.url, '--instance-id', id,
    '--session-key-file', keyFile, '--metrics-port', String(metricsPort), ...extra]);
  return { id, host, port: proc.port, metricsPort, proc };
}

async function stopInstance(i: Instance): Promise<void> {
  if (i.proc.child.exitCode === null && i.proc.child.signalCode === null) i.proc.child.kill('SIGTERM');
  await i.proc.exited;
}

async function metric(i: Instance, pattern: RegExp): Promise<number> {
  const m = pattern.exec((await httpGet(i.metricsPort, '/metrics')).body);
  return m ? Number(m[1]) : 0;
}

async function pointerOf(redis: RedisServer, shareId: string, owner: string): Promise<void> {
  await until(`the pointer of ${shareId} names ${owner}`, () => redis.cli('get', `sobani:s:${shareId}`).startsWith(`${owner}\t`));
}

/** A token session at `i`, announced as the bundled client does (padded, with its nat), and kept alive once with its token. */
async function tokenSession(p: WirePeer): Promise<{ token: string; shareId: string; secret: Uint32Array }> {
  const r = await p.request({ action: 'announce', token: true, nat: 'endpoint-independent', pad: 'x'.repeat(40) }, 'announceReceived');
  const token = r.data!.token as string;
  await p.request({ action: 'pulse', token }, 'pulseReceived');
  return { token, shareId: token.slice(0, token.indexOf('.')), secret: secretOfToken(token)! };
}

const tagged = (r: Reply, secret: Uint32Array): boolean => verifyTagged(Buffer.from(r.raw), secret);

/** A pulse reply that served the session (not a challenge), for this shareId, tagged with its secret. */
function assertServed(r: Reply, shareId: string, secret: Uint32Array): void {
  assert.equal(r.data!.status, '0', r.raw);
  assert.equal(r.data!.shareId, shareId, 'the same shareId');
  assert.equal(r.data!.challenge, undefined, `served, not challenged: ${r.raw}`);
  assert.equal(tagged(r, secret), true, r.raw);
}

describe('a token session follows its client to another instance', { skip }, () => {
  let redis: RedisServer;
  let a: Instance, b: Instance;
  let clientIp = 1;
  const KEY_TEXT = 'a shared session key of some length\n';
  /** Publishes raw bytes on an instance's channel, as any client of this Redis can; resolves with how many listened. */
  const publish = async (to: Instance, bytes: Uint8Array): Promise<number> => {
    const publisher = new Redis(redis.url, { lazyConnect: true });
    await publisher.connect();
    try { return await publisher.publish(`sobani:i2:${to.id}`, Buffer.from(bytes)); } finally { publisher.disconnect(); }
  };
  const badProofs = (i: Instance) => metric(i, /^sobani_directory_invalid_total\{reason="bad_proof"\} (\d+)/m);
  /** Two more instances with a key file of their own, for a test that stops or kills one; stopped after `fn`. */
  const withPair = async (ids: [string, string], hosts: [string, string], secondExtra: string[], fn: (first: Instance, second: Instance) => Promise<void>): Promise<void> => {
    const keyFile = join(mkdtempSync(join(tmpdir(), 'sobani-roam-')), 'session_key');
    writeFileSync(keyFile, `a shared key for ${ids.join(' and ')}\n`);
    const pair = await Promise.all([startInstance(redis, ids[0], hosts[0], keyFile), startInstance(redis, ids[1], hosts[1], keyFile, secondExtra)]);
    try { await fn(...pair); } finally { await Promise.all(pair.map(stopInstance)); }
  };
  const client = (i: Instance): Promise<WirePeer> => WirePeer.open(target(i), `127.0.32.${clientIp++}`);

  before(async () => {
    redis = await startRedis();
    const dir = mkdtempSync(join(tmpdir(), 'sobani-roam-'));
    const keyFile = join(dir, 'session_key');
    writeFileSync(keyFile, KEY_TEXT);
    [a, b] = await Promise.all([startInstance(redis, 'ra', '127.0.0.2', keyFile), startInstance(redis, 'rb', '127.0.0.3', keyFile)]);
  });
  after(async () => {
    await Promise.all([a, b].filter(Boolean).map(stopInstance));
    await redis?.stop();
  });

  test('with its token and the path challenge, the session moves: same shareId and nat, the old instance lets go, pushes follow it', async () => {
    const y = await client(a), x = await client(a);
    const { token, shareId, secret } = await tokenSession(y);
    // x reports its nat too: a peer that does is told the other's
    const idX = (await x.request({ action: 'announce', nat: 'address-and-port-dependent', pad: 'x'.repeat(18) }, 'announceReceived')).data!.shareId as string;
    await x.request({ action: 'pulse', shareId: idX }, 'pulseReceived');
    await pointerOf(redis, shareId, a.id);

    // at b, the token alone moves nothing: the answer is what b sees and a challenge, tagged
    y.retarget(target(b));
    const asked = await y.request({ action: 'pulse', token }, 'pulseReceived');
    assert.equal(asked.from, `${b.host}:${b.port}`);
    assert.equal(tagged(asked, secret), true, asked.raw);
    assert.equal(asked.data!.shareId, shareId);
    assert.equal(asked.data!.observed, y.address);
    const challenge = asked.data!.challenge as string;
    assert.match(challenge, /^[A-Za-z0-9_-]{11}$/);
    assert.equal(await metric(b, /^sobani_claims_total\{outcome="moved"\} (\d+)/m), 0, 'no claim without the challenge');
    // a is untouched: a push from x still goes to y's session there
    assert.equal(await metric(a, /^sobani_sessions_released_total (\d+)/m), 0);

    // with the challenge: b claims it from a, and serves the pulse
    const moved = await y.request({ action: 'pulse', token, challenge }, 'pulseReceived');
    assert.equal(moved.from, `${b.host}:${b.port}`);
    assertServed(moved, shareId, secret);
    await pointerOf(redis, shareId, b.id);
    assert.equal(await metric(b, /^sobani_claims_total\{outcome="moved"\} (\d+)/m), 1);
    assert.equal(await metric(a, /^sobani_sessions_released_total (\d+)/m), 1);

    // a push from x (at a) reaches y through b, with y's nat from before the move
    x.send({ action: 'push', shareId });
    const pushed = await x.next('pushReceived');
    assert.equal(pushed.data!.peeraddr, y.address);
    assert.equal(pushed.data!.nat, 'endpoint-independent', 'the nat y reported at a came with the session');
    const income = await y.next('income');
    assert.equal(income.from, `${b.host}:${b.port}`, 'y hears from the instance it talks to');
    assert.equal(income.data!.peerShareId, idX);
    assert.equal(tagged(income, secret), true, income.raw);

    // a holds it no more: a token pulse there is challenged (it would move back), not served
    y.retarget(target(a));
    const back = await y.request({ action: 'pulse', token }, 'pulseReceived');
    assert.equal(typeof back.data!.challenge, 'string', back.raw);
    x.close(); y.close();
  });

  test('messages without the shared key\'s MAC are dropped: a forged claim ends nothing, a forged push sends nothing', async () => {
    const y = await client(a), x = await client(a);
    const { token, shareId, secret } = await tokenSession(y);
    const idX = await x.announce();
    await pointerOf(redis, shareId, a.id);
    // well-formed, as an instance without the key would write them (no MAC)
    const plain = new DirectoryMessages({ shareIdLength: 12, maxMultiaddr: 256 });
    const before = await badProofs(a);
    assert.equal(await publish(a, plain.encode({ k: 'claim', from: b.id, req: 'AAAAAAAAAAAAAAAA', shareId, at: Date.now(), proof: 'AAAAAAAAAAA' })), 1, 'a listens');
    const requester = { ip: '198.51.100.7', port: 4000, ipv6: false, shareId: idX, multiaddr: null };
    assert.equal(await publish(a, plain.encode({ k: 'push', from: b.id, req: 'BBBBBBBBBBBBBBBB', f: { target: shareId, dialect: 1, requester, grant: -1, v6: false } })), 1);
    await until('both forged messages counted', async () => (await badProofs(a)) === before + 2);
    // y's session is still a's, served there, and no income reached y (a barrier, not a wait)
    const r = await y.request({ action: 'pulse', token }, 'pulseReceived');
    assert.equal(r.data!.challenge, undefined, r.raw);
    assert.equal(tagged(r, secret), true);
    assert.deepEqual((await y.settle()).filter((m) => m.action === 'income'), []);
    assert.equal(await metric(a, /^sobani_sessions_released_total (\d+)/m), 1, 'only the first test\'s session was released');
    x.close(); y.close();
  });

  test('a claim with the key\'s MAC but not its claim proof ends nothing either', async () => {
    const y = await client(a);
    const { token, shareId } = await tokenSession(y);
    await pointerOf(redis, shareId, a.id);
    const keyed = new DirectoryMessages({ shareIdLength: 12, maxMultiaddr: 256 }, SessionKey.fromFileContents(Buffer.from(KEY_TEXT)));
    const before = await badProofs(a);
    assert.equal(await publish(a, keyed.encode({ k: 'claim', from: b.id, req: 'CCCCCCCCCCCCCCCC', shareId, at: Date.now(), proof: 'AAAAAAAAAAA' })), 1);
    await until('the claim counted', async () => (await badProofs(a)) === before + 1);
    const r = await y.request({ action: 'pulse', token }, 'pulseReceived');
    assert.equal(r.data!.challenge, undefined, 'still served at a');
    y.close();
  });

  test('a claim is taken once, and only while it is fresh: one captured and published again, or an old one, ends nothing', async () => {
    const key = SessionKey.fromFileContents(Buffer.from(KEY_TEXT));
    const keyed = new DirectoryMessages({ shareIdLength: 12, maxMultiaddr: 256 }, key);
    const claimOf = (shareId: string, req: string, at: number) => keyed.encode({ k: 'claim', from: b.id, req, shareId, at, proof: key.claimProof(shareId, b.id, req, at) });
    const replayed = () => metric(a, /^sobani_directory_invalid_total\{reason="replayed"\} (\d+)/m);
    const released = () => metric(a, /^sobani_sessions_released_total (\d+)/m);
    const y = await client(a), z = await client(a);
    const first = await tokenSession(y), second = await tokenSession(z);
    // as an instance with the key makes it: a's session of y ends (b has no such claim pending, so nothing starts)
    const captured = claimOf(first.shareId, 'DDDDDDDDDDDDDDDD', Date.now());
    const before = { replayed: await replayed(), released: await released() };
    assert.equal(await publish(a, captured), 1);
    await until('the claim taken', async () => (await released()) === before.released + 1);
    // published again: counted, nothing more ends
    assert.equal(await publish(a, captured), 1);
    // a claim made (so its proof says) a minute ago, for z's session: counted, z's session stays
    assert.equal(await publish(a, claimOf(second.shareId, 'EEEEEEEEEEEEEEEE', Date.now() - 60_000)), 1);
    await until('both counted as replayed', async () => (await replayed()) === before.replayed + 2);
    assert.equal(await released(), before.released + 1);
    const r = await z.request({ action: 'pulse', token: second.token }, 'pulseReceived');
    assertServed(r, second.shareId, second.secret);
    y.close(); z.close();
  });

  /**
   * A token session at `slow`, claimed at `quick` (directoryTimeout 50 ms) while `slow` is
   * stopped (it stays subscribed: Redis holds the claim for it): the requester hears
   * PEER_UNREACHABLE, then `whileStopped` runs, then `slow` goes on.
   */
  const claimFromStopped = async (slow: Instance, quick: Instance, whileStopped: () => Promise<void>) => {
    const y = await client(slow);
    const s = await tokenSession(y);
    await pointerOf(redis, s.shareId, slow.id);
    y.retarget(target(quick));
    const asked = await y.request({ action: 'pulse', token: s.token }, 'pulseReceived');
    slow.proc.child.kill('SIGSTOP');
    try {
      const err = await y.request({ action: 'pulse', token: s.token, challenge: asked.data!.challenge }, 'error');
      assert.equal(err.data!.code, 'PEER_UNREACHABLE');
      assert.equal(tagged(err, s.secret), true);
      await whileStopped();
    } finally {
      slow.proc.child.kill('SIGCONT');
    }
    return { y, ...s, challenge: asked.data!.challenge as string };
  };

  test('an owner slower than directoryTimeout: the requester hears PEER_UNREACHABLE, and the late handover still starts the session', () =>
    withPair(['rslow', 'rquick'], ['127.0.0.7', '127.0.0.8'], ['--directory-timeout', '50'], async (slow, quick) => {
      const { y, shareId, secret } = await claimFromStopped(slow, quick, async () => {});
      // the owner reads the claim, hands the session over; quick starts it and serves the request after all
      assertServed(await y.next('pulseReceived'), shareId, secret);
      await pointerOf(redis, shareId, quick.id);
      assert.equal(await metric(quick, /^sobani_claims_total\{outcome="late"\} (\d+)/m), 1);
      y.close();
    }));

  test('a handover later than 30 directoryTimeouts is dropped: that slow an owner loses the session, and the client is told NO_SESSION', () =>
    withPair(['rslower', 'rquicker'], ['127.0.0.11', '127.0.0.12'], ['--directory-timeout', '50'], async (slow, quick) => {
      const unanswered = () => metric(quick, /^sobani_claims_total\{outcome="unanswered"\} (\d+)/m);
      // quick gives up waiting (30 x 50 ms) while the owner is still stopped
      const { y, token, secret, challenge } = await claimFromStopped(slow, quick, () => until('the claim given up', async () => (await unanswered()) === 1));
      // the owner goes on: it ends the session and hands it over, to no one
      await until('the owner let go', async () => (await metric(slow, /^sobani_sessions_released_total (\d+)/m)) === 1);
      await until('the handover dropped', async () => (await metric(quick, /^sobani_directory_invalid_total\{reason="unmatched_result"\} (\d+)/m)) === 1);
      assert.equal(await metric(quick, /^sobani_claims_total\{outcome="late"\} (\d+)/m), 0);
      // claimed again: no instance holds it now, and the client is told so (it announces again)
      const r = await y.request({ action: 'pulse', token, challenge }, 'pulseReceived');
      assert.equal(r.data!.status, '1', r.raw);
      assert.equal(tagged(r, secret), true);
      y.close();
    }));

  test('claims are rate-limited like pushes (each costs Redis a lookup and a message): the excess is dropped and counted', () =>
    withPair(['rowner', 'rlimited'], ['127.0.0.9', '127.0.0.10'], ['--push-rate', '1', '--push-burst', '2'], async (owner, limited) => {
      const y = await client(owner);
      const { token: old, secret } = await tokenSession(y);
      // a new shareId: the old token still checks out, but no instance holds its session
      await y.request({ action: 'pulse', token: old, shareId: true }, 'pulseReceived');
      y.retarget(target(limited));
      const asked = await y.request({ action: 'pulse', token: old }, 'pulseReceived');
      const t0 = performance.now();
      const n = 20;
      for (let i = 0; i < n; i++) y.send({ action: 'pulse', token: old, challenge: asked.data!.challenge });
      const answered = () => metric(limited, /^sobani_claims_total\{outcome="none"\} (\d+)/m);
      const dropped = () => metric(limited, /^sobani_drops_total\{reason="push_rate_limited"\} (\d+)/m);
      await until('every claim answered or dropped', async () => (await answered()) + (await dropped()) === n);
      // the burst, plus the refill (1 a second) while they came in
      const bound = 2 + 1 + Math.floor((performance.now() - t0) / 1000);
      const claims = await answered();
      assert.ok(claims >= 1 && claims <= bound, `${claims} claims (bound ${bound})`);
      // each claim that was made is answered (no instance holds it: status 1, tagged), the dropped ones are not
      for (let i = 0; i < claims; i++) {
        const r = await y.next('pulseReceived');
        assert.ok(r.data!.status === '1' && tagged(r, secret), r.raw);
      }
      assert.deepEqual((await y.settle()).filter((r) => r.action === 'pulseReceived'), []);
      y.close();
    }));

  test('its instance gone, the session starts again at another with its shareId (fresh)', () =>
    withPair(['rdoomed', 'rother'], ['127.0.0.5', '127.0.0.6'], [], async (doomed, other) => {
      const y = await client(doomed);
      const { token, shareId, secret } = await tokenSession(y);
      await pointerOf(redis, shareId, doomed.id);
      doomed.proc.child.kill('SIGKILL');
      await doomed.proc.exited;
      await until('the dead instance unsubscribed', () => redis.cli('pubsub', 'numsub', `sobani:i2:${doomed.id}`).trim().split('\n')[1] === '0');
      y.retarget(target(other));
      const asked = await y.request({ action: 'pulse', token }, 'pulseReceived');
      assertServed(await y.request({ action: 'pulse', token, challenge: asked.data!.challenge }, 'pulseReceived'), shareId, secret);
      await pointerOf(redis, shareId, other.id);
      assert.equal(await metric(other, /^sobani_claims_total\{outcome="fresh"\} (\d+)/m), 1);
      y.close();
    }));
});
