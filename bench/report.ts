// Turns the bench's results into the terminal table (markdown, ready for the
// README) and writes it, the JSON and the SVG chart (chart.ts) to the results folder.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ScaleResult } from './scale.js';
import { renderSvg } from './chart.js';
import { cores, f, k, mb, pct, x } from './format.js';
import { renderAmplification } from './amplification.js';
import { renderDirectory } from './directory.js';
import { sumDrops, type BenchResults, type ServerResult, type Target } from './results.js';
import { NOISE_CORES } from './stats.js';
import { renderStun } from './stun.js';
import { renderShardCosts } from './shard-costs.js';

const dropText = (d: Record<string, number>) => (Object.keys(d).length ? Object.entries(d).map(([key, n]) => `${key} ${n}`).join(', ') : 'none');

/** The tracker the targets are about: the native path at the default shard count (what `yarn start` runs). */
function headline(servers: ServerResult[]): ServerResult | undefined {
  const trackers = servers.filter((s) => s.kind === 'tracker' && s.median);
  return trackers.find((s) => s.io === 'native' && s.shards === 'default')
    ?? trackers.find((s) => s.io === 'native' && s.shards === 1)
    ?? trackers.find((s) => s.io === 'native')
    ?? trackers[0];
}

export function buildTargets(servers: ServerResult[], scale: ScaleResult | undefined): Target[] {
  const find = (kind: string) => servers.find((s) => s.kind === kind && s.median)?.median;
  const tracker = headline(servers);
  const t = tracker?.median;
  const echo = find('echo');
  const nativeEcho = find('native-echo');
  const naive = find('naive');
  const verdict = (ok: boolean | undefined): Target['result'] => (ok === undefined ? 'n/a' : ok ? 'pass' : 'miss');
  const who = tracker ? ` (${tracker.name})` : '';
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined ? a / b : NaN);
  const vsEcho = ratio(t?.closedRate, echo?.closedRate);
  const cpuVsEcho = ratio(t?.cpuPer100k, echo?.cpuPer100k);
  const vsNativeEcho = ratio(t?.closedRate, nativeEcho?.closedRate);
  const vsNaive = ratio(t?.closedRate, naive?.closedRate);
  const check = (v: number, ok: (v: number) => boolean) => verdict(Number.isNaN(v) ? undefined : ok(v));
  const targets: Target[] = [
    { what: `replies/s ÷ Node dgram echo${who}`, goal: '≥ 1.5 ×', measured: x(vsEcho), result: check(vsEcho, (v) => v >= 1.5) },
    { what: `CPU per 100 k replies ÷ Node dgram echo's${who}`, goal: '≤ 0.5 ×', measured: x(cpuVsEcho), result: check(cpuVsEcho, (v) => v <= 0.5) },
    { what: `replies/s ÷ native echo${who}`, goal: '≥ 0.75 ×', measured: x(vsNativeEcho), result: check(vsNativeEcho, (v) => v >= 0.75) },
    {
      what: `open loop at half the measured capacity (${t ? k(t.openOffered) : '—'}/s): p99${who}`,
      goal: '≤ 1 ms',
      measured: t ? `${f(t.p99, 3)} ms` : '—',
      result: verdict(t ? t.p99 <= 1 && t.loss < 0.001 : undefined),
    },
    { what: `replies/s ÷ naive Node tracker${who}`, goal: '≥ 1.3 ×', measured: x(vsNaive), result: check(vsNaive, (v) => v >= 1.3) },
  ];
  const e = scale?.expiry;
  targets.push(
    {
      what: `RSS per live peer at ${scale ? scale.peers.toLocaleString('en') : '1 M'} peers`,
      goal: '≤ 150 B',
      measured: scale ? `${scale.bytesPerPeer.toFixed(0)} B` : '—',
      result: verdict(scale ? scale.bytesPerPeer <= 150 : undefined),
    },
    {
      what: 'longest main-thread stall while the table expires',
      goal: '≤ 10 ms',
      measured: e ? `${f(e.mainStallMs, 1)} ms` : '—',
      result: verdict(e ? e.emptied && e.mainStallMs <= 10 : undefined),
    },
  );
  if (scale && e) {
    targets.push(
      { what: 'longest shard stall while the table expires', goal: '', measured: e.shardStallMs.map((s) => `${f(s, 1)} ms`).join(', ') || '—', result: '' },
      {
        what: 'same, while the full table waits (main; shards)',
        goal: '',
        measured: `${f(e.idleMainStallMs, 1)} ms; ${e.idleShardStallMs.map((s) => `${f(s, 1)} ms`).join(', ') || '—'}`,
        result: '',
      },
      {
        what: `expiry of the whole table (ttl ${e.ttlSeconds} s)`,
        goal: '',
        measured: e.emptied ? `${f(e.expirySeconds, 1)} s (empty ${f(e.secondsToEmpty, 1)} s after fill)` : `not empty: ${e.peersLeft} left`,
        result: '',
      },
      { what: `fill ${scale.peers.toLocaleString('en')} peers`, goal: '', measured: `${f(scale.fillSeconds, 1)} s`, result: '' },
    );
  }
  return targets;
}

