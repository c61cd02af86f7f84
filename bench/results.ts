// What a bench run measured, as the JSON stores it: per server, its rounds and
// their medians; the other parts' results; the targets.
import type { AmpResult } from './amplification.js';
import type { DirectoryResult } from './directory.js';
import type { Measurement } from './measure.js';
import type { BenchOptions } from './options.js';
import type { ShardCosts } from './shard-costs.js';
import type { ScaleResult } from './scale.js';
import { median, NOISE_CORES } from './stats.js';
import type { StunResult } from './stun.js';

export interface ServerResult {
  name: string;
  kind: 'echo' | 'native-echo' | 'naive' | 'tracker';
  io?: 'native' | 'dgram';
  shards?: number | 'default';
  error?: string;
  rounds: { closed: Measurement; open: Measurement }[];
  median?: Summary;
}

export interface Summary {
  rounds: number;
  /** Closed-loop rounds the medians use: those the rest of the machine left alone. */
  quietRounds: number;
  closedRate: number;
  closedRateMin: number;
  closedRateMax: number;
  cpuPer100k: number;
  generatorBusy: number;
  othersCores: number;
  openOffered: number;
  openRate: number;
  loss: number;
  p50: number;
  p99: number;
  p999: number;
  rssBytes: number;
  unknownSession: number;
  /** The server's drops (by reason) summed over every round, setup included. */
  drops: Record<string, number>;
  proofFailed: number;
}

export interface Target {
  what: string;
  goal: string;
  measured: string;
  result: 'pass' | 'miss' | 'n/a' | '';
}

export interface BenchResults {
  date: string;
  machine: { node: string; cpus: number; cpuModel: string; platform: string };
  options: BenchOptions;
  servers: ServerResult[];
  amplification?: AmpResult;
  directory?: DirectoryResult;
  directoryError?: string;
  stun?: StunResult;
  stunError?: string;
  shardCosts?: ShardCosts;
  scale?: ScaleResult;
  scaleError?: string;
  targets: Target[];
}

type Round = ServerResult['rounds'][number];
type One = Round['closed'];

function quiet(ms: One[]): One[] {
  const q = ms.filter((m) => !(m.othersCores > NOISE_CORES));
  return q.length > 0 ? q : ms;
}

export function summarize(rounds: ServerResult['rounds']): Summary | undefined {
  if (rounds.length === 0) return undefined;
  const closed = quiet(rounds.map((r) => r.closed));
  const open = quiet(rounds.map((r) => r.open));
  const rates = closed.map((m) => m.load.replyRate);
  const medC = (f: (m: One) => number) => median(closed.map(f));
  const medO = (f: (m: One) => number) => median(open.map(f));
  return {
    rounds: rounds.length,
    quietRounds: closed.length,
    closedRate: median(rates),
    closedRateMin: Math.min(...rates),
    closedRateMax: Math.max(...rates),
    cpuPer100k: medC((m) => m.cpuPer100k),
    generatorBusy: medC((m) => m.load.generatorBusy),
    othersCores: medC((m) => m.othersCores),
    openOffered: medO((m) => m.load.offered),
    openRate: medO((m) => m.load.replyRate),
    loss: medO((m) => m.load.loss),
    p50: medO((m) => m.load.latencyMs.p50),
    p99: medO((m) => m.load.latencyMs.p99),
    p999: medO((m) => m.load.latencyMs.p999),
    rssBytes: medO((m) => m.rssBytes),
    unknownSession: rounds.reduce((a, r) => a + r.closed.load.unknownSession + r.open.load.unknownSession, 0),
    drops: sumDrops(rounds.flatMap((r) => [r.closed.drops, r.open.drops])),
    proofFailed: rounds.reduce((a, r) => a + r.closed.load.proofFailed + r.open.load.proofFailed, 0),
  };
}

export function sumDrops(ds: (Record<string, number> | undefined)[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const d of ds) for (const [key, n] of Object.entries(d ?? {})) out[key] = (out[key] ?? 0) + n;
  return out;
}
