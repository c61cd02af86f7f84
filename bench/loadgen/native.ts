// The native load generator (bench/native/bench.c, built with the tracker's addon):
// one C thread drives every simulated client with epoll, recvmmsg and sendmmsg, so
// it needs far less CPU than the servers it measures and leaves the second core
// to them. Same clients, requests, matching and histogram as the Node generator
// (worker.ts); runLoad() picks it when it is built.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Histogram } from '../histogram.js';
import type { LoadOptions, LoadResult } from './types.js';
import { loopbackIp, PLAIN_PULSE, STUN_BINDING, STUN_MARKER } from './types.js';

/** The bench addon's API (bench/native/bench.c); test/native-socket.test.ts tests it against these types. */
export interface NativeLoadSpec {
  address: string; port: number; sources: string[]; window: number; rate: number;
  warmupMs: number; measureMs: number; drainMs: number; timeoutMs: number;
  setup: 'none' | 'tracker' | 'token'; request: Buffer; replyMarker: Buffer; unknownMarker: Buffer | null;
}

export interface NativeLoadResult {
  clients: number; activeClients: number; seconds: number; sent: number; sentInWindow: number; repliesInWindow: number;
  answeredInWindow: number; neverSent: number; timedOut: number; other: number; unknownSession: number; sendErrors: number;
  announceFailed: number; proofFailed: number; fellBehind: boolean; cpuSeconds: number; windowStartMs: number; windowEndMs: number;
  histogram: Float64Array;
}

export interface NativeBench {
  runLoad(spec: NativeLoadSpec): Promise<NativeLoadResult>;
  EchoServer: new (options: { host: string; port: number; recvBufferSize?: number; sendBufferSize?: number }) => {
    address(): { address: string; port: number };
    close(): void;
  };
}

// Built by bench/native/binding.gyp: beside bench/loadgen/ under tsx, in the source tree's bench/ from dist/bench/loadgen/.
const CANDIDATES = ['../native/build/Release/sobani_bench.node', '../../../bench/native/build/Release/sobani_bench.node']
  .map((rel) => fileURLToPath(new URL(rel, import.meta.url)));

let loaded: NativeBench | Error | undefined;

/** The bench addon, or why it is not there (then the Node generator and no native echo). */
export function nativeBench(): NativeBench | Error {
  if (loaded !== undefined) return loaded;
  const file = CANDIDATES.find((f) => existsSync(f));
  if (file === undefined) return (loaded = new Error('bench/native/build/Release/sobani_bench.node is not built (see bench/native/build/native-build.log)'));
  try {
    loaded = createRequire(import.meta.url)(file) as NativeBench;
  } catch (err) {
    loaded = new Error(`${file} does not load: ${(err as Error).message}`);
  }
  return loaded;
}

export async function runNativeLoad(bench: NativeBench, opts: LoadOptions): Promise<LoadResult> {
  // The open loop keeps one request in flight per client: enough clients for 20 ms of the rate.
  const clients = opts.mode === 'open' ? Math.max(opts.clients, Math.ceil(opts.rate * 0.02)) : opts.clients;
  const r = await bench.runLoad({
    address: '127.0.0.1',
    port: opts.port,
    sources: Array.from({ length: clients }, (_, i) => loopbackIp(i, opts.ipBlock ?? 0)),
    window: opts.window,
    rate: opts.mode === 'open' ? opts.rate : 0,
    warmupMs: opts.warmupMs,
    measureMs: opts.measureMs,
    drainMs: opts.drainMs,
    timeoutMs: opts.timeoutMs,
    // a token client announces for a token and sends its own token pulse (bench.c)
    setup: opts.request === 'token-pulse' ? 'token' : opts.setup,
    ...(opts.request === 'stun'
      ? { request: STUN_BINDING, replyMarker: STUN_MARKER, unknownMarker: null }
      : {
        request: Buffer.from(PLAIN_PULSE),
        // a pulse reply from any server here contains it: pulseReceived, and the echo's copy of the pulse
        replyMarker: Buffer.from('"pulse'),
        unknownMarker: Buffer.from('"status":"1"'),
      }),
  });
  const h = new Histogram();
  h.add(r.histogram);
  const due = r.sentInWindow + r.neverSent;
  const ms = (ns: number): number => ns / 1e6;
  return {
    mode: opts.mode,
    generator: 'native',
    seconds: r.seconds,
    window: { startMs: r.windowStartMs, endMs: r.windowEndMs },
    clients,
    announceFailed: r.announceFailed,
    proofFailed: r.proofFailed,
    offered: due / r.seconds,
    replyRate: r.repliesInWindow / r.seconds,
    replies: r.repliesInWindow,
    loss: due === 0 ? 0 : Math.max(0, 1 - r.answeredInWindow / due),
    unknownSession: r.unknownSession,
    timedOut: r.timedOut,
    other: r.other,
    sendErrors: r.sendErrors,
    fellBehind: r.fellBehind,
    generatorBusy: r.cpuSeconds / r.seconds,
    latencyMs: { p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), p999: ms(h.percentile(99.9)), max: ms(h.max), samples: h.count },
  };
}
