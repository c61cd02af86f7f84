// Several tracker instances on one session directory: a real redis-server on a
// free port, three tracker processes on 127.0.0.2, .3 and .4, and every client on
// its own loopback IP, speaking raw datagrams as real clients do.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { EXPECT_MS, until, wireBytes, WirePeer } from './helpers/wire.js';
import { secretOfToken, verifyTagged } from '../src/auth/tag.js';
import { runTracker, type Running } from './helpers/process.js';
import { redisMissing, startRedis, type RedisServer } from './helpers/redis.js';
import { freePort, httpGet } from './helpers/ops.js';
import { ONE_UDP4_SOCKET } from './helpers/batch.js';
import { Unpackr } from 'msgpackr';
import { defaultConfig } from '../src/config.js';
import { pointerRefreshMs } from '../src/directory/cadence.js';
import { DIRECTORY_TICK_MS, Shard, shardOptions } from '../src/shard/shard.js';
import type { ShardExtras } from '../src/wire/messages.js';

const skip = redisMissing() ?? false;
const ANNOUNCE = '{"action":"announce"}';
/** A STUN Binding request and its response to an IPv4 client, in payload bytes: what WirePeer.settle() sends and gets. */
const BINDING_IN = 20, BINDING_OUT = 44;

interface Instance { id: string; host: string; port: number; metricsPort: number; proc: Running }

async function startInstance(redis: RedisServer, id: string, host: string, extra: string[] = []): Promise<Instance> {
  const metricsPort = await freePort();
  const proc = await runTracker(['--host', host, '--port', '0', '--shards', '2', '--directory', redis.url, '--instance-id', id,
    '--metrics-port', String(metricsPort), ...extra]);
  return { id, host, port: proc.port, metricsPort, proc };
}

async function stopInstance(i: Instance): Promise<void> {
  if (i.proc.child.exitCode === null && i.proc.child.signalCode === null) i.proc.child.kill('SIGTERM');
  await i.proc.exited;
}

const target = (i: Instance) => ({ address: i.host, port: i.port });

/** Waits until the directory holds shareId's pointer (writes are asynchronous). */
async function pointerOf(redis: RedisServer, shareId: string): Promise<string> {
  let v = '';
  await until(`the pointer of ${shareId}`, () => (v = redis.cli('get', `sobani:s:${shareId}`).trim()) !== '');
  return v;
}

/**
 * A desktop-client session: announce, resent every second (the client's own timer) until
 * announced, then one alive (dialect: legacy). A slow round only means one more announce:
 * retried before any keep-alive, it gets the same shareId.
 */
async function legacySession(p: WirePeer): Promise<string> {
  const deadline = Date.now() + EXPECT_MS;
  for (;;) {
    p.send(ANNOUNCE);
    const r = await p.next('announced', 1000).catch(() => null);
    if (r !== null) {
      await p.request('{"action":"alive"}', 'alived');
      await p.settle(); // the replies to every announce sent
      return r.data!.shareId as string;
    }
    if (Date.now() > deadline) throw new Error(`no announced within ${EXPECT_MS} ms`);
  }
}

/** Sends a raw push and returns the first reply of one of `actions`. */
async function push(p: WirePeer, shareId: string, ...actions: string[]): Promise<{ action: string; data?: Record<string, unknown>; from: string }> {
  p.send(`{"action":"push","shareId":"${shareId}"}`);
  const deadline = Date.now() + EXPECT_MS;
  for (;;) {
    const r = await p.next(undefined, Math.max(1, deadline - Date.now()));
    if (actions.includes(r.action)) return r;
  }
}

async function metric(i: Instance, pattern: RegExp): Promise<number> {
  const m = pattern.exec((await httpGet(i.metricsPort, '/metrics')).body);
  return m ? Number(m[1]) : 0;
}

test('a shard refreshes every live pointer exactly once per refresh period, at an even pace', () => {
  const config = { ...defaultConfig(), shards: 1, directory: 'redis://127.0.0.1:1' };
  const shard = new Shard(shardOptions(config, 0, ONE_UDP4_SOCKET));
  shard.fill(5000);
  const unpackr = new Unpackr({ useRecords: false });
  const ticks = pointerRefreshMs(config.ttl) / DIRECTORY_TICK_MS;
  const written = new Map<string, number>();
  let maxPerTick = 0;
  for (let i = 0; i < ticks; i++) {
    shard.directoryTick();
    const ext = shard.takeExtras();
    const pointers = ext === null ? [] : (unpackr.unpack(ext) as ShardExtras).pointers ?? [];
    maxPerTick = Math.max(maxPerTick, pointers.length);
    for (const [id] of pointers) written.set(id, (written.get(id) ?? 0) + 1);
  }
  assert.equal(written.size, 5000, 'every live session');
  assert.ok([...written.values()].every((n) => n === 1), 'once each');
  assert.ok(maxPerTick <= Math.ceil((5000 / ticks) * 1.01) + 1, `even: at most ${maxPerTick} in one tick`);
});

