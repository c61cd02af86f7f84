// `yarn bench --soak SECONDS` (not in CI): the tracker (default shards, a short
// TTL) under a steady open-loop load with churn (loadgen/soak-worker.ts) for
// minutes. Every few seconds: RSS, live peers, and the longest event-loop delay
// since the previous sample on the main thread and in the shards
// (stats({resetLoopDelay:true})). The verdict compares the first and the last
// quarter of the run, after a warm-up of two TTLs (the table grows until
// sessions start to expire as fast as they arrive).
import { Worker } from 'node:worker_threads';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import type { BenchOptions } from './options.js';
import type { Progress } from './progress.js';
import { ServerHandle, trackerIo } from './servers.js';
import { dropDelta, dropTotals } from './child-ipc.js';
import type { SoakCounts, SoakSpec } from './loadgen/soak-worker.js';
import { median } from './stats.js';
import { f, k, mb } from './format.js';

export interface SoakSample {
  atS: number;
  rssBytes: number;
  peers: number;
  mainDelayMs: number;
  shardDelayMs: number;
  sent: number;
  replies: number;
}

export interface SoakQuarter {
  fromS: number;
  toS: number;
  rssMedianBytes: number;
  peersMedian: number;
  mainDelayMaxMs: number;
  shardDelayMaxMs: number;
  /** Median of the per-sample maxima: less sensitive to one noisy stall. */
  mainDelayMedianMs: number;
  shardDelayMedianMs: number;
}

