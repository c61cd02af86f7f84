/**
 * Local candidates end to end (issue 25), through real NATs in network namespaces
 * (test/helpers/netns.ts, LabLayout): two hosts behind one cone NAT that does not
 * hairpin connect directly on their LAN addresses, with and without a relay
 * configured; a host with a second interface the peer cannot reach still connects;
 * a pair on different NATs connects on the public addresses as before; without
 * local candidates the same-NAT pair fails with a reason that says so; and a peer
 * that names a victim's addresses as its candidates gets at most the bound sent
 * there. Needs root, `ip` and `nft`; skips with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  NAT_WAN, SAME_LAN, TRACKER_IP, TRACKER_OTHER_IP, createNatLab, eventLine, jsonLines, netnsUnavailableReason, punchPair, startInPub,
  type Cli, type LabLayout, type NatKind, type NatLab, type PairRun,
} from './helpers/netns.js';
import { onceInNativePass } from './helpers/wire.js';
import { coturnArgs } from './helpers/coturn.js';
import { LOCAL_PROBES_PER_CANDIDATE, MAX_LOCAL_PROBES } from '../src/client/local-punch.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI: Cli = { cwd: ROOT, args: ['--import', 'tsx', 'src/cli.ts'] };
/** The tracker with a relay (coturn, when installed) and the one without. */
const PORT = 3478;
const PORT_NO_RELAY = 3498;
const RELAY_PORT = 3492;
const RELAY_SECRET = 'local-test-turn-secret';
const trackerArgs = (port: number, extra: string[] = []) =>
  ['--import', 'tsx', 'src/cli.ts', '--host', TRACKER_IP, '--port', String(port), '--shards', '2', '--log-level', 'warn',
    '--stun-other-host', TRACKER_OTHER_IP, '--stun-other-port', String(port + 1), ...extra];
const WITH_RELAY = `${TRACKER_IP}:${PORT}`;
const NO_RELAY = `${TRACKER_IP}:${PORT_NO_RELAY}`;
/** --timeout of a pair that connects: it only bounds a failing run. */
const CONNECT_TIMEOUT_S = 60;

const skip = netnsUnavailableReason() ?? onceInNativePass('the clients\' local candidates through the NATs');
if (skip) console.log(`# local-punch: skipped: ${skip}`);
const haveCoturn = !skip && !spawnSync('turnserver', ['--version']).error;

function withLab(nat: { a: NatKind; b: NatKind }, layout: LabLayout): () => NatLab {
  let lab: NatLab | undefined;
  before(async () => {
    lab = createNatLab(nat, layout);
    if (haveCoturn) {
      await startInPub(lab, 'turnserver', coturnArgs({ listeningIp: TRACKER_IP, listeningPort: RELAY_PORT, minPort: 49152, maxPort: 49251,
        secret: RELAY_SECRET, realm: 'sobani.test', allowLoopbackPeers: false }), RELAY_PORT);
    }
    // without coturn the relay is still configured (and fails when tried): a LAN path must not need it
    const relay = ['--turn-url', `turn:${TRACKER_IP}:${RELAY_PORT}`, '--turn-secret', RELAY_SECRET];
    await Promise.all([
      startInPub(lab, process.execPath, trackerArgs(PORT, relay), PORT, ROOT),
      startInPub(lab, process.execPath, trackerArgs(PORT_NO_RELAY), PORT_NO_RELAY, ROOT),
    ]);
  });
  after(async () => { await lab?.destroy(); });
  return () => lab as NatLab;
}

const pair = (lab: NatLab, tracker: string, extra: string[] = []): Promise<PairRun> =>
  punchPair(lab, CLI, 'b', { a: tracker, b: tracker }, extra);

const outputs = (run: PairRun): string =>
  `announcer (exit ${run.exits[0]?.code}): ${JSON.stringify(run.announcer.lines)} ${run.announcer.stderr()}\npusher (exit ${run.exits[1]?.code}): ${JSON.stringify(run.pusher.lines)} ${run.pusher.stderr()}`;

