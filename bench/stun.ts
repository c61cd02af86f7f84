// What a token and STUN cost on the hot path: the same tracker (native path,
// default shards) answers the same generator's closed loop, in turn with plain
// pulses, pulses carrying a session token, and STUN Binding requests, round after
// round, so the figures come from one run on the same machine state. Plain pulses
// come from announced, proved sessions; token pulses from sessions announced with
// "token":true (each reply tagged, docs/security.md); STUN requests from bare
// sources (no session: any STUN client), each under the tracker's reply budget.
import { measure, type Measurement } from './measure.js';
import type { BenchOptions } from './options.js';
import type { Progress } from './progress.js';
import { median, NOISE_CORES } from './stats.js';
import { ServerHandle, serverName, trackerIo, type ServerKind } from './servers.js';

export interface StunSide { replyRate: number; cpuPer100k: number; p50: number; p99: number; drops: Record<string, number> }
export interface StunResult { server: string; rounds: number; pulse: StunSide; token: StunSide; stun: StunSide }

export async function runStun(opts: BenchOptions, progress: Progress): Promise<StunResult> {
  const kind: ServerKind = { kind: 'tracker', io: trackerIo(), shards: 'default' };
  const server = await ServerHandle.start(kind);
  const runs: { pulse: Measurement[]; 'token-pulse': Measurement[]; stun: Measurement[] } = { pulse: [], 'token-pulse': [], stun: [] };
  try {
    for (let round = 1; round <= opts.stunRounds; round++) {
      for (const request of ['pulse', 'token-pulse', 'stun'] as const) {
        progress.start(`tokens and STUN beside pulses · round ${round}/${opts.stunRounds} · ${request}`);
        // bare sources for STUN (no announce), the usual announced and proved ones for pulses; their own IP blocks
        runs[request].push(await measure(server, 'closed', { ...opts, setup: request === 'stun' ? 'none' : 'tracker', request, rate: 0 }, progress));
      }
    }
  } finally {
    await server.close();
  }
  const side = (ms: Measurement[]): StunSide => {
    const quiet = ms.filter((m) => !(m.othersCores > NOISE_CORES));
    const use = quiet.length > 0 ? quiet : ms;
    const drops: Record<string, number> = {};
    for (const m of ms) for (const [k, n] of Object.entries(m.drops)) drops[k] = (drops[k] ?? 0) + n;
    return {
      replyRate: median(use.map((m) => m.load.replyRate)),
      cpuPer100k: median(use.map((m) => m.cpuPer100k)),
      p50: median(use.map((m) => m.load.latencyMs.p50)),
      p99: median(use.map((m) => m.load.latencyMs.p99)),
      drops,
    };
  };
  return { server: serverName(kind), rounds: opts.stunRounds, pulse: side(runs.pulse), token: side(runs['token-pulse']), stun: side(runs.stun) };
}

export function renderStun(r: StunResult): string {
  const k = (n: number) => `${(n / 1000).toFixed(1)} k`;
  const drops = (d: Record<string, number>) => (Object.keys(d).length ? Object.entries(d).map(([key, n]) => `${key} ${n}`).join(', ') : 'none');
  return [
    `Tokens and STUN beside pulses: ${r.server}, closed loop, medians of ${r.rounds} alternating rounds (same clients and window; plain pulses from proved sessions, token pulses from token sessions, STUN from bare sources).`,
    '',
    '| request | replies/s | CPU s / 100 k | p50 ms (closed loop) | p99 ms (closed loop) | tracker drops |',
    '| --- | ---: | ---: | ---: | ---: | --- |',
    `| pulse \`{"action":"pulse"}\` | ${k(r.pulse.replyRate)} | ${r.pulse.cpuPer100k.toFixed(2)} | ${r.pulse.p50.toFixed(3)} | ${r.pulse.p99.toFixed(3)} | ${drops(r.pulse.drops)} |`,
    `| pulse carrying a token \`{"action":"pulse","token":"…"}\` (tagged reply) | ${k(r.token.replyRate)} | ${r.token.cpuPer100k.toFixed(2)} | ${r.token.p50.toFixed(3)} | ${r.token.p99.toFixed(3)} | ${drops(r.token.drops)} |`,
    `| STUN Binding request (20 B) | ${k(r.stun.replyRate)} | ${r.stun.cpuPer100k.toFixed(2)} | ${r.stun.p50.toFixed(3)} | ${r.stun.p99.toFixed(3)} | ${drops(r.stun.drops)} |`,
    '',
    `token pulse ÷ plain pulse: ${(r.token.replyRate / r.pulse.replyRate).toFixed(2)} × the replies/s, ${(r.token.cpuPer100k / r.pulse.cpuPer100k).toFixed(2)} × the CPU per reply (target: ≥ 0.95 × the replies/s). A token costs no RAM per session: the tracker recomputes it (src/auth/session-key.ts); a token session is one bit of the flags byte every session has.`,
    `STUN ÷ pulse: ${(r.stun.replyRate / r.pulse.replyRate).toFixed(2)} × the replies/s, ${(r.stun.cpuPer100k / r.pulse.cpuPer100k).toFixed(2)} × the CPU per reply.`,
  ].join('\n');
}
