// Runs one load test: splits the clients (and the offered rate) over generator
// threads, waits for every client to announce, then starts them all at the same
// instant and merges what they measured.
import { Worker } from 'node:worker_threads';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { Histogram } from '../histogram.js';
import { nativeBench, runNativeLoad } from './native.js';
import type { Generator, LoadOptions, LoadResult, WorkerCounts, WorkerMessage, WorkerSpec } from './types.js';

export type { Generator, LoadOptions, LoadResult } from './types.js';

/** The generator runLoad uses when none is asked for. */
export function defaultGenerator(): Generator {
  return nativeBench() instanceof Error ? 'node' : 'native';
}

const EXT = extname(fileURLToPath(import.meta.url));
const WORKER = new URL('./worker' + EXT, import.meta.url);

// Under tsx (bench run from sources) a Node 20 worker thread does not inherit
// the TypeScript loader, so the thread registers it before loading the worker.
function startWorker(spec: WorkerSpec, name: string): Worker {
  if (EXT !== '.ts') return new Worker(WORKER, { workerData: spec, name });
  const tsx = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(WORKER.href)}); });`;
  return new Worker(code, { eval: true, workerData: spec, name });
}

export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  if ((opts.generator ?? defaultGenerator()) === 'native') {
    const bench = nativeBench();
    if (bench instanceof Error) throw bench;
    return runNativeLoad(bench, opts);
  }
  if (opts.request === 'stun' || opts.request === 'token-pulse') throw new Error(`${opts.request} load needs the native generator (bench/native/bench.c)`);
  // The open loop keeps one pulse in flight per client, so it needs enough
  // clients to cover 20 ms of the offered rate.
  const totalClients = opts.mode === 'open' ? Math.max(opts.clients, Math.ceil(opts.rate * 0.02)) : opts.clients;
  const threads = Math.max(1, Math.min(opts.threads, totalClients));
  const workers: Worker[] = [];
  const progress = new Array<number>(threads).fill(0);
  const done: Promise<{ counts: WorkerCounts; histogram: Float64Array }>[] = [];
  const ready: Promise<{ announceFailed: number; proofFailed: number }>[] = [];

  try {
    let firstClient = 0;
    for (let t = 0; t < threads; t++) {
      const clients = Math.floor(totalClients / threads) + (t < totalClients % threads ? 1 : 0);
      const spec: WorkerSpec = {
        host: '127.0.0.1',
        port: opts.port,
        mode: opts.mode,
        clients,
        window: opts.window,
        rate: (opts.rate * clients) / totalClients,
        timeoutMs: opts.timeoutMs,
        firstClient,
        ipBlock: opts.ipBlock ?? 0,
      };
      firstClient += clients;
      const worker = startWorker(spec, `loadgen-${t + 1}`);
      workers.push(worker);
      const failed = new Promise<never>((_, reject) => {
        worker.once('error', reject);
        worker.once('exit', (code) => reject(new Error(`load generator thread exited (${code})`)));
      });
      failed.catch(() => {});
      ready.push(Promise.race([failed, waitFor(worker, 'ready')]));
      done.push(Promise.race([failed, waitFor(worker, 'done')]));
      worker.on('message', (m: WorkerMessage) => {
        if (m.type !== 'progress') return;
        progress[t] = m.replies;
        opts.onProgress?.(progress.reduce((a, b) => a + b, 0));
      });
    }
    const announced = await withTimeout(Promise.all(ready), 15_000, 'clients did not finish announcing');

    const startAt = performance.timeOrigin + performance.now() + 50;
    const measureFrom = startAt + opts.warmupMs;
    const measureUntil = measureFrom + opts.measureMs;
    for (const w of workers) w.postMessage({ type: 'go', startAt, measureFrom, measureUntil, drainMs: opts.drainMs });

    const results = await withTimeout(Promise.all(done), opts.warmupMs + opts.measureMs + opts.drainMs + 15_000, 'load generator hung');
    return merge({ ...opts, clients: totalClients }, { startMs: measureFrom, endMs: measureUntil }, results,
      announced.reduce((a, r) => a + r.announceFailed, 0), announced.reduce((a, r) => a + r.proofFailed, 0));
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

function waitFor<T extends WorkerMessage['type']>(worker: Worker, type: T): Promise<Extract<WorkerMessage, { type: T }>> {
  return new Promise((resolve) => {
    const on = (m: WorkerMessage) => {
      if (m.type !== type) return;
      worker.off('message', on);
      resolve(m as Extract<WorkerMessage, { type: T }>);
    };
    worker.on('message', on);
  });
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function merge(opts: LoadOptions, window: LoadResult['window'], results: { counts: WorkerCounts; histogram: Float64Array }[], announceFailed: number, proofFailed: number): LoadResult {
  const h = new Histogram();
  const sum = (k: keyof Omit<WorkerCounts, 'fellBehind'>) => results.reduce((a, r) => a + r.counts[k], 0);
  for (const r of results) h.add(r.histogram);
  const seconds = opts.measureMs / 1000;
  const sentInWindow = sum('sentInWindow') + sum('neverSent');
  const ms = (ns: number) => ns / 1e6;
  return {
    mode: opts.mode,
    generator: 'node',
    seconds,
    window,
    clients: opts.clients,
    announceFailed,
    proofFailed,
    offered: sentInWindow / seconds,
    replyRate: sum('repliesInWindow') / seconds,
    replies: sum('repliesInWindow'),
    loss: sentInWindow === 0 ? 0 : Math.max(0, 1 - sum('answeredInWindow') / sentInWindow),
    unknownSession: sum('unknownSession'),
    timedOut: sum('timedOut'),
    other: sum('other'),
    sendErrors: sum('sendErrors'),
    fellBehind: results.some((r) => r.counts.fellBehind),
    generatorBusy: sum('busy') / results.length,
    latencyMs: { p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), p999: ms(h.percentile(99.9)), max: ms(h.max), samples: h.count },
  };
}