/** Both connected on a local candidate: each side's path is the other's LAN address. */
function connectedOnLan(run: PairRun): void {
  const connB = eventLine(run.announcer, 'connected'), connA = eventLine(run.pusher, 'connected');
  assert.ok(connA && connB, `both sides connect:\n${outputs(run)}`);
  assert.deepEqual(run.exits.map((e) => e.code), [0, 0], outputs(run));
  assert.equal(connA.strategy, 'local', outputs(run));
  assert.equal(connB.strategy, 'local', outputs(run));
  assert.match(String(connA.peeraddr), new RegExp(`^${SAME_LAN.b.replaceAll('.', '\\.')}:\\d+$`));
  assert.match(String(connB.peeraddr), new RegExp(`^${SAME_LAN.a.replaceAll('.', '\\.')}:\\d+$`));
  assert.equal(connA.path, 'direct');
}

function exchangedBothWays(run: PairRun, seconds: number): void {
  const a = eventLine(run.announcer, 'exchanged') as { sent: number; received: number } | undefined;
  const p = eventLine(run.pusher, 'exchanged') as { sent: number; received: number } | undefined;
  assert.ok(a && p, outputs(run));
  assert.equal(a.sent, seconds * 50);
  assert.equal(p.sent, seconds * 50);
  assert.ok(p.received >= 0.99 * a.sent, `the pusher got ${p.received} of the announcer's ${a.sent}`);
  assert.ok(a.received >= 0.99 * p.sent, `the announcer got ${a.received} of the pusher's ${p.sent}`);
}

describe('two hosts behind one cone NAT that does not hairpin', { skip }, () => {
  const lab = withLab({ a: 'cone', b: 'cone' }, { sameNat: true });

  test('they connect directly on their LAN addresses (no relay configured), and --exchange 10 delivers 99 % both ways', async () => {
    const run = await pair(lab(), NO_RELAY, ['--exchange', '10', '--timeout', String(CONNECT_TIMEOUT_S)]);
    connectedOnLan(run);
    // each was shown the other's candidate, beside the shared public IP
    assert.deepEqual(eventLine(run.pusher, 'peer')!.local, [eventLine(run.pusher, 'connected')!.peeraddr]);
    assert.match(String(eventLine(run.pusher, 'peer')!.peeraddr), new RegExp(`^${NAT_WAN.a.replaceAll('.', '\\.')}:`));
    exchangedBothWays(run, 10);
  });

  test('with a relay configured, the LAN path wins over the relay', async () => {
    const run = await pair(lab(), WITH_RELAY, ['--exchange', '2', '--timeout', String(CONNECT_TIMEOUT_S)]);
    connectedOnLan(run);
    exchangedBothWays(run, 2);
  });

  test('without local candidates (--no-local on one side), the failure says: same NAT, no hairpinning, no local path', async () => {
    const run = await pair(lab(), NO_RELAY, ['--timeout', '6', '--no-local']);
    const failed = [eventLine(run.announcer, 'failed'), eventLine(run.pusher, 'failed')];
    assert.ok(failed[0] && failed[1], outputs(run));
    for (const f of failed) {
      assert.match(String(f!.reason), /behind the same NAT as we are \(public IP 10\.200\.0\.11\), which does not hairpin, and the peer showed no local candidates: no local path/, outputs(run));
    }
    assert.equal(eventLine(run.pusher, 'peer')!.local, undefined, 'a client that shares none is shown none');
  });
});

describe('a host with a second interface the peer cannot reach', { skip }, () => {
  const lab = withLab({ a: 'cone', b: 'cone' }, { sameNat: true, secondInterface: true });

  test('still connects on the LAN address they share', async () => {
    const run = await pair(lab(), NO_RELAY, ['--exchange', '2', '--timeout', String(CONNECT_TIMEOUT_S)]);
    connectedOnLan(run);
    const shown = eventLine(run.announcer, 'peer')!.local as string[];
    assert.equal(shown.length, 2, `hostA shows both of its addresses: ${JSON.stringify(shown)}`);
    assert.ok(shown.some((c) => c.startsWith(`${SAME_LAN.aSecond}:`)));
    exchangedBothWays(run, 2);
  });
});

