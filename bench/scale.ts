// The scale phase: the tracker with a full table.
//  1. Fill it with `peers` live sessions (tracker.fill goes through the real
//     shard code) and take the RSS growth per peer.
//  2. Measure pulses (closed and open loop) while the table is full.
//  3. On a second tracker with a short TTL, fill again and let everything
//     expire, polling stats every 250 ms, and report how long that takes and the
//     longest event-loop stall on the main thread and in each shard, during the
//     expiry and (for comparison) while the full table just waited.
import { measure, type Measurement } from './measure.js';
import type { BenchOptions } from './options.js';
import type { Progress } from './progress.js';
import { ServerHandle, trackerIo } from './servers.js';

export interface ScaleResult {
  io: 'native' | 'dgram';
  peers: number;
  fillSeconds: number;
  rssBeforeBytes: number;
  rssAfterBytes: number;
  bytesPerPeer: number;
  peersAfterLoad: number;
  closed: Measurement;
  open: Measurement;
  expiry: ExpiryResult;
}

export interface ExpiryResult {
  ttlSeconds: number;
  /** From the end of the fill until stats().peers is 0. */
  secondsToEmpty: number;
  /** From the last poll that saw the table full until the first that saw it empty. */
  expirySeconds: number;
  /** Longest event-loop stall while peers were expiring: main thread, each shard. */
  mainStallMs: number;
  shardStallMs: number[];
  /** The same while the full table waited for its TTL: what the expiry adds is the difference. */
  idleMainStallMs: number;
  idleShardStallMs: number[];
  /** False if the table was not empty before the deadline. */
  emptied: boolean;
  peersLeft: number;
  /** One per 250 ms poll: ms since the fill, live peers, longest stalls in that interval. */
  samples: ExpirySample[];
}

export interface ExpirySample {
  atMs: number;
  peers: number;
  mainMs: number;
  shardsMs: number[];
}

export const SCALE_STEPS = 4;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function settledRss(server: ServerHandle): Promise<number> {
  // Let a major GC and the allocator settle, then take the lower of two reads.
  await sleep(1000);
  const a = (await server.usage()).rssBytes;
  await sleep(250);
  return Math.min(a, (await server.usage()).rssBytes);
}

export async function runScale(opts: BenchOptions, progress: Progress): Promise<ScaleResult> {
  progress.start(`scale: fill ${opts.peers.toLocaleString('en')} peers`);
  const io = trackerIo();
  const full = await ServerHandle.start({ kind: 'tracker', io, shards: 'default' });
  try {
    const rssBeforeBytes = await settledRss(full);
    const t0 = Date.now();
    await full.fill(opts.peers);
    const fillSeconds = (Date.now() - t0) / 1000;
    const rssAfterBytes = await settledRss(full);
    const peersFilled = (await full.stats()).peers;

    progress.start('scale: closed loop, table full');
    const closed = await measure(full, 'closed', { ...opts, setup: 'tracker' }, progress);
    progress.start('scale: open loop, table full');
    const rate = opts.rate > 0 ? opts.rate : Math.max(1000, Math.round(closed.load.replyRate / 2));
    const open = await measure(full, 'open', { ...opts, setup: 'tracker', rate }, progress);
    const peersAfterLoad = (await full.stats()).peers;
    await full.close();

    progress.start(`scale: expiry of ${opts.peers.toLocaleString('en')} peers (ttl ${opts.ttl} s)`);
    const expiry = await runExpiry(opts, progress);
    return {
      io,
      peers: peersFilled,
      fillSeconds,
      rssBeforeBytes,
      rssAfterBytes,
      bytesPerPeer: (rssAfterBytes - rssBeforeBytes) / Math.max(1, opts.peers),
      peersAfterLoad,
      closed,
      open,
      expiry,
    };
  } finally {
    await full.close();
  }
}

async function runExpiry(opts: BenchOptions, progress: Progress): Promise<ExpiryResult> {
  const server = await ServerHandle.start({ kind: 'tracker', io: trackerIo(), shards: 'default', ttl: opts.ttl });
  try {
    await server.fill(opts.peers);
    const filledAt = Date.now();
    const filled = (await server.stats(true)).peers;
    const deadline = filledAt + (opts.ttl + 120) * 1000;
    // Every poll resets the loop-delay monitors, so each sample is the longest
    // stall of its own 250 ms; the stall is then attributed to the expiry
    // (from the last full sample to the first empty one) or to the idle wait.
    const samples: ExpirySample[] = [];
    let peers = filled;
    while (peers > 0 && Date.now() < deadline) {
      await sleep(250);
      const st = await server.stats(true);
      peers = st.peers;
      samples.push({ atMs: Date.now() - filledAt, peers, mainMs: st.mainLoopDelayMaxMs ?? NaN, shardsMs: (st.shards ?? []).map((sh) => sh.loopDelayMaxMs) });
      const left = Math.max(0, opts.ttl - (Date.now() - filledAt) / 1000);
      progress.update(`${peers.toLocaleString('en')} peers live${left > 0 ? `, ttl ends in ~${left.toFixed(0)} s` : ''}`);
    }
    const firstDrop = samples.findIndex((x) => x.peers < filled);
    const during = firstDrop < 0 ? [] : samples.slice(firstDrop);
    const before = firstDrop < 0 ? samples : samples.slice(0, firstDrop);
    const maxOf = (xs: number[]) => xs.reduce((a, b) => (b > a ? b : a), 0);
    const shardMax = (xs: ExpirySample[]) => (xs[0]?.shardsMs ?? []).map((_, i) => maxOf(xs.map((x) => x.shardsMs[i] ?? 0)));
    const emptyAtMs = samples.at(-1)?.atMs ?? 0;
    // The expiry began at some point inside the first sample that saw a drop.
    const dropAtMs = firstDrop > 0 ? samples[firstDrop - 1]!.atMs : 0;
    return {
      ttlSeconds: opts.ttl,
      secondsToEmpty: emptyAtMs / 1000,
      expirySeconds: firstDrop < 0 ? 0 : (emptyAtMs - dropAtMs) / 1000,
      mainStallMs: maxOf(during.map((x) => x.mainMs)),
      shardStallMs: shardMax(during),
      idleMainStallMs: maxOf(before.map((x) => x.mainMs)),
      idleShardStallMs: shardMax(before),
      emptied: peers === 0,
      peersLeft: peers,
      samples,
    };
  } finally {
    await server.close();
  }
}
