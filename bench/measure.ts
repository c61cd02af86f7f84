// One load test against one running server, with the server's own CPU time
// taken over exactly the measurement window.
import { runLoad, type LoadResult } from './loadgen/index.js';
import type { LoadRequest } from './loadgen/types.js';
import type { BenchOptions } from './options.js';
import type { Progress } from './progress.js';
import { machineCpu, selfCpuSeconds, type MachineCpu } from './machine.js';
import type { ServerHandle, Usage } from './servers.js';
import { dropDelta, dropTotals } from './child-ipc.js';

export interface Measurement {
  load: LoadResult;
  /** Server CPU seconds (all threads) during the window. */
  serverCpuSeconds: number;
  /** Server CPU seconds per 100 k pulse replies. */
  cpuPer100k: number;
  rssBytes: number;
  /** Cores used during the window by the bench itself (mostly the generator threads). */
  generatorCores: number;
  /** Cores used during the window by every other process on the machine, plus steal. NaN without /proc. */
  othersCores: number;
  /** The tracker's drops by reason during the whole load test (setup included); empty if none. */
  drops: Record<string, number>;
}

/** What the machine looked like at one instant. */
interface Sample {
  at: number; // epoch ms
  server: Usage;
  self: number;
  machine: MachineCpu | undefined;
}

async function sample(server: ServerHandle): Promise<Sample> {
  const self = selfCpuSeconds();
  const machine = machineCpu();
  return { at: Date.now(), server: await server.usage(), self, machine };
}

/** The value of f at `at`, interpolated between the samples around it (sorted by time). */
function at(samples: Sample[], t: number, f: (s: Sample) => number): number {
  let i = samples.findIndex((s) => s.at >= t);
  if (i < 0) i = samples.length - 1;
  if (i === 0) return f(samples[0]!);
  const a = samples[i - 1]!, b = samples[i]!;
  if (b.at === a.at) return f(b);
  return f(a) + ((f(b) - f(a)) * Math.min(1, Math.max(0, (t - a.at) / (b.at - a.at))));
}

/** Sampling interval: the generator reports its window's edges afterwards, so the bench samples all along. */
const SAMPLE_MS = 20;

export async function measure(
  server: ServerHandle,
  mode: 'closed' | 'open',
  opts: BenchOptions & { setup: 'tracker' | 'none'; rate: number; request?: LoadRequest },
  progress: Progress,
): Promise<Measurement> {
  let lastReplies = 0;
  let lastAt = Date.now();
  const dropsBefore = dropTotals(await server.stats());
  const samples: Sample[] = [await sample(server)];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      await new Promise((r) => setTimeout(r, SAMPLE_MS));
      samples.push(await sample(server));
    }
  })();
  let load;
  try {
    load = await runLoad({
      port: server.port,
      mode,
      generator: opts.generator,
      setup: opts.setup,
      ...(opts.request !== undefined ? { request: opts.request } : {}),
      threads: opts.threads,
      clients: opts.clients,
      window: opts.window,
      rate: opts.rate,
      warmupMs: opts.warmup * 1000,
      measureMs: opts.seconds * 1000,
      drainMs: 300,
      timeoutMs: 50,
      onProgress: (replies) => {
        const now = Date.now();
        if (now - lastAt >= 400) {
          progress.update(`${Math.round(((replies - lastReplies) * 1000) / (now - lastAt) / 1000)}k replies/s`);
          lastReplies = replies;
          lastAt = now;
        }
      },
    });
  } finally {
    sampling = false;
    await sampler;
  }
  const drops = dropDelta(dropsBefore, dropTotals(await server.stats()));
  const { startMs, endMs } = load.window;
  if (!(endMs > startMs)) throw new Error('the measurement window never opened');
  const serverCpuSeconds = at(samples, endMs, (s) => s.server.cpuSeconds) - at(samples, startMs, (s) => s.server.cpuSeconds);
  const generatorCpu = at(samples, endMs, (s) => s.self) - at(samples, startMs, (s) => s.self);
  const machine = samples.every((s) => s.machine)
    ? at(samples, endMs, (s) => s.machine!.busySeconds + s.machine!.stealSeconds) - at(samples, startMs, (s) => s.machine!.busySeconds + s.machine!.stealSeconds)
    : NaN;
  return {
    load,
    serverCpuSeconds,
    cpuPer100k: load.replies > 0 ? (serverCpuSeconds * 100_000) / load.replies : NaN,
    rssBytes: at(samples, endMs, (s) => s.server.rssBytes),
    generatorCores: generatorCpu / load.seconds,
    othersCores: Math.max(0, machine - serverCpuSeconds - generatorCpu) / load.seconds,
    drops,
  };
}