describe('several instances on one session directory', { skip }, () => {
  let redis: RedisServer;
  let a: Instance, b: Instance, c: Instance;
  let clientIp = 1;
  const client = (i: Instance): Promise<WirePeer> => WirePeer.open(target(i), `127.0.30.${clientIp++}`);

  before(async () => {
    redis = await startRedis();
    // the relay a relayed address in a push must be on (config relayIps)
    const relay = ['--relay-ips', '198.51.100.9'];
    [a, b, c] = await Promise.all([startInstance(redis, 'a', '127.0.0.2', relay), startInstance(redis, 'b', '127.0.0.3', relay), startInstance(redis, 'c', '127.0.0.4', relay)]);
  });
  after(async () => {
    await Promise.all([a, b, c].filter(Boolean).map(stopInstance));
    await redis?.stop();
  });

  test('a push reaches a peer on another instance: each peer hears from its own instance (documented dialect)', async () => {
    const x = await client(a), y = await client(b);
    const idX = await x.announce(), idY = await y.announce();
    assert.match(await pointerOf(redis, idX), /^a\t/);
    const r = await push(y, idX, 'pushReceived');
    assert.equal(r.from, `${b.host}:${b.port}`, 'the requester hears from its own instance');
    assert.deepEqual(r.data, { peeraddr: x.address, peerShareId: idX });
    const income = await x.next('income');
    assert.equal(income.from, `${a.host}:${a.port}`, 'the target hears from its own instance');
    assert.deepEqual(income.data, { peeraddr: y.address, peerShareId: idY });
    x.close(); y.close();
  });

  test('a token push to a peer on another instance is answered tagged, by the requester\'s own instance (the instances share no key)', async () => {
    const x = await client(a), y = await client(b);
    const idX = await x.announce();
    const announced = await y.request({ action: 'announce', token: true, pad: 'x'.repeat(40) }, 'announceReceived');
    const token = announced.data!.token as string;
    const secret = secretOfToken(token)!;
    assert.equal(verifyTagged(Buffer.from(announced.raw), secret), true, 'the token announce reply is tagged');
    await y.request({ action: 'pulse', token }, 'pulseReceived');
    await pointerOf(redis, idX);
    const r = await y.request({ action: 'push', shareId: idX, token }, 'pushReceived');
    assert.equal(r.from, `${b.host}:${b.port}`);
    assert.equal(r.data!.peeraddr, x.address);
    assert.equal(verifyTagged(Buffer.from(r.raw), secret), true, `the pushReceived is tagged for the requester's session: ${r.raw}`);
    const income = await x.next('income');
    assert.equal(income.data!.peerShareId, token.slice(0, token.indexOf('.')));
    x.close(); y.close();
  });

  test('nat and peerVerified cross instances: each side is told the other\'s', async () => {
    const x = await client(a), y = await client(b);
    const announceWith = async (p: WirePeer, nat: string): Promise<string> => {
      const id = (await p.request({ action: 'announce', nat, pad: 'x'.repeat(18) }, 'announceReceived')).data!.shareId as string;
      await p.request({ action: 'pulse', shareId: id }, 'pulseReceived');
      return id;
    };
    const idX = await announceWith(x, 'address-and-port-dependent');
    await announceWith(y, 'endpoint-independent');
    await pointerOf(redis, idX);
    const r = await push(y, idX, 'pushReceived');
    assert.deepEqual(r.data, { peeraddr: x.address, peerShareId: idX, nat: 'address-and-port-dependent', peerVerified: true });
    const income = await x.next('income');
    assert.equal(income.data!.nat, 'endpoint-independent');
    assert.equal(income.data!.peerVerified, true);
    x.close(); y.close();
  });

  test('a relayed address crosses instances with the push, into the target\'s income', async () => {
    const x = await client(a), y = await client(c);
    const idX = await x.announce();
    await y.announce();
    await pointerOf(redis, idX);
    const r = await push(y, idX, 'pushReceived'); // without relay first: a plain push
    assert.equal(r.data!.peerShareId, idX);
    await x.next('income');
    y.send({ action: 'push', shareId: idX, relay: '198.51.100.9:49160' });
    await y.next('pushReceived');
    const income = await x.next('income');
    assert.equal(income.from, `${a.host}:${a.port}`);
    assert.equal(income.data!.relay, '198.51.100.9:49160');
    x.close(); y.close();
  });

  test('the desktop client\'s dialect works across instances: pushed from its instance, income from the other', async () => {
    const x = await client(a), y = await client(c);
    const idX = await legacySession(x), idY = await legacySession(y);
    await pointerOf(redis, idX);
    const r = await push(y, idX, 'pushed');
    assert.equal(r.from, `${c.host}:${c.port}`);
    assert.deepEqual(r.data, { peeraddr: x.address, peerShareId: idX });
    const income = await x.next('income');
    assert.equal(income.from, `${a.host}:${a.port}`);
    assert.deepEqual(income.data, { peeraddr: y.address, peerShareId: idY });
    x.close(); y.close();
  });

  test('across instances the same rules hold: an unproven requester\'s replies stay within 3x its wire bytes, documented form first', async () => {
    const x = await client(a), y = await client(b);
    const idX = await x.announce();
    await pointerOf(redis, idX);
    const sent: (string | number)[] = [ANNOUNCE, `{"action":"push","shareId":"${idX}"}`];
    y.send(sent[0]!);
    // settle(): the rest of the announce's batch has come; its Binding and response count too
    const got: (string | number)[] = [(await y.next('announceReceived')).raw, ...(await y.settle()).map((r) => r.raw), BINDING_OUT];
    sent.push(BINDING_IN);
    y.send(sent[1]!); // no proof, no keep-alive yet: unverified, dialect unknown
    const first = await y.next();
    assert.equal(first.action, 'pushReceived', 'the documented form first');
    // the answer from a's instance is one batch, sent by b before it answers this Binding
    got.push(first.raw, ...(await y.settle()).map((r) => r.raw), BINDING_OUT);
    sent.push(BINDING_IN);
    assert.ok(wireBytes(...got) <= 3 * wireBytes(...sent), `sent ${wireBytes(...sent)}, got ${wireBytes(...got)} on the wire`);
    assert.equal((await x.next('income')).data!.peeraddr, y.address);
    x.close(); y.close();
  });

  test('a push to a local session, or from a session with none, never touches Redis', async () => {
    const x = await client(b), y = await client(b);
    const idX = await x.announce();
    const idY = await y.announce();
    await pointerOf(redis, idX); // the pointer writes of these announces are done
    await pointerOf(redis, idY);
    const before = { get: redis.calls('get'), publish: redis.calls('publish') };
    for (let i = 0; i < 5; i++) assert.equal((await push(y, idX, 'pushReceived')).data!.peerShareId, idX);
    assert.deepEqual({ get: redis.calls('get'), publish: redis.calls('publish') }, before);
    x.close(); y.close();
  });

  test('a shareId no instance holds gets UNKNOWN_SHARE_ID', async () => {
    const y = await client(a);
    await y.announce();
    const r = await push(y, 'AAAAAAAAAAAA', 'error');
    assert.equal(r.data!.code, 'UNKNOWN_SHARE_ID');
    y.close();
  });

  test('an instance that dies: pushes to its sessions fail clearly, at once (PEER_UNREACHABLE: no instance listens for them)', async () => {
    // The requester waits 60 s for an owner that does not answer: a PEER_UNREACHABLE before
    // that (push() waits EXPECT_MS at most) is the tracker seeing that nobody listens, at once.
    const [doomed, asking] = await Promise.all([
      startInstance(redis, 'doomed', '127.0.0.5'),
      startInstance(redis, 'patient', '127.0.0.7', ['--directory-timeout', '60000']),
    ]);
    try {
      const x = await client(doomed), y = await client(asking);
      const idX = await x.announce();
      await y.announce();
      await pointerOf(redis, idX);
      doomed.proc.child.kill('SIGKILL');
      await doomed.proc.exited;
      // Redis has seen it go: nobody listens on its channel any more
      await until('the dead instance unsubscribed', () => redis.cli('pubsub', 'numsub', 'sobani:i2:doomed').trim().split('\n')[1] === '0');
      const r = await push(y, idX, 'error');
      assert.equal(r.data!.code, 'PEER_UNREACHABLE');
      assert.equal(await metric(asking, /^sobani_remote_pushes_total\{outcome="PEER_UNREACHABLE"\} (\d+)/m), 1);
      x.close(); y.close();
    } finally {
      await Promise.all([doomed, asking].map(stopInstance));
    }
  });

  test('Redis stalls, then dies: local traffic goes on, remote pushes get DIRECTORY_UNAVAILABLE; restarted empty, the directory is rebuilt', { timeout: 180_000 }, async () => {
    const x = await client(a), y = await client(b), z = await client(b);
    const idX = await x.announce(), idZ = await z.announce();
    await y.announce();
    await pointerOf(redis, idX);
    assert.equal((await push(y, idX, 'pushReceived')).data!.peerShareId, idX);
    await x.next('income');

    redis.signal('SIGSTOP');
    try {
      // b's lookup times out after half its directoryTimeout, before the push's own bound
      // would say PEER_UNREACHABLE: the code tells which came first, no clock needed
      const r = await push(y, idX, 'error');
      assert.equal(r.data!.code, 'DIRECTORY_UNAVAILABLE');
      // every local request is answered as before
      for (let i = 0; i < 20; i++) assert.equal((await y.request({ action: 'pulse' }, 'pulseReceived')).data!.status, '0');
      assert.equal((await push(y, idZ, 'pushReceived')).data!.peerShareId, idZ, 'a local push is untouched');
      // the failed lookup (and every directory check since) marked the directory down
      let health = { status: 0, body: '' };
      await until('/healthz degraded', async () => /degraded/.test((health = await httpGet(b.metricsPort, '/healthz')).body));
      assert.equal(health.status, 200, 'degraded, not down');
    } finally {
      redis.signal('SIGCONT');
    }
    await redis.kill();
    const r = await push(y, idX, 'error');
    assert.equal(r.data!.code, 'DIRECTORY_UNAVAILABLE');
    assert.equal((await y.request({ action: 'pulse' }, 'pulseReceived')).data!.status, '0');

    await redis.restart(); // empty: no pointers at all
    // until the instances have reconnected and written their pointers again (the bound only ends a failing test)
    const REBUILT_MS = 60_000;
    const deadline = Date.now() + REBUILT_MS;
    for (;;) {
      const answer = await push(y, idX, 'pushReceived', 'error');
      if (answer.action === 'pushReceived') { assert.equal(answer.data!.peerShareId, idX); break; }
      assert.ok(Date.now() < deadline, `no pushReceived within ${REBUILT_MS} ms of the restart; last: ${JSON.stringify(answer.data)}`);
      await sleep(250);
    }
    assert.equal((await x.next('income')).data!.peeraddr, y.address);
    assert.match(redis.cli('get', `sobani:s:${idX}`), /^a\t/, 'instance a wrote its pointers again');
    assert.equal((await httpGet(b.metricsPort, '/healthz')).status, 200);
    x.close(); y.close(); z.close();
  });

  test('directory writes stay under 0.1 per second per live session while sessions keep pulsing', { timeout: 180_000 }, async () => {
    const sessions = await Promise.all(Array.from({ length: 50 }, () => client(c)));
    const ids = await Promise.all(sessions.map((p) => p.announce()));
    // the announces' own writes have landed before counting starts
    await until('every announce\'s pointer', () => Number(redis.cli('exists', ...ids.map((id) => `sobani:s:${id}`))) === ids.length);
    redis.cli('config', 'resetstat');
    const started = Date.now();
    for (let t = 0; t < 12; t++) { // a pulse from each every 500 ms, for 6 s or more
      await Promise.all(sessions.map((p) => p.request({ action: 'pulse' }, 'pulseReceived')));
      await sleep(500);
    }
    const writes = redis.calls('set');
    // per second of the time it really took: a slower machine pulses over more seconds
    const seconds = (Date.now() - started) / 1000;
    const perSessionPerSecond = writes / sessions.length / seconds;
    assert.ok(perSessionPerSecond <= 0.1, `${writes} SETs for ${sessions.length} sessions in ${seconds.toFixed(1)} s: ${perSessionPerSecond.toFixed(3)}/s each`);
    assert.ok(await metric(c, /^sobani_directory_writes_total (\d+)/m) >= sessions.length, 'each announce wrote its pointer');
    for (const p of sessions) p.close();
  });

  test('an instance restarted from its snapshot registers the sessions it restored', { timeout: 180_000 }, async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'sobani-dir-snap-'));
    const snapshot = join(dir, 'sessions.snapshot');
    try {
      let d = await startInstance(redis, 'snap-1', '127.0.0.6', ['--snapshot', snapshot]);
      const port = d.port;
      const x = await WirePeer.open(target(d), '127.0.31.1');
      const idX = await x.announce();
      await pointerOf(redis, idX);
      await stopInstance(d); // SIGTERM writes the snapshot
      redis.cli('del', `sobani:s:${idX}`);
      // the same address and port (clients keep talking to it), a new instance id
      d = await startInstance(redis, 'snap-2', '127.0.0.6', ['--snapshot', snapshot, '--port', String(port)]);
      assert.match(await pointerOf(redis, idX), /^snap-2\t/);
      const y = await client(a);
      await y.announce();
      assert.equal((await push(y, idX, 'pushReceived')).data!.peerShareId, idX);
      await stopInstance(d);
      x.close(); y.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
