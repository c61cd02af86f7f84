// `yarn bench:nat`: every pair of NATs, many times, through real NATs in network
// namespaces (test/helpers/netns.ts: the same lab as test/nat-punch.test.ts; needs
// root, ip and nft). Each run is two users with the built CLI (dist/): one runs
// `punch` and waits, the other pushes to it; both discover their NAT through the
// tracker's STUN, pick a strategy, connect, and exchange datagrams for a second.
// Per pair it reports the success rate, the time to connect and the probes sent.
//
//   time to connect: from the tracker's answer (pushReceived on one side, income on
//                    the other) to `connected`, the later of the two sides; process
//                    start, discovery and announce are not in it
//   probes:          datagrams both sides sent toward each other before connecting
//   loss:            of the exchange's datagrams, both ways
//
// Then a roaming row per pair kind (issue 24): the same call, with a 5 s exchange,
// and 2 s in (100 of A's datagrams counted at B's NAT) A's NAT switches its public
// IP (test/helpers/netns-roaming.ts). Per kind: the runs in which both sides
// reconnected and exited 0, how long traffic stopped (the longer side's longest gap
// between the peer's datagrams, p50 / p95) and the share of datagrams delivered.
//
// `--only punch|roaming` and `--pair TEXT` (a part of a pair's name) run a part.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  NAT_WAN, TRACKER_IP, TRACKER_OTHER_IP, createNatLab, eventLine, netnsUnavailableReason, punchPair, startInPub,
  type Cli, type LabLayout, type NatKind, type NatLab, type PairRun, type Side,
} from '../test/helpers/netns.js';
import { median } from './stats.js';
import { coturnArgs, coturnUnavailableReason } from '../test/helpers/coturn.js';
import { NAT_WAN_SWITCHED, roamingPair, switchPublicIp } from '../test/helpers/netns-roaming.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url)); // dist/bench/ -> the checkout
const PORT = 3478;

interface Pair { name: string; nat: { a: NatKind; b: NatKind }; layout?: LabLayout; announcer: Side; expect: 'direct' | 'relay' }
const PAIRS: Pair[] = [
  { name: 'cone ↔ cone', nat: { a: 'cone', b: 'cone' }, announcer: 'b', expect: 'direct' },
  { name: 'cone ↔ symmetric (cone announces)', nat: { a: 'symmetric', b: 'cone' }, announcer: 'b', expect: 'direct' },
  { name: 'symmetric ↔ cone (symmetric announces)', nat: { a: 'cone', b: 'symmetric' }, announcer: 'b', expect: 'direct' },
  { name: 'symmetric ↔ symmetric', nat: { a: 'symmetric', b: 'symmetric' }, announcer: 'b', expect: 'relay' },
  // local candidates (issue 25): one non-hairpinning NAT for both; a home cone NAT behind a carrier NAT
  { name: 'same cone NAT (no hairpinning)', nat: { a: 'cone', b: 'cone' }, layout: { sameNat: true }, announcer: 'b', expect: 'direct' },
  { name: 'home cone behind carrier cone ↔ cone', nat: { a: 'cone', b: 'cone' }, layout: { carrier: 'cone' }, announcer: 'b', expect: 'direct' },
  { name: 'home cone behind carrier symmetric ↔ cone', nat: { a: 'cone', b: 'cone' }, layout: { carrier: 'symmetric' }, announcer: 'b', expect: 'direct' },
];
/** coturn on the public segment, the tracker's relay (as in test/nat-punch.test.ts). */
const RELAY_PORT = 3492;
const RELAY_SECRET = 'bench-turn-secret';