describe('a pair on different cone NATs', { skip }, () => {
  const lab = withLab({ a: 'cone', b: 'cone' }, {});

  test('connects on the public addresses as before: the local candidates are tried and cost nothing', async () => {
    const run = await pair(lab(), NO_RELAY, ['--exchange', '2', '--timeout', String(CONNECT_TIMEOUT_S)]);
    const connB = eventLine(run.announcer, 'connected'), connA = eventLine(run.pusher, 'connected');
    assert.ok(connA && connB, outputs(run));
    assert.equal(connA.strategy, 'direct');
    assert.equal(connB.strategy, 'direct');
    assert.match(String(connA.peeraddr), new RegExp(`^${NAT_WAN.b.replaceAll('.', '\\.')}:`));
    assert.match(String(connB.peeraddr), new RegExp(`^${NAT_WAN.a.replaceAll('.', '\\.')}:`));
    assert.ok(Array.isArray(eventLine(run.pusher, 'peer')!.local), 'the candidates were shown');
    exchangedBothWays(run, 2);
  });
});

/** A node one-liner run in a namespace. */
const nodeIn = (lab: NatLab, ns: string, code: string) => jsonLines(lab.spawnIn(ns, process.execPath, ['--input-type=module', '-e', code]));

describe('a peer that names a victim\'s addresses as its local candidates', { skip }, () => {
  const lab = withLab({ a: 'cone', b: 'cone' }, {});

  test(`makes the other side send at most ${LOCAL_PROBES_PER_CANDIDATE} probes to each, ${MAX_LOCAL_PROBES} in all`, async () => {
    const l = lab();
    const victims = [5001, 5002, 5003, 5004];
    // the victim: four ports in the public segment, counting what arrives (one line per datagram)
    const victim = nodeIn(l, l.ns.pub, `
      import dgram from 'node:dgram';
      let up = 0;
      for (const port of ${JSON.stringify(victims)}) {
        const s = dgram.createSocket('udp4');
        s.on('message', (m, r) => console.log(JSON.stringify({ event: m.toString() === 'fin' ? 'fin' : 'datagram', port, from: r.address })));
        s.bind(port, '${TRACKER_IP}', () => { if (++up === ${victims.length}) console.log(JSON.stringify({ event: 'listening' })); });
      }`);
    await victim.waitFor(['listening'], 60_000);
    // the honest side waits for a push
    const honest = jsonLines(l.spawnIn(l.ns.hostB, process.execPath, [...CLI.args, 'punch', '--tracker', NO_RELAY, '--timeout', '8'], { cwd: ROOT }));
    const announced = await honest.waitFor(['announced'], 60_000);
    // the attacker: announces with the victim's addresses as its candidates, proves, pushes
    const attacker = nodeIn(l, l.ns.hostA, `
      import dgram from 'node:dgram';
      const s = dgram.createSocket('udp4');
      const to = (m) => s.send(JSON.stringify(m), ${PORT_NO_RELAY}, '${TRACKER_IP}');
      s.on('message', (b) => {
        const m = JSON.parse(b.toString());
        if (m.action === 'announceReceived') to({ action: 'pulse', shareId: m.data.shareId });
        else if (m.action === 'pulseReceived') to({ action: 'push', shareId: ${JSON.stringify(String(announced.shareId))} });
        else if (m.action === 'pushReceived') console.log(JSON.stringify({ event: 'pushed', data: m.data }));
      });
      s.bind(0, () => to({ action: 'announce', nat: 'endpoint-independent', local: ${JSON.stringify(victims.map((p) => `${TRACKER_IP}:${p}`))}, pad: 'x'.repeat(18) }));`);
    await attacker.waitFor(['pushed'], 60_000);
    const peer = await honest.waitFor(['peer'], 60_000);
    assert.deepEqual(peer.local, victims.map((p) => `${TRACKER_IP}:${p}`));
    await honest.exited; // it never connects: the attacker does not answer
    // a barrier: what the honest side sent arrived before this
    nodeIn(l, l.ns.pub, `import dgram from 'node:dgram'; const s = dgram.createSocket('udp4'); s.send('fin', ${victims[0]}, '${TRACKER_IP}', () => s.close());`);
    await victim.waitFor(['fin'], 60_000);
    const got = victim.lines.filter((x) => x.event === 'datagram');
    for (const port of victims) assert.equal(got.filter((x) => x.port === port).length, LOCAL_PROBES_PER_CANDIDATE, `port ${port}: ${JSON.stringify(got)}`);
    assert.ok(got.length <= MAX_LOCAL_PROBES);
  });
});
