/**
 * Every pair of NATs, end to end, through real NATs in network namespaces (see
 * test/helpers/netns.ts for the topology): the tracker on the public bridge with a
 * second address for STUN NAT discovery, and two hosts each behind its own NAT
 * router, endpoint-independent ("cone", nftables masquerade) or
 * address-and-port-dependent ("symmetric", masquerade random). Each pair punches
 * with the `punch` command, then proves the path with --exchange. coturn's
 * turnutils_natdiscovery, run from behind each NAT, classifies it through the
 * tracker exactly as through coturn's own server. Needs root, `ip` and `nft`
 * (and coturn for the natdiscovery part); skips with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parsePeerAddr } from '../src/client/index.js';
import { HOST_LAN, NAT_WAN, TRACKER_IP, TRACKER_OTHER_IP, createNatLab, eventLine, netnsUnavailableReason, punchPair, startInPub } from './helpers/netns.js';
import type { Cli, NatKind, NatLab, PairRun, Side } from './helpers/netns.js';
import { redisMissing } from './helpers/redis.js';
import { onceInNativePass } from './helpers/wire.js';
import { coturnArgs } from './helpers/coturn.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PORT = 3478;
const TRACKER = `${TRACKER_IP}:${PORT}`;
/** The tracker answers STUN on its two IPs and on PORT and PORT + 1 (RFC 5780 NAT behaviour discovery). */
const trackerArgs = (port: number, extra: string[] = []) =>
  ['--import', 'tsx', 'src/cli.ts', '--host', TRACKER_IP, '--port', String(port), '--shards', '2', '--log-level', 'warn', ...extra];
const DISCOVERY = ['--stun-other-host', TRACKER_OTHER_IP];
/** The second instance of the several-instances case, and its Redis, inside the public namespace. */
const PORT_2 = 3488;
const REDIS_PORT = 6390;
/** coturn's own STUN server, for the natdiscovery comparison: both public IPs, port 3490 (and 3491). */
const COTURN_PORT = 3490;
/** --exchange: seconds of 50 datagrams a second each way (10 through the relay). */
const EXCHANGE_S = 2;
const RELAY_EXCHANGE_S = 10;
/** The relay: coturn on the public segment (its own port, relayed ports 49152-49251), sharing a secret with the tracker. */
const RELAY_PORT = 3492;
const RELAY_SECRET = 'nat-test-turn-secret';
const RELAY = ['--turn-url', `turn:${TRACKER_IP}:${RELAY_PORT}`, '--turn-secret', RELAY_SECRET];
/**
 * A second tracker in each one-instance lab, with no relay configured. A punch that finds
 * nothing within relayAfterMs (3 s) falls back to the relay; without one, that attempt
 * fails and the punch goes on: through this tracker the strategy a pair ends up with
 * does not depend on how fast the machine punches.
 */
const PORT_NO_RELAY = 3498;
const NO_RELAY = `${TRACKER_IP}:${PORT_NO_RELAY}`;
/**
 * --timeout for a pair that connects: counted from each process's start, the announcer's
 * also covers the pusher's process start. Generous: it only bounds a failing run.
 */
const CONNECT_TIMEOUT_S = 60;

const skip = netnsUnavailableReason() ?? onceInNativePass('the clients\' strategies through the NATs; the dgram path\'s four STUN sockets are tested in test/stun.test.ts');
if (skip) console.log(`# nat-punch: skipped: ${skip}`);
const skipRedis = skip || redisMissing() || false;
const skipCoturn = skip || (spawnSync('turnserver', ['--version']).error ? 'coturn is not installed (apt-get install coturn; .ci/run does it)' : false);

/**
 * Builds the lab with these NATs, and starts the tracker in the public namespace
 * (with discovery); with `instances: 2`, a second one on PORT_2 and a redis-server they
 * share, both with the relay unless `relay` is false.
 */
