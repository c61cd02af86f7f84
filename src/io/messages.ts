// The messages on a shard's MessagePort. Batch payload layouts are in frame.ts.
import type { ShardCountersSnapshot } from '../shard/counters.js';

/** main -> shard */
export type ToShard =
  | { t: 'b'; buf: ArrayBuffer | null; len: number; fwd: Uint8Array[] | null }
  | { t: 'c'; id: number; op: 'ping' | 'stats' | 'fill'; arg?: unknown };

/** shard -> main */
export type FromShard =
  | { t: 'b'; buf: ArrayBuffer | null; out: ArrayBuffer | null; fwd: (Uint8Array | null)[] | null; peers: number }
  | { t: 'c'; id: number; result: unknown }
  | { t: 'log'; level: 'error' | 'warn'; msg: string; err?: string };

export interface ShardStats {
  index: number;
  peers: number;
  tableBytes: number;
  loopDelayMaxMs: number;
  counters: ShardCountersSnapshot;
}