interface RunResult { ok: boolean; path?: string; strategy?: string; connectMs?: number; probes: number; sent: number; received: number; reason?: string }
export interface PairResult {
  pair: string; runs: number; connected: number; firstAttempt: boolean; paths: Record<string, number>; strategies: Record<string, number>;
  p50ms: number; p95ms: number; probesP50: number; loss: number; failures: string[];
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

function read(run: PairRun): RunResult {
  const sides = [run.announcer, run.pusher];
  const conn = sides.map((p) => eventLine(p, 'connected'));
  const peer = sides.map((p) => eventLine(p, 'peer'));
  const ex = sides.map((p) => eventLine(p, 'exchanged') as { sent: number; received: number } | undefined);
  const probes = sides.reduce((n, p) => n + Number(eventLine(p, 'connected')?.probes ?? eventLine(p, 'failed')?.probes ?? 0), 0);
  if (conn.some((c) => c === undefined)) {
    const failed = sides.map((p) => eventLine(p, 'failed')?.reason).find((r) => r !== undefined);
    return { ok: false, probes, sent: 0, received: 0, reason: String(failed ?? 'no connected line') };
  }
  const connectMs = Math.max(...conn.map((c, i) => Number(c!.ms) - Number(peer[i]?.ms ?? 0)));
  return {
    ok: run.exits.every((e) => e.code === 0), path: String(conn[0]!.path), strategy: `${String(conn[0]!.strategy)}/${String(conn[1]!.strategy)}`,
    connectMs, probes, sent: (ex[0]?.sent ?? 0) + (ex[1]?.sent ?? 0), received: (ex[0]?.received ?? 0) + (ex[1]?.received ?? 0),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ args: process.argv.slice(2), options: {
    runs: { type: 'string', default: '20' }, out: { type: 'string', default: 'bench/results' }, help: { type: 'boolean', default: false },
    only: { type: 'string' }, pair: { type: 'string' },
  } });
  if (values.help) {
    process.stdout.write('yarn bench:nat [--runs N (default 20)] [--out DIR] [--only punch|roaming] [--pair TEXT (only the pairs whose name contains it)]\n');
    return;
  }
  if (values.only !== undefined && values.only !== 'punch' && values.only !== 'roaming') throw new Error('--only is punch or roaming');
  const wanted = (name: string): boolean => values.pair === undefined || name.includes(values.pair);
  const why = netnsUnavailableReason() ?? coturnUnavailableReason();
  if (why) throw new Error(`the NAT matrix needs network namespaces and coturn: ${why}`);
  const runs = Math.max(1, Number(values.runs));
  const cli: Cli = { cwd: ROOT, args: ['dist/src/cli.js'] };
  const results: PairResult[] = [];
  for (const pair of values.only === 'roaming' ? [] : PAIRS.filter((p) => wanted(p.name))) {
    const lab: NatLab = createNatLab(pair.nat, pair.layout);
    try {
      await startInPub(lab, 'turnserver', coturnArgs({ listeningIp: TRACKER_IP, listeningPort: RELAY_PORT, minPort: 49152, maxPort: 49999,
        secret: RELAY_SECRET, realm: 'sobani.bench', allowLoopbackPeers: false }), RELAY_PORT);
      await startInPub(lab, process.execPath, [...cli.args, '--host', TRACKER_IP, '--port', String(PORT), '--stun-other-host', TRACKER_OTHER_IP,
        '--turn-url', `turn:${TRACKER_IP}:${RELAY_PORT}`, '--turn-secret', RELAY_SECRET, '--shards', '2', '--log-level', 'warn'], PORT, ROOT);
      const got: RunResult[] = [];
      for (let i = 0; i < runs; i++) {
        process.stderr.write(`\r${pair.name}: run ${i + 1}/${runs}   `);
        got.push(read(await punchPair(lab, cli, pair.announcer, { a: `${TRACKER_IP}:${PORT}`, b: `${TRACKER_IP}:${PORT}` },
          ['--exchange', '1', '--timeout', '8'])));
      }
      process.stderr.write('\n');
      const ok = got.filter((r) => r.ok);
      const count = (f: (r: RunResult) => string | undefined) => ok.reduce<Record<string, number>>((m, r) => { const k = f(r) ?? '?'; m[k] = (m[k] ?? 0) + 1; return m; }, {});
      const sent = ok.reduce((n, r) => n + r.sent, 0), received = ok.reduce((n, r) => n + r.received, 0);
      results.push({
        pair: pair.name, runs, connected: ok.length, firstAttempt: got[0]?.ok ?? false,
        paths: count((r) => r.path), strategies: count((r) => r.strategy),
        p50ms: percentile(ok.map((r) => r.connectMs!), 50), p95ms: percentile(ok.map((r) => r.connectMs!), 95),
        probesP50: median(got.map((r) => r.probes)), loss: sent === 0 ? NaN : 1 - received / sent,
        failures: [...new Set(got.filter((r) => !r.ok).map((r) => r.reason ?? '?'))],
      });
    } finally {
      await lab.destroy();
    }
  }
  const roaming: RoamingResult[] = [];
  for (const kind of values.only === 'punch' ? [] : ROAMING.filter((p) => wanted(p.name))) roaming.push(await roamingRow(kind, runs, cli));
  const table = [results.length > 0 ? render(results, runs) : '', roaming.length > 0 ? renderRoaming(roaming, runs) : ''].filter((t) => t !== '').join('\n\n');
  mkdirSync(values.out, { recursive: true });
  writeFileSync(join(values.out, 'nat-matrix-latest.json'), JSON.stringify({ date: new Date().toISOString(), runs, results, roaming }, null, 2) + '\n');
  writeFileSync(join(values.out, 'nat-matrix-latest.md'), table + '\n');
  process.stdout.write(table + '\n');
}

