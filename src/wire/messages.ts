// The messages on a shard's MessagePort (batch payload layouts are in frame.ts),
// and the pushes that travel between shards and between tracker instances.
import type { PeerView } from '../protocol/dialect.js';
import type { ErrorCode } from '../protocol/errors.js';
import type { ShardCountersSnapshot } from '../shard/counters.js';

/**
 * A push on its way to the shard that holds its target: another shard of this
 * instance, or, through the session directory, a shard of another instance.
 * msgpackr-packed, between threads and over Redis.
 */
export interface PushForward {
  /** the target's shareId */
  target: string;
  /**
   * where replies to the requester go, from which socket: always this instance's own
   * record of the request. A push from another instance carries none (0, '', 0): its
   * replies go back to that instance, which sends them where it recorded.
   */
  socket: number;
  address: string;
  port: number;
  /** the requester's dialect (protocol/dialect.ts) */
  dialect: number;
  /** what the target is told of the requester */
  requester: PeerView;
  /** reply budget in wire bytes, taken from the requester's IP credit; -1: authenticated, no limit */
  grant: number;
  /** the most one reply may cost, in wire bytes: 3x the push's own (absent: the grant) */
  cap?: number;
  /** the push carried the requester's valid token: its replies are tagged with the secret of requester.shareId */
  tagged?: boolean;
  /** set by the main thread when the push cannot reach its target: the requester is told this */
  failed?: ErrorCode;
  /** the push came from another instance: the requester's replies go back to it; v6: they cost IPv6 headers */
  remote?: { from: string; req: string; v6: boolean };
  /** a relayed address the requester allocated for this pair, for the target's income */
  relay?: string;
}

/**
 * A token request whose session lives in another shard of this instance (it moved
 * to an IP that routes elsewhere, shard/tokens.ts): handled there as if it had
 * arrived there. Between threads only, never over Redis.
 */
export interface RequestForward {
  /** the request's payload, as it arrived */
  request: Uint8Array;
  /** where it came from, as the socket reported it: where replies go */
  socket: number;
  address: string;
  port: number;
  /** reply budget in wire bytes, taken from the requester's IP credit; -1: no limit */
  grant: number;
  /** the most one reply may cost, in wire bytes: 3x the request's own */
  cap: number;
}

/**
 * What a session carries when it follows its client to another instance
 * (directory/remote-claims.ts): everything but its address, which the client's
 * validated path gives, and its ttl, which starts again.
 */
export interface SessionState {
  /** protocol/nat.ts code (0: none reported) */
  nat: number;
  /** unix seconds the last relay credential expires (0: none) */
  relayExpiry: number;
  /** what push reports instead of the observed address, if set */
  override?: { ip: string | null; port: number; multiaddr: string | null };
  /** local candidates (protocol/local-candidates.ts) */
  local?: string[];
}

/**
 * A token request, with a valid path challenge from its source, for a session no
 * shard of this instance holds (shard/tokens.ts): the main thread asks the
 * directory for it (the claim), then hands the request back with the outcome.
 */
export interface ClaimForward extends RequestForward {
  /** the token's shareId */
  shareId: string;
  /**
   * set by the main thread: `moved` (the owner released it, with `state`), `fresh`
   * (its owner is gone: the session starts here with its shareId), `none` (no
   * instance holds it), or an error the requester is told
   */
  outcome?: 'moved' | 'fresh' | 'none' | 'PEER_UNREACHABLE' | 'DIRECTORY_UNAVAILABLE';
  state?: SessionState;
}

/** Main thread -> the shard holding `release`: another instance claims this token session (its client moved there). */
export interface ReleaseForward {
  release: string;
  /** where the answer goes: the claiming instance, and its request id */
  remote: { from: string; req: string };
}

/** What reaches a shard besides request batches: from another shard, or from the main thread. */
export type Forward = PushForward | RequestForward | ClaimForward | ReleaseForward;

/** A pointer the session directory should hold: shareId -> this instance, and what push reports. */
export type PointerWrite = [shareId: string, peeraddr: string, multiaddr: string | null];

/** What a shard hands the main thread besides replies (rare; msgpackr-packed). */
export interface ShardExtras {
  /** pushes whose target no shard of this instance holds: ask the directory */
  lookups?: PushForward[];
  /** the requester's replies to pushes that came from other instances, for them to send */
  results?: { from: string; req: string; replies: Uint8Array[] }[];
  /** token requests whose session another instance may hold: claim it (directory/remote-claims.ts) */
  claims?: ClaimForward[];
  /** answers to other instances' claims: the released session's state, or null (not held here) */
  handovers?: { from: string; req: string; state: SessionState | null }[];
  pointers?: PointerWrite[];
}

/** main -> shard */
export type ToShard =
  | { t: 'b'; buf: ArrayBuffer | null; len: number; fwd: Uint8Array[] | null }
  | { t: 'c'; id: number; op: ControlOp; arg?: unknown };

/**
 * Control requests, answered once each in order:
 *   ping -> 'pong'; stats -> ShardStats; fill(n) -> peers (bench/test);
 *   export -> ExportedPart: the shard's live sessions, one msgpackr-packed SessionBlock;
 *   import(SessionBlock) -> sessions added;
 *   stall(ms) -> 'stalled': blocks the shard's event loop for ms (ops/test hook: a hung shard);
 *   reregister -> 'ok': write every live session's pointer to the directory again (paced).
 */
export type ControlOp = 'ping' | 'stats' | 'fill' | 'export' | 'import' | 'stall' | 'reregister';

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
  /** u8 each, shard/peer-table.ts flags (VERIFIED: the client proved it receives at its address; KEPT_ALIVE) */
  flags: Uint8Array;
  /** u8 each, protocol/nat.ts: the NAT type the client reported (0: none) */
  nat: Uint8Array;
  /** u32 each: unix seconds the session's last relay credential expires (0: none) */
  relayExpiry: Uint8Array;
  /** shareIdLength ASCII bytes each */
  ids: Uint8Array;
  /** u32 each: ms of ttl left */
  ttlMs: Uint8Array;
  /** sparse: [session index, ip, port (0 = none), multiaddr] */
  overrides: [number, string | null, number, string | null][];
  /** sparse: [session index, local candidates (protocol/local-candidates.ts)]; from format version 3 */
  local: [number, string[]][];
}

/** shard -> main */
export type FromShard =
  | { t: 'b'; buf: ArrayBuffer | null; out: Uint8Array | null; fwd: (Uint8Array | null)[] | null; ext: Uint8Array | null; peers: number }
  /** extras (ShardExtras, packed) produced between batches: directory refreshes, say */
  | { t: 'x'; ext: Uint8Array }
  | { t: 'c'; id: number; result: unknown }
  | { t: 'log'; level: 'error' | 'warn'; msg: string; err?: string };

export interface ShardStats {
  index: number;
  peers: number;
  tableBytes: number;
  loopDelayMaxMs: number;
  counters: ShardCountersSnapshot;
}
