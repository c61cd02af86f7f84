/**
 * A call survives a network change (issue 24), end to end through real NATs in
 * network namespaces (test/helpers/netns.ts; the changes in
 * test/helpers/netns-roaming.ts): A and B connect with `punch --exchange`, and a
 * few seconds into the exchange (counted in A's datagrams that reached B's NAT, not
 * in time) A's NAT changes A's public address. Both sides must notice (the peer
 * falls silent), A's session must follow it to the new address (its token, the
 * tracker's path challenge), and the two must punch again and carry on over the
 * same path. Counted over the exchange's fixed number of sends: at least 90 % of
 * each side's datagrams reach the other; afterwards a push to A's original shareId
 * returns A's new address. Needs root, `ip` and `nft`; skips with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parsePeerAddr } from '../src/client/index.js';
import { NAT_WAN, TRACKER_IP, TRACKER_OTHER_IP, createNatLab, eventLine, jsonLines, netnsUnavailableReason, startInPub } from './helpers/netns.js';
import type { NatKind, NatLab } from './helpers/netns.js';
import { NAT_WAN_SWITCHED, REBOUND_PORTS, rebindPort, roamingPair, switchPublicIp, type RoamRun } from './helpers/netns-roaming.js';
import { onceInNativePass } from './helpers/wire.js';
import { coturnArgs } from './helpers/coturn.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PORT = 3478;
const TRACKER = `${TRACKER_IP}:${PORT}`;
const CLI = ['--import', 'tsx', 'src/cli.ts'];
/** Seconds of --exchange (50 datagrams a second each way). */
const EXCHANGE_S = 20;
/** The change happens once this many of A's datagrams reached B's NAT (about 6 s into the exchange). */
const CHANGE_AFTER = 300;
/** Generous bounds for a failing run only: a process start, discovery, a push. */
const CONNECT_TIMEOUT_S = 60;
const WAIT_MS = 120_000;

const skip = netnsUnavailableReason() ?? onceInNativePass('end to end through the NAT lab; the tracker\'s I/O paths are tested elsewhere');
if (skip) console.log(`# nat-roaming: skipped: ${skip}`);

const skipCoturn = skip || (spawnSync('turnserver', ['--version']).error ? 'coturn is not installed (apt-get install coturn; .ci/run does it)' : false);
/** The relay: coturn on the public segment, sharing a secret with the tracker. */
const RELAY_PORT = 3492;
const RELAY_SECRET = 'roaming-test-turn-secret';

function withLab(nat: { a: NatKind; b: NatKind }, { relay = false } = {}): () => NatLab {
  let lab: NatLab | undefined;
  before(async () => {
    lab = createNatLab(nat);
    if (relay) {
      await startInPub(lab, 'turnserver', coturnArgs({ listeningIp: TRACKER_IP, listeningPort: RELAY_PORT, minPort: 49152, maxPort: 49251,
        secret: RELAY_SECRET, realm: 'sobani.test', allowLoopbackPeers: false }), RELAY_PORT);
    }
    await startInPub(lab, process.execPath, [...CLI, '--host', TRACKER_IP, '--port', String(PORT), '--shards', '2', '--log-level', 'warn',
      '--stun-other-host', TRACKER_OTHER_IP, ...(relay ? ['--turn-url', `turn:${TRACKER_IP}:${RELAY_PORT}`, '--turn-secret', RELAY_SECRET] : [])], PORT, ROOT);
  });
  after(async () => { await lab?.destroy(); });
  return () => lab as NatLab;
}

/** B announces and waits, A pushes to it; both exchange; `change` runs once CHANGE_AFTER of A's datagrams reached B's NAT. */
const roamingPairHere = (lab: NatLab, change: () => void, countFrom?: string): Promise<RoamRun> =>
  roamingPair(lab, { cwd: ROOT, args: CLI }, TRACKER, { exchangeS: EXCHANGE_S, changeAfter: CHANGE_AFTER, extra: ['--timeout', String(CONNECT_TIMEOUT_S)], waitMs: WAIT_MS,
    change, ...(countFrom !== undefined ? { countFrom } : {}) });

const outputs = (run: RoamRun): string =>
  `A (exit ${run.exits[0]?.code}): ${JSON.stringify(run.a.lines)} ${run.a.stderr()}\nB (exit ${run.exits[1]?.code}): ${JSON.stringify(run.b.lines)} ${run.b.stderr()}`;

/** Both exited 0, and each got at least 90 % of the other's datagrams over the exchange. */
function survived(run: RoamRun): string {
  assert.deepEqual(run.exits.map((e) => e.code), [0, 0], outputs(run));
  const ea = eventLine(run.a, 'exchanged') as { sent: number; received: number; stoppedMs: number } | undefined;
  const eb = eventLine(run.b, 'exchanged') as { sent: number; received: number; stoppedMs: number } | undefined;
  assert.ok(ea && eb, outputs(run));
  assert.equal(ea.sent, EXCHANGE_S * 50);
  assert.equal(eb.sent, EXCHANGE_S * 50);
  assert.ok(ea.received >= 0.9 * eb.sent, `A got ${ea.received} of B's ${eb.sent}\n${outputs(run)}`);
  assert.ok(eb.received >= 0.9 * ea.sent, `B got ${eb.received} of A's ${ea.sent}\n${outputs(run)}`);
  for (const [name, p] of [['A', run.a], ['B', run.b]] as const) assert.ok(eventLine(p, 'reconnected'), `${name} printed no reconnected line\n${outputs(run)}`);
  return `A got ${ea.received}/${eb.sent} (traffic stopped ${ea.stoppedMs} ms at most), B got ${eb.received}/${ea.sent} (${eb.stoppedMs} ms); ` +
    `A reconnected after ${String(eventLine(run.a, 'reconnected')?.ms)} ms, B after ${String(eventLine(run.b, 'reconnected')?.ms)} ms`;
}