function withLab(nat: { a: NatKind; b: NatKind }, instances: 1 | 2 = 1, { relay = true } = {}): () => NatLab {
  let lab: NatLab | undefined;
  before(async () => {
    lab = createNatLab(nat);
    if (instances === 1) {
      // the tracker with discovery and a relay (a real coturn, when installed), and one with neither
      if (!skipCoturn) {
        await startInPub(lab, 'turnserver', coturnArgs({ listeningIp: TRACKER_IP, listeningPort: RELAY_PORT, minPort: 49152, maxPort: 49251,
          secret: RELAY_SECRET, realm: 'sobani.test', allowLoopbackPeers: false }), RELAY_PORT);
      }
      await Promise.all([
        startInPub(lab, process.execPath, trackerArgs(PORT, [...DISCOVERY, ...(skipCoturn ? [] : RELAY)]), PORT, ROOT),
        startInPub(lab, process.execPath, trackerArgs(PORT_NO_RELAY, ['--stun-other-host', TRACKER_OTHER_IP, '--stun-other-port', String(PORT_NO_RELAY + 1)]), PORT_NO_RELAY, ROOT),
      ]);
      return;
    }
    const redis = lab.spawnIn(lab.ns.pub, 'redis-server', ['--port', String(REDIS_PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
    redis.stdout.resume(); redis.stderr.resume();
    // both instances mint for the same coturn with the same secret; no discovery here
    // (the clients report "unknown" NATs unless nat says otherwise: see the symmetric case)
    const withRelay = relay && !skipCoturn;
    if (withRelay) {
      await startInPub(lab, 'turnserver', coturnArgs({ listeningIp: TRACKER_IP, listeningPort: RELAY_PORT, minPort: 49152, maxPort: 49251,
        secret: RELAY_SECRET, realm: 'sobani.test', allowLoopbackPeers: false }), RELAY_PORT);
    }
    const shared = ['--directory', `redis://127.0.0.1:${REDIS_PORT}`, ...(withRelay ? RELAY : [])];
    await Promise.all([
      startInPub(lab, process.execPath, trackerArgs(PORT, [...shared, ...DISCOVERY, '--instance-id', 'one']), PORT, ROOT),
      startInPub(lab, process.execPath, trackerArgs(PORT_2, [...shared, '--stun-other-host', TRACKER_OTHER_IP, '--stun-other-port', String(PORT_2 + 1), '--instance-id', 'two']), PORT_2, ROOT),
    ]);
  });
  after(async () => {
    await lab?.destroy();
  });
  return () => lab as NatLab;
}

const CLI: Cli = { cwd: ROOT, args: ['--import', 'tsx', 'src/cli.ts'] };
/** One pair; `exchange`: true for EXCHANGE_S seconds of --exchange, or the seconds. */
const pair = (lab: NatLab, announcer: Side, opts: { timeoutS?: number; exchange?: boolean | number; trackers?: Record<Side, string> } = {}): Promise<PairRun> =>
  punchPair(lab, CLI, announcer, opts.trackers ?? { a: TRACKER, b: TRACKER },
    [...(opts.exchange === undefined || opts.exchange === false ? [] : ['--exchange', String(opts.exchange === true ? EXCHANGE_S : opts.exchange)]),
      '--timeout', String(opts.timeoutS ?? CONNECT_TIMEOUT_S)]);
const line = eventLine;

/** Both sides' output, for a failure message. */
const outputs = (run: PairRun): string =>
  `announcer (exit ${run.exits[0]?.code}): ${JSON.stringify(run.announcer.lines)} ${run.announcer.stderr()}\npusher (exit ${run.exits[1]?.code}): ${JSON.stringify(run.pusher.lines)} ${run.pusher.stderr()}`;

/** Both peers printed `connected` and exited 0; their `connected` lines. */
function bothConnected(run: PairRun) {
  const connA = line(run.announcer, 'connected');
  const connP = line(run.pusher, 'connected');
  assert.ok(connA, `the announcer did not connect:\n${outputs(run)}`);
  assert.ok(connP, `the pusher did not connect:\n${outputs(run)}`);
  assert.deepEqual(run.exits.map((e) => e.code), [0, 0]);
  return { connA, connP };
}

/** Both sides' --exchange: at least 99 % of each side's datagrams reached the other. */
function exchangedBothWays(run: PairRun, seconds = EXCHANGE_S): string {
  const a = line(run.announcer, 'exchanged') as { sent: number; received: number } | undefined;
  const p = line(run.pusher, 'exchanged') as { sent: number; received: number } | undefined;
  assert.ok(a && p, `exchanged lines: ${JSON.stringify(run.announcer.lines)} ${JSON.stringify(run.pusher.lines)}`);
  assert.equal(a.sent, seconds * 50);
  assert.equal(p.sent, seconds * 50);
  assert.ok(p.received >= 0.99 * a.sent, `the pusher got ${p.received} of the announcer's ${a.sent}`);
  assert.ok(a.received >= 0.99 * p.sent, `the announcer got ${a.received} of the pusher's ${p.sent}`);
  return `exchanged: announcer got ${a.received}/${p.sent}, pusher got ${p.received}/${a.sent}`;
}

describe('two endpoint-independent (cone) NATs', { skip }, () => {
  const lab = withLab({ a: 'cone', b: 'cone' });

  test('discovery says endpoint-independent on both sides; they connect directly (plain punch), and the path carries traffic both ways', async (t) => {
    const run = await pair(lab(), 'b', { exchange: true, trackers: { a: NO_RELAY, b: NO_RELAY } });
    const { connA, connP } = bothConnected(run);
    for (const p of [run.announcer, run.pusher]) assert.equal(line(p, 'nat')?.nat, 'endpoint-independent', JSON.stringify(p.lines));
    assert.equal(connA.strategy, 'direct');
    assert.equal(connA.path, 'direct');
    // Each sees the other's NAT WAN address, not its private LAN address, and not the tracker.
    assert.equal(parsePeerAddr(String(connP.peeraddr)).host, NAT_WAN.b);
    assert.equal(parsePeerAddr(String(connA.peeraddr)).host, NAT_WAN.a);
    assert.notEqual(parsePeerAddr(String(connP.peeraddr)).host, HOST_LAN.b);
    // Endpoint-independent mapping: the address the tracker saw is the one the peer's datagrams came from.
    assert.equal(line(run.pusher, 'peer')?.peeraddr, connP.peeraddr);
    assert.equal(line(run.announcer, 'peer')?.peeraddr, connA.peeraddr);
    t.diagnostic(`pusher connected ${String(connP.ms)} ms after start, announcer ${String(connA.ms)} ms; ${exchangedBothWays(run)}`);
  });
});

describe('a cone NAT and a symmetric NAT', { skip }, () => {
  const lab = withLab({ a: 'cone', b: 'symmetric' });

  test('symmetric side announcing, cone side pushing: birthday punch, direct path, traffic both ways', async (t) => {
    const run = await pair(lab(), 'b', { exchange: true, trackers: { a: NO_RELAY, b: NO_RELAY } });
    const { connA, connP } = bothConnected(run);
    assert.equal(line(run.announcer, 'nat')?.nat, 'address-and-port-dependent');
    assert.equal(line(run.pusher, 'nat')?.nat, 'endpoint-independent');
    assert.equal(connA.strategy, 'birthday-hard');
    assert.equal(connP.strategy, 'birthday-easy');
    assert.equal(connA.path, 'direct');
    assert.equal(parsePeerAddr(String(connP.peeraddr)).host, NAT_WAN.b);
    assert.equal(parsePeerAddr(String(connA.peeraddr)).host, NAT_WAN.a);
    t.diagnostic(`connected after ${String(connP.ms)} ms (pusher) / ${String(connA.ms)} ms (announcer); probes ${String(connP.probes)} / ${String(connA.probes)}; ${exchangedBothWays(run)}`);
  });

  test('cone side announcing, symmetric side pushing: birthday punch, direct path, traffic both ways', async (t) => {
    const run = await pair(lab(), 'a', { exchange: true, trackers: { a: NO_RELAY, b: NO_RELAY } });
    const { connA, connP } = bothConnected(run);
    assert.equal(connA.strategy, 'birthday-easy');
    assert.equal(connP.strategy, 'birthday-hard');
    t.diagnostic(`connected after ${String(connP.ms)} ms (pusher) / ${String(connA.ms)} ms (announcer); probes ${String(connP.probes)} / ${String(connA.probes)}; ${exchangedBothWays(run)}`);
  });

  test('coturn\'s turnutils_natdiscovery classifies each NAT through the tracker exactly as through coturn\'s own server', { skip: skipCoturn }, async (t) => {
    const l = lab();
    const coturn = l.spawnIn(l.ns.pub, 'turnserver', ['-n', '--listening-ip', TRACKER_IP, '--listening-ip', TRACKER_OTHER_IP, '--listening-port', String(COTURN_PORT),
      '--no-tcp', '--no-tls', '--no-dtls', '--no-cli', '--log-file', 'stdout', '--simple-log']);
    coturn.stdout.resume(); coturn.stderr.resume();
    await l.waitForUdpPort(l.ns.pub, COTURN_PORT);
    const discover = (host: string, port: number): Promise<string> => new Promise((resolve) => {
      const p = l.spawnIn(host, 'turnutils_natdiscovery', ['-m', '-f', '-p', String(port), TRACKER_IP]);
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr.on('data', (d: Buffer) => (out += d.toString()));
      p.once('exit', () => resolve(out));
    });
    const verdicts = (out: string) => out.split('\n').filter((x) => /Mapping!|Filtering!|No NAT!/.test(x)).map((x) => x.trim());
    const [viaTrackerA, viaCoturnA, viaTrackerB, viaCoturnB] = await Promise.all([
      discover(l.ns.hostA, PORT), discover(l.ns.hostA, COTURN_PORT), discover(l.ns.hostB, PORT), discover(l.ns.hostB, COTURN_PORT)]);
    for (const [name, tracker, coturnSaid] of [['cone', viaTrackerA, viaCoturnA], ['symmetric', viaTrackerB, viaCoturnB]] as const) {
      const ours = verdicts(tracker), theirs = verdicts(coturnSaid);
      assert.equal(ours.length, 2, `${name}: a mapping and a filtering verdict through the tracker:\n${tracker}`);
      assert.deepEqual(ours, theirs, `${name}: through the tracker\n${tracker}\nthrough coturn\n${coturnSaid}`);
      t.diagnostic(`${name} NAT: ${ours.join('; ')}`);
    }
    assert.deepEqual(verdicts(viaTrackerA), ['NAT with Endpoint Independent Mapping!', 'NAT with Address and Port Dependent Filtering!']);
    assert.deepEqual(verdicts(viaTrackerB), ['NAT with Address and Port Dependent Mapping!', 'NAT with Address and Port Dependent Filtering!']);
  });
});

describe('two symmetric NATs', { skip }, () => {
  const lab = withLab({ a: 'symmetric', b: 'symmetric' });

  test('no direct path: they connect through the relay (coturn), and the path carries 10 s of traffic both ways', { skip: skipCoturn }, async (t) => {
    const run = await pair(lab(), 'b', { exchange: RELAY_EXCHANGE_S });
    const { connA, connP } = bothConnected(run);
    for (const [name, c] of [['announcer', connA], ['pusher', connP]] as const) {
      assert.equal(c.path, 'relay', `${name}: ${JSON.stringify(c)}`);
      assert.equal(c.strategy, 'relay');
    }
    // both talk to coturn's relayed address, not to each other's NAT
    assert.equal(parsePeerAddr(String(connA.peeraddr)).host, TRACKER_IP, 'the announcer sends to the relayed address');
    assert.equal(parsePeerAddr(String(connP.peeraddr)).host, NAT_WAN.b, 'the pusher\'s channel leads to the announcer\'s NAT');
    t.diagnostic(`connected after ${String(connP.ms)} ms (pusher) / ${String(connA.ms)} ms (announcer); ${exchangedBothWays(run, RELAY_EXCHANGE_S)}`);
  });

  test('without a relay on the tracker, both sides see there is no direct path, and fail clearly within their timeouts', async (t) => {
    // the announcer can only end by its timeout, which must outlast the pusher's process
    // start, discovery and push (or it would fail as "nobody pushed"): generous, as this
    // test lasts as long as it
    const run = await pair(lab(), 'b', { timeoutS: 20, trackers: { a: NO_RELAY, b: NO_RELAY } });
    for (const [name, p, exit] of [['announcer', run.announcer, run.exits[0]!], ['pusher', run.pusher, run.exits[1]!]] as const) {
      assert.equal(line(p, 'nat')?.nat, 'address-and-port-dependent', `${name}: ${JSON.stringify(p.lines)}`);
      assert.equal(line(p, 'connected'), undefined, `${name} must not connect`);
      const failed = line(p, 'failed');
      assert.ok(failed, `${name} printed no failed line:\n${outputs(run)}`);
      assert.match(String(failed.reason), name === 'pusher' ? /no direct path: both NATs map .*the relay failed: RELAY_NOT_CONFIGURED/ : /no direct path .* a relay is needed/, outputs(run));
      assert.notEqual(exit.code, 0);
      t.diagnostic(`${name}: ${String(failed.reason)} (exited after ${Math.round(exit.ms)} ms)`);
    }
  });
});

describe('two cone NATs, each peer on its own tracker instance', { skip: skipRedis }, () => {
  // no relay to fall back to after 3 s: connecting directly must not depend on the machine's speed
  const lab = withLab({ a: 'cone', b: 'cone' }, 2, { relay: false });

  test('the push crosses instances through the directory, and both peers still connect directly', async (t) => {
    // B announces to instance one, A pushes through instance two
    const run = await pair(lab(), 'b', { trackers: { a: `${TRACKER_IP}:${PORT_2}`, b: TRACKER } });
    const { connA, connP } = bothConnected(run);
    assert.equal(parsePeerAddr(String(connP.peeraddr)).host, NAT_WAN.b);
    assert.equal(parsePeerAddr(String(connA.peeraddr)).host, NAT_WAN.a);
    t.diagnostic(`pusher connected ${String(connP.ms)} ms after start, announcer ${String(connA.ms)} ms`);
  });
});

describe('two symmetric NATs, each peer on its own tracker instance', { skip: skipRedis || skipCoturn }, () => {
  const lab = withLab({ a: 'symmetric', b: 'symmetric' }, 2);

  test('credentials minted by one instance, the relayed address carried across instances: they connect through the relay', async (t) => {
    const run = await pair(lab(), 'b', { exchange: RELAY_EXCHANGE_S, trackers: { a: `${TRACKER_IP}:${PORT_2}`, b: TRACKER } });
    const { connA, connP } = bothConnected(run);
    assert.equal(connA.path, 'relay');
    assert.equal(connP.path, 'relay');
    t.diagnostic(`connected after ${String(connP.ms)} ms (pusher) / ${String(connA.ms)} ms (announcer); ${exchangedBothWays(run, RELAY_EXCHANGE_S)}`);
  });
});

describe('two cone NATs with a firewall between them', { skip: skipCoturn }, () => {
  const lab = withLab({ a: 'cone', b: 'cone' });
  before(() => lab().blockBetweenNats());

  test('the plain punch finds nothing in its window: the requester falls back to the relay, and the target follows', async (t) => {
    const run = await pair(lab(), 'b', { exchange: true });
    const { connA, connP } = bothConnected(run);
    assert.equal(line(run.pusher, 'peer')?.strategy, 'direct', 'both NATs are easy: a plain punch first');
    assert.equal(connA.path, 'relay');
    assert.equal(connP.path, 'relay');
    t.diagnostic(`connected after ${String(connP.ms)} ms (pusher) / ${String(connA.ms)} ms (announcer), ${String(connP.probes)} probes first; ${exchangedBothWays(run)}`);
  });
});