/** The roaming rows: A's NAT (the first kind) switches its public IP mid-call. */
const ROAMING: { name: string; nat: { a: NatKind; b: NatKind } }[] = [
  { name: 'cone ↔ cone', nat: { a: 'cone', b: 'cone' } },
  { name: 'cone ↔ symmetric', nat: { a: 'cone', b: 'symmetric' } },
  { name: 'symmetric ↔ symmetric', nat: { a: 'symmetric', b: 'symmetric' } },
];
const ROAM_EXCHANGE_S = 5;
const ROAM_CHANGE_AFTER = 100;

export interface RoamingResult { pair: string; runs: number; recovered: number; stoppedP50ms: number; stoppedP95ms: number; delivered: number; failures: string[] }

async function roamingRow(kind: (typeof ROAMING)[number], runs: number, cli: Cli): Promise<RoamingResult> {
  const lab: NatLab = createNatLab(kind.nat);
  const stopped: number[] = [];
  let recovered = 0, sent = 0, received = 0;
  const failures = new Set<string>();
  try {
    await startInPub(lab, 'turnserver', coturnArgs({ listeningIp: TRACKER_IP, listeningPort: RELAY_PORT, minPort: 49152, maxPort: 49999,
      secret: RELAY_SECRET, realm: 'sobani.bench', allowLoopbackPeers: false }), RELAY_PORT);
    await startInPub(lab, process.execPath, [...cli.args, '--host', TRACKER_IP, '--port', String(PORT), '--stun-other-host', TRACKER_OTHER_IP,
      '--turn-url', `turn:${TRACKER_IP}:${RELAY_PORT}`, '--turn-secret', RELAY_SECRET, '--shards', '2', '--log-level', 'warn'], PORT, ROOT);
    let at: string = NAT_WAN.a;
    for (let i = 0; i < runs; i++) {
      process.stderr.write(`\rroaming ${kind.name}: run ${i + 1}/${runs}   `);
      const from = at, to = at === NAT_WAN.a ? NAT_WAN_SWITCHED.a : NAT_WAN.a;
      const run = await roamingPair(lab, cli, `${TRACKER_IP}:${PORT}`, {
        exchangeS: ROAM_EXCHANGE_S, changeAfter: ROAM_CHANGE_AFTER, countFrom: kind.nat.a === 'symmetric' && kind.nat.b === 'symmetric' ? TRACKER_IP : from, extra: ['--timeout', '8'],
        change: () => { switchPublicIp(lab, 'a', from, to); at = to; },
      });
      const ex = [run.a, run.b].map((p) => eventLine(p, 'exchanged') as { sent: number; received: number; stoppedMs?: number } | undefined);
      const ok = run.exits.every((e) => e.code === 0) && [run.a, run.b].every((p) => eventLine(p, 'reconnected') !== undefined);
      if (ok) recovered++;
      else failures.add(String([run.a, run.b].map((p) => eventLine(p, 'failed')?.reason).find((r) => r !== undefined) ?? 'no reconnected line'));
      sent += (ex[0]?.sent ?? 0) + (ex[1]?.sent ?? 0);
      received += (ex[0]?.received ?? 0) + (ex[1]?.received ?? 0);
      if (ex.every((e) => e?.stoppedMs !== undefined)) stopped.push(Math.max(...ex.map((e) => e!.stoppedMs!)));
    }
    process.stderr.write('\n');
  } finally {
    await lab.destroy();
  }
  return { pair: kind.name, runs, recovered, stoppedP50ms: percentile(stopped, 50), stoppedP95ms: percentile(stopped, 95),
    delivered: sent === 0 ? NaN : received / sent, failures: [...failures] };
}