/** A push to `shareId` from a fresh client behind B's NAT: the peeraddr the tracker answers with. */
async function pushFromB(lab: NatLab, shareId: string): Promise<string> {
  const p = jsonLines(lab.spawnIn(lab.ns.hostB, process.execPath, [...CLI, 'push', '--tracker', TRACKER, shareId], { cwd: ROOT }));
  const { code } = await p.exited;
  const reply = p.lines.find((l) => l.action === 'pushReceived') as { data?: { peeraddr?: string } } | undefined;
  assert.equal(code, 0, `push: ${JSON.stringify(p.lines)} ${p.stderr()}`);
  assert.ok(reply?.data?.peeraddr, JSON.stringify(p.lines));
  return reply.data.peeraddr;
}

describe('two cone NATs: A\'s NAT switches its public IP mid-exchange', { skip }, () => {
  const lab = withLab({ a: 'cone', b: 'cone' });

  test('both notice, A\'s session follows it, they punch again: >= 90 % of the datagrams arrive both ways, and A\'s shareId now resolves to its new address', async (t) => {
    const run = await roamingPairHere(lab(), () => switchPublicIp(lab(), 'a', NAT_WAN.a, NAT_WAN_SWITCHED.a));
    const summary = survived(run);
    const moved = run.a.lines.find((l) => l.event === 'moved' && l.side === 'local');
    assert.ok(moved, `A printed no moved line\n${outputs(run)}`);
    assert.equal(parsePeerAddr(String(moved.to)).host, NAT_WAN_SWITCHED.a);
    const peerMoved = run.b.lines.find((l) => l.event === 'moved' && l.side === 'peer');
    assert.ok(peerMoved, `B was not told A moved\n${outputs(run)}`);
    assert.equal(parsePeerAddr(String(peerMoved.to)).host, NAT_WAN_SWITCHED.a);
    assert.equal(eventLine(run.a, 'announced')?.shareId, run.shareIdA, 'A kept its shareId');
    assert.equal(run.a.lines.filter((l) => l.event === 'announced').length, 1, 'A never re-announced');
    assert.equal(parsePeerAddr(await pushFromB(lab(), run.shareIdA)).host, NAT_WAN_SWITCHED.a);
    t.diagnostic(summary);
  });
});

describe('two cone NATs: A\'s NAT rebinds (same public IP, new port) mid-exchange', { skip }, () => {
  const lab = withLab({ a: 'cone', b: 'cone' });

  test('the documented client keeps its session on the new port, and the call goes on', async (t) => {
    const run = await roamingPairHere(lab(), () => rebindPort(lab(), 'a', NAT_WAN.a));
    const summary = survived(run);
    const at = parsePeerAddr(await pushFromB(lab(), run.shareIdA));
    assert.equal(at.host, NAT_WAN.a);
    assert.ok(at.port >= REBOUND_PORTS.first && at.port <= REBOUND_PORTS.last, `A's port after the rebinding: ${at.port}`);
    t.diagnostic(summary);
  });
});

describe('a cone NAT and a symmetric NAT: the cone side switches its public IP mid-exchange', { skip }, () => {
  const lab = withLab({ a: 'cone', b: 'symmetric' });

  test('the birthday punch again: >= 90 % of the datagrams arrive both ways, and A\'s shareId resolves to its new address', async (t) => {
    const run = await roamingPairHere(lab(), () => switchPublicIp(lab(), 'a', NAT_WAN.a, NAT_WAN_SWITCHED.a));
    const summary = survived(run);
    assert.equal(eventLine(run.a, 'reconnected')?.strategy, 'birthday-easy');
    assert.equal(eventLine(run.b, 'reconnected')?.strategy, 'birthday-hard');
    assert.equal(parsePeerAddr(await pushFromB(lab(), run.shareIdA)).host, NAT_WAN_SWITCHED.a);
    t.diagnostic(summary);
  });
});

describe('two symmetric NATs, through the relay: A switches its public IP mid-exchange', { skip: skipCoturn }, () => {
  const lab = withLab({ a: 'symmetric', b: 'symmetric' }, { relay: true });

  test('A allocates again from its new address and B follows: >= 90 % of the datagrams arrive both ways, and A\'s shareId resolves to its new address', async (t) => {
    // through the relay, A's datagrams reach B's NAT from the relay's address
    const run = await roamingPairHere(lab(), () => switchPublicIp(lab(), 'a', NAT_WAN.a, NAT_WAN_SWITCHED.a), TRACKER_IP);
    const summary = survived(run);
    for (const p of [run.a, run.b]) assert.equal(eventLine(p, 'reconnected')?.path, 'relay', JSON.stringify(p.lines));
    assert.equal(parsePeerAddr(await pushFromB(lab(), run.shareIdA)).host, NAT_WAN_SWITCHED.a);
    t.diagnostic(summary);
  });
});
