// Whether a new session fits in this shard (an announce, or a token session that
// follows its client from another instance): the per-IP (per-/64) limit, and in a
// full table, who gives way (sessions.ts evictForNew: a proven session never does).
import type { ErrorCode } from '../protocol/errors.js';
import type { ShardContext } from './context.js';

/** Whether the IP may hold one more session here (announce's rule); the error it gets if not. */
export function sessionLimitOf(s: ShardContext): ErrorCode | null {
  const ip = s.requester.ipSlot;
  if (ip < 0) return null;
  const most = s.ips.isIpv6Prefix(ip) ? s.opts.maxSessionsPerIpv6Prefix : s.opts.maxSessionsPerIp;
  return s.ips.sessions[ip]! >= most ? 'SESSION_LIMIT' : null;
}

/** A full table: a session that proved nothing gives way (sessions.ts evictForNew); false if none does. */
export function roomInTable(s: ShardContext): boolean {
  if (s.sessions.table.size < s.opts.maxSessions) return true;
  const from = s.sessions.evictForNew();
  if (from < 0) return false;
  s.counters.evicted(from);
  return true;
}
