// What a shard counts. The per-request counters are fixed typed arrays indexed
// by small integers (no string building or allocation per datagram); the rarer
// ones are numbers keyed by stable names. The main thread sums them over shards
// for stats and metrics (ops/metrics.ts).
import { DIALECT_NAMES } from '../protocol/dialect.js';
import type { ErrorCode } from '../protocol/errors.js';

export type DropReason = 'amplification' | 'rate_limited' | 'push_rate_limited' | 'bad_source' | 'bad_forward' | 'internal_error' |
  /** a reply longer than a frame record holds (wire/frame.ts RecordTooLong): cancelled */
  'reply_too_long' |
  /** a datagram that is not STUN on one of the other STUN addresses, which answer STUN alone */
  'not_stun' | 'stun_malformed' | 'stun_bad_fingerprint' | 'stun_not_a_request';

/** Request actions by index; INCOME is outgoing only (the datagram a push sends its target); STUN is any STUN message. */
export const ACTIONS = ['announce', 'pulse', 'alive', 'push', 'invalid', 'income', 'stun', 'relay'] as const;
export const ANNOUNCE = 0, PULSE = 1, ALIVE = 2, PUSH = 3, INVALID = 4, INCOME = 5, STUN = 6, RELAY = 7;
const ACTION_INDEX: Record<string, number> = { announce: ANNOUNCE, pulse: PULSE, alive: ALIVE, push: PUSH, invalid: INVALID, relay: RELAY };
const DIALECTS = DIALECT_NAMES.length;

/** Upper bounds of the batch-size histogram: 1, 2, 4, ... 65536 datagrams (a batch holds at most 0xffff). */
export const BATCH_BUCKETS = Array.from({ length: 17 }, (_, i) => 2 ** i);

export interface ShardCountersSnapshot {
  requests: Record<string, number>;
  /** datagrams in / out: count per "action/dialect" */
  datagramsIn: Record<string, number>;
  datagramsOut: Record<string, number>;
  unknownSession: Record<string, number>;
  errors: Record<string, number>;
  drops: Record<string, number>;
  /** batches whose size was <= BATCH_BUCKETS[i] (non-cumulative), and their sum */
  batchSizes: number[];
  batchedDatagrams: number;
  forwarded: number;
  incomes: number;
  relayMinted: number;
  relayReused: number;
  relayForwarded: number;
  /** sessions that moved to a new address (token sessions: tokens.ts; desktop rebindings: keep-alive.ts), and token requests forwarded to their session's shard */
  moved: number;
  tokenForwarded: number;
  expired: number;
  /** sessions that gave way to a new announce in a full table, by list (give-way.ts): never kept alive, kept alive but not proven */
  evictedNeverKeptAlive: number;
  evictedNotProven: number;
  restored: number;
  /** STUN messages by what they are (stun/binding.ts StunVerdict), responses by result, error responses by code */
  stunRequests: Record<string, number>;
  stunResponses: Record<string, number>;
  stunErrors: Record<string, number>;
}

function bump(map: Record<string, number>, key: string): void {
  map[key] = (map[key] ?? 0) + 1;
}

export function actionIndex(action: string): number {
  return ACTION_INDEX[action] ?? INVALID;
}

export class ShardCounters {
  private readonly requests: Record<string, number> = { announce: 0, pulse: 0, alive: 0, push: 0, relay: 0, invalid: 0 };
  private readonly inByKind = new Float64Array(ACTIONS.length * DIALECTS);
  private readonly outByKind = new Float64Array(ACTIONS.length * DIALECTS);
  private readonly unknownSessions: Record<string, number> = {};
  private readonly errors: Record<string, number> = {};
  private readonly drops: Record<string, number> = {};
  private readonly stunRequests: Record<string, number> = {};
  private readonly stunResponses: Record<string, number> = {};
  private readonly stunErrors: Record<string, number> = {};
  private readonly batchSizes = new Float64Array(BATCH_BUCKETS.length);
  private batchedDatagrams = 0;
  forwarded = 0;
  incomes = 0;
  /** relay credentials minted, and handed out again (relayInterval); pushes that carried a relayed address to their target */
  relayMinted = 0;
  relayReused = 0;
  relayForwarded = 0;
  moved = 0;
  tokenForwarded = 0;
  expired = 0;
  evictedNeverKeptAlive = 0;
  evictedNotProven = 0;
  restored = 0;

  request(action: string): void { this.requests[action]!++; }
  /** One datagram in, as action index x dialect (see protocol/dialect.ts). */
  in(action: number, dialect: number): void { this.inByKind[action * DIALECTS + dialect]++; }
  /** One datagram out. */
  out(action: number, dialect: number): void { this.outByKind[action * DIALECTS + dialect]++; }
  /** A session gave way to a new announce; `list`: give-way.ts NEVER_KEPT_ALIVE (0) or NOT_PROVEN (1). */
  evicted(list: number): void { if (list === 0) this.evictedNeverKeptAlive++; else this.evictedNotProven++; }
  unknownSession(action: string): void { bump(this.unknownSessions, action); }
  error(code: ErrorCode): void { bump(this.errors, code); }
  drop(reason: DropReason): void { bump(this.drops, reason); }
  stunRequest(verdict: string): void { bump(this.stunRequests, verdict); }
  stunResponse(code: number): void {
    bump(this.stunResponses, code === 0 ? 'success' : 'error');
    if (code !== 0) bump(this.stunErrors, String(code));
  }

  batch(datagrams: number): void {
    // bucket i holds sizes in (2^(i-1), 2^i]: 32 - clz32(n - 1) is ceil(log2 n)
    this.batchSizes[datagrams <= 1 ? 0 : 32 - Math.clz32(datagrams - 1)]++;
    this.batchedDatagrams += datagrams;
  }

  snapshot(): ShardCountersSnapshot {
    return {
      requests: { ...this.requests },
      datagramsIn: byKind(this.inByKind),
      datagramsOut: byKind(this.outByKind),
      unknownSession: { ...this.unknownSessions },
      errors: { ...this.errors },
      drops: { ...this.drops },
      batchSizes: Array.from(this.batchSizes),
      batchedDatagrams: this.batchedDatagrams,
      forwarded: this.forwarded,
      incomes: this.incomes,
      relayMinted: this.relayMinted,
      relayReused: this.relayReused,
      relayForwarded: this.relayForwarded,
      moved: this.moved,
      tokenForwarded: this.tokenForwarded,
      expired: this.expired,
      evictedNeverKeptAlive: this.evictedNeverKeptAlive,
      evictedNotProven: this.evictedNotProven,
      restored: this.restored,
      stunRequests: { ...this.stunRequests },
      stunResponses: { ...this.stunResponses },
      stunErrors: { ...this.stunErrors },
    };
  }
}

/** "action/dialect" -> count, for the kinds seen at least once. */
function byKind(counts: Float64Array): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < counts.length; i++) {
    if (counts[i]! > 0) out[`${ACTIONS[Math.floor(i / DIALECTS)]}/${DIALECT_NAMES[i % DIALECTS]}`] = counts[i]!;
  }
  return out;
}