function row(cells: string[]): string {
  return `| ${cells.join(' | ')} |`;
}

/** Cores the server kept busy at its closed-loop rate: replies/s × CPU s per reply. */
const busyCores = (rate: number, cpuPer100k: number) => (rate * cpuPer100k) / 100_000;

/**
 * The sizing table: the native tracker by shard count, what each shard added, and
 * the CPU an instance burns at that rate. The row where replies/s stops rising is
 * where one main thread caps an instance, and another instance is the answer.
 */
export function renderSizing(r: BenchResults): string {
  const rows = r.servers
    .filter((s) => s.kind === 'tracker' && s.io === 'native' && typeof s.shards === 'number' && s.median)
    .sort((a, b) => (a.shards as number) - (b.shards as number));
  const lines = [row(['shards per instance', 'replies/s', 'vs. the row above', 'CPU cores at that rate', 'CPU s per 100 k replies']), row(['---:', '---:', '---:', '---:', '---:'])];
  rows.forEach((s, i) => {
    const m = s.median!;
    const prev = rows[i - 1]?.median;
    const gain = prev ? `${m.closedRate >= prev.closedRate ? '+' : '−'}${Math.abs((m.closedRate / prev.closedRate - 1) * 100).toFixed(0)} %` : '';
    lines.push(row([String(s.shards), k(m.closedRate), gain, f(busyCores(m.closedRate, m.cpuPer100k)), f(m.cpuPer100k)]));
  });
  return lines.join('\n');
}