export interface SoakResult {
  date: string;
  machine: { node: string; cpus: number; cpuModel: string };
  seconds: number;
  ttl: number;
  spec: Omit<SoakSpec, 'port'>;
  warmupS: number;
  samples: SoakSample[];
  first: SoakQuarter;
  last: SoakQuarter;
  rssVerdict: 'flat' | 'growing';
  delayVerdict: 'flat' | 'growing';
  counts: SoakCounts;
  replyRate: number;
  drops: Record<string, number>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const EXT = extname(fileURLToPath(import.meta.url));
const WORKER = new URL('./loadgen/soak-worker' + EXT, import.meta.url);

function startWorker(spec: SoakSpec): Worker {
  if (EXT !== '.ts') return new Worker(WORKER, { workerData: spec, name: 'soak-load' });
  const tsx = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(WORKER.href)}); });`;
  return new Worker(code, { eval: true, workerData: spec, name: 'soak-load' });
}

function quarter(xs: SoakSample[]): SoakQuarter {
  const max = (v: number[]) => v.reduce((a, b) => (b > a ? b : a), 0);
  return {
    fromS: xs[0]?.atS ?? NaN,
    toS: xs.at(-1)?.atS ?? NaN,
    rssMedianBytes: median(xs.map((x) => x.rssBytes)),
    peersMedian: median(xs.map((x) => x.peers)),
    mainDelayMaxMs: max(xs.map((x) => x.mainDelayMs)),
    shardDelayMaxMs: max(xs.map((x) => x.shardDelayMs)),
    mainDelayMedianMs: median(xs.map((x) => x.mainDelayMs)),
    shardDelayMedianMs: median(xs.map((x) => x.shardDelayMs)),
  };
}

export async function runSoak(opts: BenchOptions, progress: Progress): Promise<SoakResult> {
  const ttl = opts.soakTtl;
  const rate = opts.soakRate;
  const spec: Omit<SoakSpec, 'port'> = {
    rate,
    population: Math.max(100, Math.round(rate / 10)), // each client keeps alive ~10 times a second
    churn: Math.max(5, Math.round(rate / 200)), // ~0.5 % of the population replaced per second
    pushRate: Math.max(10, Math.round(rate / 100)),
  };
  const interval = Math.max(2, Math.min(10, opts.soak / 40)) * 1000;
  progress.start(`soak: ${opts.soak} s at ${k(rate)} keep-alives/s, ttl ${ttl} s`);
  const server = await ServerHandle.start({ kind: 'tracker', io: trackerIo(), shards: 'default', ttl });
  const worker = startWorker({ ...spec, port: server.port });
  worker.on('error', (e) => progress.log(`soak load generator: ${e.message}`));
  let counts: SoakCounts | undefined;
  worker.on('message', (m: { type: string; counts: SoakCounts }) => (counts = m.counts));
  const samples: SoakSample[] = [];
  try {
    const drops0 = dropTotals(await server.stats(true));
    const t0 = Date.now();
    while (Date.now() - t0 < opts.soak * 1000) {
      await sleep(Math.min(interval, t0 + opts.soak * 1000 - Date.now()));
      const [st, usage] = await Promise.all([server.stats(true), server.usage()]);
      const s: SoakSample = {
        atS: (Date.now() - t0) / 1000,
        rssBytes: usage.rssBytes,
        peers: st.peers,
        mainDelayMs: st.mainLoopDelayMaxMs ?? NaN,
        shardDelayMs: Math.max(0, ...(st.shards ?? []).map((x) => x.loopDelayMaxMs)),
        sent: counts?.sent ?? 0,
        replies: counts?.replies ?? 0,
      };
      samples.push(s);
      progress.update(`${s.atS.toFixed(0)} s · RSS ${mb(s.rssBytes)} · ${s.peers} peers · delay ${f(s.mainDelayMs, 1)} / ${f(s.shardDelayMs, 1)} ms`);
    }
    const done = new Promise<SoakCounts>((resolve) => worker.on('message', (m: { type: string; counts: SoakCounts }) => m.type === 'done' && resolve(m.counts)));
    worker.postMessage({ type: 'stop' });
    counts = await Promise.race([done, sleep(5000).then(() => counts!)]);
    const drops = dropDelta(drops0, dropTotals(await server.stats()));
    const warmupS = Math.min(2 * ttl, opts.soak / 4);
    const steady = samples.filter((s) => s.atS >= warmupS);
    const q = Math.max(1, Math.floor(steady.length / 4));
    const first = quarter(steady.slice(0, q));
    const last = quarter(steady.slice(-q));
    const span = samples.length > 1 ? samples.at(-1)!.atS - samples[0]!.atS : 1;
    return {
      date: new Date().toISOString(),
      machine: { node: process.version, cpus: cpus().length, cpuModel: cpus()[0]?.model.trim() ?? 'unknown' },
      seconds: opts.soak,
      ttl,
      spec,
      warmupS,
      samples,
      first,
      last,
      // Growing: the last quarter's RSS is over 10 % and 8 MB above the first's.
      rssVerdict: last.rssMedianBytes > first.rssMedianBytes * 1.1 && last.rssMedianBytes - first.rssMedianBytes > 8 * 2 ** 20 ? 'growing' : 'flat',
      // Growing: the typical (median) per-sample stall doubled and is over 5 ms.
      delayVerdict:
        Math.max(last.mainDelayMedianMs, last.shardDelayMedianMs) > 2 * Math.max(first.mainDelayMedianMs, first.shardDelayMedianMs) &&
        Math.max(last.mainDelayMedianMs, last.shardDelayMedianMs) > 5
          ? 'growing'
          : 'flat',
      counts: counts!,
      replyRate: samples.length > 1 ? (samples.at(-1)!.replies - samples[0]!.replies) / span : NaN,
      drops,
    };
  } finally {
    await worker.terminate();
    await server.close();
  }
}

function row(cells: string[]): string {
  return `| ${cells.join(' | ')} |`;
}

export function renderSoak(r: SoakResult): string {
  const q = (name: string, x: SoakQuarter) =>
    row([name, `${f(x.fromS, 0)}–${f(x.toS, 0)} s`, mb(x.rssMedianBytes), k(x.peersMedian), `${f(x.mainDelayMedianMs, 1)} / ${f(x.mainDelayMaxMs, 1)}`, `${f(x.shardDelayMedianMs, 1)} / ${f(x.shardDelayMaxMs, 1)}`]);
  const c = r.counts;
  return [
    `Soak: ${r.seconds} s, tracker (default shards, ttl ${r.ttl} s), ${k(r.spec.rate)} keep-alives/s offered by ${r.spec.population} clients (one loopback IP each, a tenth legacy), ${r.spec.churn} clients/s going silent and as many arriving, ${r.spec.pushRate} pushes/s. Sampled every ${f(r.samples.length > 1 ? r.samples[1]!.atS - r.samples[0]!.atS : NaN, 1)} s; quarters after a ${f(r.warmupS, 0)} s warm-up. ${r.machine.cpus} × ${r.machine.cpuModel}, Node ${r.machine.node}.`,
    '',
    row(['quarter', 'time', 'RSS (median)', 'live peers', 'main loop delay ms (median / max)', 'shard loop delay ms (median / max)']),
    row(['---', '---', '---:', '---:', '---:', '---:']),
    q('first', r.first),
    q('last', r.last),
    '',
    `RSS: ${r.rssVerdict} (${mb(r.first.rssMedianBytes)} → ${mb(r.last.rssMedianBytes)}). Event-loop delay: ${r.delayVerdict}.`,
    `Load: ${c.sent.toLocaleString('en')} datagrams sent, ${c.replies.toLocaleString('en')} received (${k(r.replyRate)}/s), ${c.incomes.toLocaleString('en')} income, ${c.errors.toLocaleString('en')} errors, ${c.seedForm} keep-alive replies without the shareId (seed form); ${c.arrived} clients arrived, ${c.silenced} went silent.`,
    `Tracker drops: ${Object.keys(r.drops).length ? Object.entries(r.drops).map(([k2, v]) => `${k2} ${v}`).join(', ') : 'none'}.`,
  ].join('\n');
}

export function writeSoak(r: SoakResult, out: string): { json: string; md: string } {
  mkdirSync(out, { recursive: true });
  const stamp = r.date.replace(/[:.]/g, '-');
  const json = join(out, `soak-${stamp}.json`);
  const md = join(out, `soak-${stamp}.md`);
  writeFileSync(json, JSON.stringify(r, null, 2) + '\n');
  writeFileSync(md, renderSoak(r) + '\n');
  writeFileSync(join(out, 'soak-latest.json'), JSON.stringify(r, null, 2) + '\n');
  writeFileSync(join(out, 'soak-latest.md'), renderSoak(r) + '\n');
  return { json, md };
}
