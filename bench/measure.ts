// One load test against one running server, with the server's own CPU time
// taken over exactly the measurement window.
import { runLoad, type LoadResult } from './loadgen/index.js';
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

interface Edge {
  server: Usage;
  self: number;
  machine: MachineCpu | undefined;
}

async function sample(server: ServerHandle): Promise<Edge> {
  const self = selfCpuSeconds();
  const machine = machineCpu();
  return { server: await server.usage(), self, machine };
}

export async function measure(
  server: ServerHandle,
  mode: 'closed' | 'open',
  opts: BenchOptions,
  progress: Progress,
): Promise<Measurement> {
  const edges: Partial<Record<'start' | 'end', Promise<Edge>>> = {};
  let lastReplies = 0;
  let lastAt = Date.now();
  const dropsBefore = dropTotals(await server.stats());
  const load = await runLoad({
    port: server.port,
    mode,
    threads: opts.threads,
    clients: opts.clients,
    window: opts.window,
    rate: opts.rate,
    warmupMs: opts.warmup * 1000,
    measureMs: opts.seconds * 1000,
    drainMs: 300,
    timeoutMs: 50,
    onWindowEdge: (edge) => (edges[edge] = sample(server)),
    onProgress: (replies) => {
      const now = Date.now();
      if (now - lastAt >= 400) {
        progress.update(`${Math.round(((replies - lastReplies) * 1000) / (now - lastAt) / 1000)}k replies/s`);
        lastReplies = replies;
        lastAt = now;
      }
    },
  });
  const [start, end] = await Promise.all([edges.start, edges.end]);
  const drops = dropDelta(dropsBefore, dropTotals(await server.stats()));
  if (!start || !end) throw new Error('the measurement window never opened');
  const serverCpuSeconds = end.server.cpuSeconds - start.server.cpuSeconds;
  const generatorCpu = end.self - start.self;
  const machine =
    start.machine && end.machine
      ? end.machine.busySeconds - start.machine.busySeconds + (end.machine.stealSeconds - start.machine.stealSeconds)
      : NaN;
  return {
    load,
    serverCpuSeconds,
    cpuPer100k: load.replies > 0 ? (serverCpuSeconds * 100_000) / load.replies : NaN,
    rssBytes: end.server.rssBytes,
    generatorCores: generatorCpu / load.seconds,
    othersCores: Math.max(0, machine - serverCpuSeconds - generatorCpu) / load.seconds,
    drops,
  };
}
