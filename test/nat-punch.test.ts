/**
 * The hole punch, end to end, through real NATs in network namespaces (see
 * test/helpers/netns.ts for the topology). Needs root, `ip` and `nft`;
 * skips with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parsePeerAddr } from '../src/client/index.js';
import { HOST_LAN, NAT_WAN, TRACKER_IP, createNatLab, jsonLines, netnsUnavailableReason } from './helpers/netns.js';
import type { NatKind, NatLab } from './helpers/netns.js';
import { redisMissing } from './helpers/redis.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PORT = 3478;
const TRACKER = `${TRACKER_IP}:${PORT}`;
const trackerArgs = (port: number, extra: string[] = []) =>
  ['--import', 'tsx', 'src/cli.ts', '--host', '0.0.0.0', '--port', String(port), '--shards', '2', '--log-level', 'warn', ...extra];
const punchArgs = (tracker: string) => ['--import', 'tsx', 'src/cli.ts', 'punch', '--tracker', tracker];
/** The second instance of the several-instances case, and its Redis, inside the public namespace. */
const PORT_2 = 3479;
const REDIS_PORT = 6390;

const skip = netnsUnavailableReason();
if (skip) console.log(`# nat-punch: skipped: ${skip}`);
const skipRedis = skip || redisMissing() || false;

/**
 * Builds the lab with both NATs of `kind`, and starts the tracker in the public
 * namespace; with `instances: 2`, a second one on PORT_2 and a redis-server they share.
 */