export function renderTable(r: BenchResults): string {
  const base = (kind: string) => r.servers.find((s) => s.kind === kind)?.median;
  const echo = base('echo');
  const head = ['server', 'replies/s', '÷ Node echo', 'CPU s / 100 k', 'cores busy', 'half load: p99 ms', 'loss', 'RSS'];
  const lines = [row(head), row(head.map((_, i) => (i === 0 ? '---' : '---:')))];
  const cells = (name: string, closedRate: number, cpu: number, offered: number, loss: number, p99: number, rss: number): string =>
    row([name, k(closedRate), x(closedRate / (echo?.closedRate ?? NaN)), f(cpu), f(busyCores(closedRate, cpu)), `${f(p99, 3)} (at ${k(offered)}/s)`, pct(loss), mb(rss)]);
  const quality: string[] = [];
  for (const s of r.servers) {
    const m = s.median;
    if (!m) {
      lines.push(row([s.name, `not run: ${(s.error ?? '').split('\n')[0]!.slice(0, 80)}`, ...head.slice(2).map(() => '')]));
      continue;
    }
    const flag = m.unknownSession > 0 || Object.keys(m.drops).length > 0 ? ' ⚠' : '';
    lines.push(cells(s.name + flag, m.closedRate, m.cpuPer100k, m.openOffered, m.loss, m.p99, m.rssBytes));
    quality.push(`${s.name}: ${m.quietRounds}/${m.rounds} quiet, generator ${pct(m.generatorBusy)}, others ${cores(m.othersCores)}`);
  }
  const sc = r.scale;
  if (sc) {
    const c = sc.closed;
    const o = sc.open;
    lines.push(cells(`tracker, ${sc.io}, default shards, ${sc.peers.toLocaleString('en')} peers`, c.load.replyRate, c.cpuPer100k, o.load.offered, o.load.loss, o.load.latencyMs.p99, o.rssBytes));
    quality.push(`${sc.peers.toLocaleString('en')} peers: 1 run, generator ${pct(c.load.generatorBusy)}, others ${cores(c.othersCores)}`);
  }
  const o = r.options;
  const gen = o.generator === 'native'
    ? 'The load generator is the C one (bench/native/bench.c): one thread, epoll, recvmmsg/sendmmsg.'
    : 'The load generator is Node (worker threads of dgram sockets); it needs about a core itself.';
  const out = [
    `Pulses over loopback, medians of ${o.rounds} interleaved rounds of ${o.seconds} s. ${gen} Every client has its own source IP (127.0.X.Y); against a tracker it announces, proves it receives with one pulse carrying its shareId, then sends plain pulses. Closed loop: ${o.clients} clients × ${o.window} in flight. Open loop: ${o.rate > 0 ? `${k(o.rate)} pulses/s offered` : 'each server is offered half the closed-loop rate it sustained in the same round'}. ${r.machine.cpus} × ${r.machine.cpuModel}, Node ${r.machine.node}, ${r.date.slice(0, 10)}.`,
    '',
    ...lines,
    '',
    `replies/s: the sustained closed-loop rate (the capacity). CPU s / 100 k: the server\'s CPU time, all threads, per 100 k replies; cores busy: the same at the closed-loop rate. half load: the open loop at half that rate, p99 latency from the scheduled send to the reply, and the pulses lost. RSS: the server\'s resident memory after the run.`,
    '',
    `Measurement quality (quiet: rounds in which other processes took less than ${NOISE_CORES} of a core; the medians use those, or all rounds if none was quiet; a generator near 100 % set the limit itself): ${quality.join('; ')}.`,
    '',
    'By shard count (native path):',
    '',
    renderSizing(r),
    '',
    row(['target', 'goal', 'measured', 'result']),
    row(['---', '---', '---', '---']),
    ...r.targets.map((t) => row([t.what, t.goal, t.measured, t.result])),
  ];
  const trackers = r.servers.filter((s) => s.kind === 'tracker' && s.median);
  out.push('', `Tracker drops during the load tests (all rounds, setup included): ${trackers.map((s) => `${s.name}: ${dropText(s.median!.drops)}`).join('; ') || '—'}${sc ? `; ${sc.peers.toLocaleString('en')} peers: ${dropText(sumDrops([sc.closed.drops, sc.open.drops]))}` : ''}. Clients that failed to prove: ${r.servers.reduce((a, s) => a + (s.median?.proofFailed ?? 0), 0)}.`);
  if (r.servers.some((s) => (s.median?.unknownSession ?? 0) > 0)) out.push('', '⚠ some pulses were answered with status "1" (session unknown to the server).');
  if (r.stun) out.push('', renderStun(r.stun));
  if (r.stunError) out.push('', `STUN phase: ${r.stunError.split('\n')[0]}`);
  if (r.shardCosts) out.push('', renderShardCosts(r.shardCosts));
  if (r.amplification) out.push('', renderAmplification(r.amplification));
  if (r.directory) out.push('', renderDirectory(r.directory));
  if (r.directoryError) out.push('', `several-instances phase failed: ${r.directoryError.split('\n')[0]}`);
  if (r.scaleError) out.push('', `scale phase failed: ${r.scaleError.split('\n')[0]}`);
  return out.join('\n');
}

export function writeResults(r: BenchResults): { json: string; svg: string; md: string } {
  mkdirSync(r.options.out, { recursive: true });
  const stamp = r.date.replace(/[:.]/g, '-');
  const json = join(r.options.out, `bench-${stamp}.json`);
  const svg = join(r.options.out, `bench-${stamp}.svg`);
  const md = join(r.options.out, `bench-${stamp}.md`);
  writeFileSync(json, JSON.stringify(r, null, 2) + '\n');
  writeFileSync(svg, renderSvg(r));
  writeFileSync(md, renderTable(r) + '\n');
  // Stable names for the latest run, e.g. for the README to link to.
  writeFileSync(join(r.options.out, 'latest.json'), JSON.stringify(r, null, 2) + '\n');
  writeFileSync(join(r.options.out, 'latest.svg'), renderSvg(r));
  writeFileSync(join(r.options.out, 'latest.md'), renderTable(r) + '\n');
  return { json, svg, md };
}
