// `yarn bench`: the same load generator against a bare echo server, a naive
// tracker and this tracker at several shard counts, in interleaved rounds so
// machine noise hits them all alike; then the scale phase at 1 M peers; then
// the amplification table; then one table on the terminal and JSON + SVG +
// markdown under bench/results/. `--soak SECONDS` runs only the soak (soak.ts).
import { cpus } from 'node:os';
import { measure } from './measure.js';
import { parseOptions } from './options.js';
import { Progress } from './progress.js';
import { buildTargets, renderTable, writeResults } from './report.js';
import { summarize, type BenchResults, type ServerResult } from './results.js';
import { runScale, SCALE_STEPS, type ScaleResult } from './scale.js';
import { ServerHandle, serverName, setupOf, trackerIo, type ServerKind } from './servers.js';
import { nativeBench } from './loadgen/native.js';
import { runAmplification, type AmpResult } from './amplification.js';
import { renderSoak, runSoak, writeSoak } from './soak.js';
import { redisServerMissing, runDirectory, type DirectoryResult } from './directory.js';
import { runStun, type StunResult } from './stun.js';
import { runShardCosts } from './shard-costs.js';

const opts = parseOptions(process.argv.slice(2));

if (opts.soak > 0) {
  const p = new Progress(1);
  const soak = await runSoak(opts, p);
  p.done();
  const files = writeSoak(soak, opts.out);
  process.stdout.write(renderSoak(soak) + '\n\nresults: ' + files.json + '\n');
  process.exit(0);
}

// Side by side: the two echo ceilings (Node dgram, and C with recvmmsg/sendmmsg), the
// naive tracker, this tracker on the dgram path, and on the native path at each shard count.
const kinds: ServerKind[] = [
  { kind: 'echo' },
  ...(nativeBench() instanceof Error ? [] : [{ kind: 'native-echo' as const }]),
  { kind: 'naive' },
  { kind: 'tracker', io: 'dgram', shards: 'default' },
  ...(trackerIo() === 'native' ? opts.shards.map((shards) => ({ kind: 'tracker' as const, io: 'native' as const, shards })) : []),
];
const withDirectory = opts.directorySessions > 0 && redisServerMissing() === null;
if (opts.directorySessions > 0 && !withDirectory) process.stderr.write(`several-instances phase skipped: ${redisServerMissing()}\n`);
const progress = new Progress(1 + opts.rounds * kinds.length * 2 + opts.stunRounds * 2 + 1 + (opts.amp > 0 ? 2 : 0) + (withDirectory ? 2 : 0) + (opts.peers > 0 ? SCALE_STEPS : 0));

// Every server runs for the whole comparison; only the one under test gets load.
progress.start('starting servers');
const servers: { kind: ServerKind; handle?: ServerHandle; result: ServerResult }[] = [];
for (const kind of kinds) {
  const result: ServerResult = { name: serverName(kind), kind: kind.kind, rounds: [], ...(kind.kind === 'tracker' ? { io: kind.io, shards: kind.shards } : {}) };
  try {
    servers.push({ kind, handle: await ServerHandle.start(kind), result });
  } catch (err) {
    result.error = (err as Error).message;
    progress.log(`${result.name}: ${result.error}`);
    servers.push({ kind, result });
  }
}

try {
  for (let round = 1; round <= opts.rounds; round++) {
    for (const s of servers) {
      const label = (mode: string) => `round ${round}/${opts.rounds} · ${s.result.name} · ${mode} loop`;
      try {
        progress.start(label('closed'));
        if (!s.handle) throw new Error(s.result.error ?? 'not running');
        const setup = setupOf(s.kind);
        const closed = await measure(s.handle, 'closed', { ...opts, setup }, progress);
        progress.start(label('open'));
        // the open loop offers half of what this server just sustained (unless --rate says otherwise)
        const rate = opts.rate > 0 ? opts.rate : Math.max(1000, Math.round(closed.load.replyRate / 2));
        const open = await measure(s.handle, 'open', { ...opts, setup, rate }, progress);
        s.result.rounds.push({ closed, open });
      } catch (err) {
        if (s.handle) {
          s.result.error = (err as Error).message;
          progress.log(`${s.result.name}: ${s.result.error}`);
          await s.handle.close().catch(() => {});
          delete s.handle;
        }
      }
    }
  }
} finally {
  await Promise.all(servers.map((s) => s.handle?.close()));
}
for (const s of servers) {
  const m = summarize(s.result.rounds);
  if (m) s.result.median = m;
}

let stun: StunResult | undefined;
let stunError: string | undefined;
if (opts.stunRounds > 0) {
  if (opts.generator !== 'native') stunError = 'skipped: STUN load needs the native generator';
  else {
    try {
      stun = await runStun(opts, progress);
    } catch (err) {
      stunError = (err as Error).message;
      progress.log(`STUN phase: ${stunError}`);
    }
  }
}

progress.start('what a request costs a shard, on one core');
const shardCosts = runShardCosts();

let amplification: AmpResult | undefined;
if (opts.amp > 0) {
  amplification = await runAmplification(opts.amp, (server) => progress.start(`amplification table · ${server}`));
}

let directory: DirectoryResult | undefined;
let directoryError: string | undefined;
if (withDirectory) {
  try {
    directory = await runDirectory(opts.directorySessions, (what) => progress.start(what));
  } catch (err) {
    directoryError = (err as Error).message;
    progress.log(`several-instances phase: ${directoryError}`);
  }
}

let scale: ScaleResult | undefined;
let scaleError: string | undefined;
if (opts.peers > 0) {
  try {
    scale = await runScale(opts, progress);
  } catch (err) {
    scaleError = (err as Error).message;
    progress.log(`scale phase: ${scaleError}`);
  }
}
progress.done();

const results: BenchResults = {
  date: new Date().toISOString(),
  machine: { node: process.version, cpus: cpus().length, cpuModel: cpus()[0]?.model.trim() ?? 'unknown', platform: process.platform },
  options: opts,
  servers: servers.map((s) => s.result),
  ...(stun ? { stun } : {}),
  ...(stunError ? { stunError } : {}),
  shardCosts,
  ...(amplification ? { amplification } : {}),
  ...(directory ? { directory } : {}),
  ...(directoryError ? { directoryError } : {}),
  ...(scale ? { scale } : {}),
  ...(scaleError ? { scaleError } : {}),
  targets: buildTargets(
    servers.map((s) => s.result),
    scale,
  ),
};
const files = writeResults(results);
process.stdout.write(renderTable(results) + '\n\n');
process.stdout.write(`results: ${files.json}\nchart:   ${files.svg}\n`);