function withLab(kind: NatKind, instances: 1 | 2 = 1): () => NatLab {
  let lab: NatLab | undefined;
  before(async () => {
    lab = createNatLab({ a: kind, b: kind });
    const l = lab;
    const started = (port: number, args: string[]): Promise<unknown> => {
      const tracker = l.spawnIn(l.ns.pub, process.execPath, args, { cwd: ROOT });
      let trackerErr = '';
      tracker.stderr.on('data', (d: Buffer) => (trackerErr += d.toString()));
      tracker.stdout.resume();
      return Promise.race([
        l.waitForUdpPort(l.ns.pub, port),
        new Promise((_, reject) => tracker.once('exit', (code) => reject(new Error(`tracker exited (${code}): ${trackerErr}`)))),
      ]);
    };
    if (instances === 1) {
      await started(PORT, trackerArgs(PORT));
      return;
    }
    const redis = l.spawnIn(l.ns.pub, 'redis-server', ['--port', String(REDIS_PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
    redis.stdout.resume(); redis.stderr.resume();
    const directory = ['--directory', `redis://127.0.0.1:${REDIS_PORT}`];
    await Promise.all([
      started(PORT, trackerArgs(PORT, [...directory, '--instance-id', 'one'])),
      started(PORT_2, trackerArgs(PORT_2, [...directory, '--instance-id', 'two'])),
    ]);
  });
  after(async () => {
    await lab?.destroy();
  });
  return () => lab as NatLab;
}

/** B waits for a push, A pushes to B (each through its tracker); returns both outputs once both exited. */
async function punchPair(lab: NatLab, timeoutS: { a: number; b: number }, trackers = { a: TRACKER, b: TRACKER }) {
  const b = jsonLines(lab.spawnIn(lab.ns.hostB, process.execPath, [...punchArgs(trackers.b), '--timeout', String(timeoutS.b)], { cwd: ROOT }));
  const announced = await b.waitFor(['announced'], 15_000);
  const a = jsonLines(
    lab.spawnIn(lab.ns.hostA, process.execPath, [...punchArgs(trackers.a), '--peer', String(announced.shareId), '--timeout', String(timeoutS.a)], {
      cwd: ROOT,
    }),
  );
  const [exitA, exitB] = await Promise.all([a.exited, b.exited]);
  return { a, b, exitA, exitB };
}

/** Both peers printed `connected` and exited 0; their `connected` lines. */
function bothConnected(run: Awaited<ReturnType<typeof punchPair>>) {
  const { a, b, exitA, exitB } = run;
  const connA = a.lines.find((l) => l.event === 'connected');
  const connB = b.lines.find((l) => l.event === 'connected');
  assert.ok(connA, `A did not connect: ${JSON.stringify(a.lines)} ${a.stderr()}`);
  assert.ok(connB, `B did not connect: ${JSON.stringify(b.lines)} ${b.stderr()}`);
  assert.equal(exitA.code, 0);
  assert.equal(exitB.code, 0);
  return { a, b, connA, connB };
}

describe('hole punch through two endpoint-independent NATs', { skip }, () => {
  const lab = withLab('cone');

  test('both peers connect directly, each seeing the other NAT public address', async (t) => {
    const { a, b, connA, connB } = bothConnected(await punchPair(lab(), { a: 10, b: 15 }));

    const seenByA = parsePeerAddr(String(connA.peeraddr));
    const seenByB = parsePeerAddr(String(connB.peeraddr));
    // Each sees the other's NAT WAN address: not its private LAN address ...
    assert.equal(seenByA.host, NAT_WAN.b);
    assert.equal(seenByB.host, NAT_WAN.a);
    assert.notEqual(seenByA.host, HOST_LAN.b);
    // ... and not the tracker: the datagrams came straight from the peer's NAT.
    assert.notEqual(String(connA.peeraddr), TRACKER);
    assert.notEqual(String(connB.peeraddr), TRACKER);
    assert.notEqual(seenByA.host, TRACKER_IP);
    assert.notEqual(seenByB.host, TRACKER_IP);
    // Endpoint-independent mapping: the address the tracker saw is the one the peer's datagrams came from.
    const peerA = a.lines.find((l) => l.event === 'peer');
    const peerB = b.lines.find((l) => l.event === 'peer');
    assert.equal(peerA?.peeraddr, connA.peeraddr);
    assert.equal(peerB?.peeraddr, connB.peeraddr);
    t.diagnostic(`A connected ${String(connA.ms)} ms after start (announce + push + punch), B ${String(connB.ms)} ms after start`);
  });
});

describe('hole punch through two symmetric NATs', { skip }, () => {
  const lab = withLab('symmetric');

  test('both peers fail clearly within their timeouts', async (t) => {
    const timeouts = { a: 4, b: 6 };
    const { a, b, exitA, exitB } = await punchPair(lab(), timeouts);
    for (const [name, p, exit, timeoutS] of [
      ['A', a, exitA, timeouts.a],
      ['B', b, exitB, timeouts.b],
    ] as const) {
      assert.equal(p.lines.find((l) => l.event === 'connected'), undefined, `${name} must not connect`);
      const failed = p.lines.find((l) => l.event === 'failed');
      assert.ok(failed, `${name} printed no failed line: ${JSON.stringify(p.lines)} ${p.stderr()}`);
      assert.match(String(failed.reason), /no datagram from the peer/);
      assert.notEqual(exit.code, 0);
      // Process start-up (tsx) counts too, hence the slack.
      assert.ok(exit.ms < (timeoutS + 3) * 1000, `${name} took ${Math.round(exit.ms)} ms for a ${timeoutS} s timeout`);
      t.diagnostic(`${name}: ${String(failed.reason)} (exited after ${Math.round(exit.ms)} ms)`);
    }
  });
});

describe('hole punch through two endpoint-independent NATs, each peer on its own tracker instance', { skip: skipRedis }, () => {
  const lab = withLab('cone', 2);

  test('the push crosses instances through the directory, and both peers still connect directly', async (t) => {
    // B announces to instance one, A pushes through instance two.
    const { connA, connB } = bothConnected(await punchPair(lab(), { a: 10, b: 15 }, { a: `${TRACKER_IP}:${PORT_2}`, b: TRACKER }));
    assert.equal(parsePeerAddr(String(connA.peeraddr)).host, NAT_WAN.b);
    assert.equal(parsePeerAddr(String(connB.peeraddr)).host, NAT_WAN.a);
    t.diagnostic(`A connected ${String(connA.ms)} ms after start, B ${String(connB.ms)} ms after start`);
  });
});
