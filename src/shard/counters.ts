// What a shard counts. Plain numbers keyed by stable names; the main thread sums
// them over shards for stats and metrics.
import type { ErrorCode } from '../protocol/errors.js';

export type DropReason = 'amplification' | 'bad_source' | 'bad_forward' | 'internal_error';

export interface ShardCountersSnapshot {
  requests: Record<string, number>;
  unknownSession: Record<string, number>;
  errors: Record<string, number>;
  drops: Record<string, number>;
  forwarded: number;
  incomes: number;
  expired: number;
}

function bump(map: Record<string, number>, key: string): void {
  map[key] = (map[key] ?? 0) + 1;
}

export class ShardCounters {
  private readonly requests: Record<string, number> = { announce: 0, pulse: 0, alive: 0, push: 0, invalid: 0 };
  private readonly unknownSessions: Record<string, number> = {};
  private readonly errors: Record<string, number> = {};
  private readonly drops: Record<string, number> = {};
  forwarded = 0;
  incomes = 0;
  expired = 0;

  request(action: string): void { this.requests[action]!++; }
  unknownSession(action: string): void { bump(this.unknownSessions, action); }
  error(code: ErrorCode): void { bump(this.errors, code); }
  drop(reason: DropReason): void { bump(this.drops, reason); }

  snapshot(): ShardCountersSnapshot {
    return {
      requests: { ...this.requests },
      unknownSession: { ...this.unknownSessions },
      errors: { ...this.errors },
      drops: { ...this.drops },
      forwarded: this.forwarded,
      incomes: this.incomes,
      expired: this.expired,
    };
  }
}
