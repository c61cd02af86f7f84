// The messages on a shard's MessagePort. Batch payload layouts are in frame.ts.
import type { ShardCountersSnapshot } from '../shard/counters.js';

/** main -> shard */
export type ToShard =
  | { t: 'b'; buf: ArrayBuffer | null; len: number; fwd: Uint8Array[] | null }
  | { t: 'c'; id: number; op: ControlOp; arg?: unknown };

/**
 * Control requests, answered once each in order:
 *   ping -> 'pong'; stats -> ShardStats; fill(n) -> peers (bench/test);
 *   export -> ExportedPart: the shard's live sessions, one msgpackr-packed SessionBlock;
 *   import(SessionBlock) -> sessions added;
 *   stall(ms) -> 'stalled': blocks the shard's event loop for ms (ops/test hook: a hung shard).
 */
export type ControlOp = 'ping' | 'stats' | 'fill' | 'export' | 'import' | 'stall';

export interface ExportedPart { count: number; packed: Uint8Array }

/**
 * Sessions as columns, as a shard exports them and a snapshot file stores them
 * (ops/snapshot.ts). Session i's fields are at i * width in each column;
 * multi-byte integers are big-endian.
 */
export interface SessionBlock {
  count: number;
  /** 16 bytes each: IPv6, or IPv4 as IPv4-mapped IPv6 (protocol/address.ts) */
  addr: Uint8Array;
  /** u16 each */
  port: Uint8Array;
  /** u8 each, protocol/dialect.ts */
  dialect: Uint8Array;
  /** u8 each, shard/peer-table.ts flags (VERIFIED: the client proved it receives at its address) */
  flags: Uint8Array;
  /** shareIdLength ASCII bytes each */
  ids: Uint8Array;
  /** u32 each: ms of ttl left */
  ttlMs: Uint8Array;
  /** sparse: [session index, ip, port (0 = none), multiaddr] */
  overrides: [number, string | null, number, string | null][];
}

/** shard -> main */
export type FromShard =
  | { t: 'b'; buf: ArrayBuffer | null; out: Uint8Array | null; fwd: (Uint8Array | null)[] | null; peers: number }
  | { t: 'c'; id: number; result: unknown }
  | { t: 'log'; level: 'error' | 'warn'; msg: string; err?: string };

export interface ShardStats {
  index: number;
  peers: number;
  tableBytes: number;
  loopDelayMaxMs: number;
  counters: ShardCountersSnapshot;
}