export function renderRoaming(results: RoamingResult[], runs: number): string {
  const ms = (n: number) => (Number.isFinite(n) ? `${Math.round(n)} ms` : '—');
  return [
    `<!-- bench:nat roaming -->`,
    `Roaming: the same pairs, ${runs} runs each: a ${ROAM_EXCHANGE_S} s exchange during which A's NAT switches its public IP (after ${ROAM_CHANGE_AFTER} of A's datagrams reached B's NAT).`,
    '',
    '| pair (A ↔ B) | recovered | traffic stopped p50 | p95 | delivered | failures |',
    '| --- | ---: | ---: | ---: | ---: | --- |',
    ...results.map((r) => `| ${r.pair} | ${r.recovered}/${r.runs} | ${ms(r.stoppedP50ms)} | ${ms(r.stoppedP95ms)} | ${Number.isFinite(r.delivered) ? `${(r.delivered * 100).toFixed(1)} %` : '—'} | ${r.failures.map((f) => f.slice(0, 90)).join('; ') || 'none'} |`),
    '',
    'traffic stopped: the longer of the two sides\' longest gap between the peer\'s datagrams. delivered: of both sides\' exchange datagrams.',
  ].join('\n');
}

export function render(results: PairResult[], runs: number): string {
  const pct = (n: number) => `${(n * 100).toFixed(n === 1 || n === 0 ? 0 : 1)} %`;
  const lines = [
    `NAT pairs through real nftables NATs in network namespaces, the tracker with a second address and coturn as its relay, ${runs} runs per pair (each: two fresh \`punch\` processes: discovery, announce, push, connect, then 1 s of 50 datagrams/s each way).`,
    '',
    '| pair | connected | path | strategies (announcer/pusher) | time to connect p50 | p95 | probes p50 (both sides) | exchange loss | failures |',
    '| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |',
    ...results.map((r) => `| ${r.pair} | ${r.connected}/${r.runs} (${pct(r.connected / r.runs)}) | ${Object.entries(r.paths).map(([k, n]) => `${k} ${n}`).join(', ') || '—'} | ${Object.entries(r.strategies).map(([k, n]) => `${k} ${n}`).join(', ') || '—'} | ${Number.isFinite(r.p50ms) ? `${Math.round(r.p50ms)} ms` : '—'} | ${Number.isFinite(r.p95ms) ? `${Math.round(r.p95ms)} ms` : '—'} | ${Math.round(r.probesP50)} | ${Number.isFinite(r.loss) ? pct(r.loss) : '—'} | ${r.failures.map((f) => f.slice(0, 90)).join('; ') || 'none'} |`),
    '',
    'time to connect: from the tracker\'s answer (pushReceived, income) to `connected`, the later side. probes: datagrams both sides sent toward each other before connecting.',
  ];
  return lines.join('\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:nat: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
