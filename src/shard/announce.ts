// announce: a session for the sender's address, and its shareId in the reply.
import { announceReplies, dialectOfAnnounce, UNKNOWN } from '../protocol/dialect.js';
import { NAT_NOT_REPORTED } from '../protocol/nat.js';
import type { AnnounceRequest } from '../protocol/request.js';
import { KEPT_ALIVE } from './peer-table.js';
import type { ShardContext } from './context.js';

export function announce(s: ShardContext, req: AnnounceRequest, socket: number, bucket: number): void {
  const r = s.requester, sessions = s.sessions, t = sessions.table;
  let slot = sessions.at(r.key, r.port);
  if (slot >= 0 && (t.flags[slot]! & KEPT_ALIVE) !== 0) {
    // A new announce from an address whose session is established replaces it:
    // the old shareId stops resolving (the address may now be someone else).
    sessions.remove(slot);
    slot = -1;
  }
  // An announce retried before any keep-alive (the desktop client resends every
  // second until answered) gets the same shareId again.
  if (slot < 0) {
    if (r.ipSlot >= 0 && s.ips.sessions[r.ipSlot]! >= (s.ips.isIpv6Prefix(r.ipSlot) ? s.opts.maxSessionsPerIpv6Prefix : s.opts.maxSessionsPerIp)) {
      return r.error('SESSION_LIMIT');
    }
    // A full table: a session that proved nothing gives way (sessions.ts evictForNew), a proven one never.
    if (t.size >= s.opts.maxSessions) {
      const from = sessions.evictForNew();
      if (from < 0) return r.error('TRACKER_FULL');
      s.counters.evicted(from);
    }
    slot = sessions.create(r.key, r.port, socket, bucket);
    s.pointers.write(slot);
  }
  const told = dialectOfAnnounce(req);
  if (told !== UNKNOWN) t.dialect[slot] = told;
  if (req.nat !== NAT_NOT_REPORTED) t.nat[slot] = req.nat;
  if (req.local !== undefined) sessions.setLocal(slot, req.local);
  r.dialect = t.dialect[slot]!;
  sessions.keepAlive(slot);
  for (const reply of announceReplies(s.opts.announceReply, t.dialect[slot]!, t.shareId(slot))) r.sendFirstFitting(reply);
}
