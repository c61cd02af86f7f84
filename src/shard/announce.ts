// announce: a session for the sender's address, and its shareId in the reply.
import { announceReplies, dialectOfAnnounce, DOCUMENTED, UNKNOWN } from '../protocol/dialect.js';
import { NAT_NOT_REPORTED } from '../protocol/nat.js';
import type { AnnounceRequest } from '../protocol/request.js';
import { AUTH, KEPT_ALIVE } from './peer-table.js';
import type { ShardContext } from './context.js';
import { tokenAnnounceReply } from './tokens.js';
import { roomInTable, sessionLimitOf } from './room.js';

export function announce(s: ShardContext, req: AnnounceRequest, socket: number, bucket: number): void {
  const r = s.requester, sessions = s.sessions, t = sessions.table;
  let slot = sessions.at(r.key, r.port);
  const flags = slot >= 0 ? t.flags[slot]! : 0;
  // A token session that has used its token is replaced by nothing but its expiry (docs/security.md).
  if ((flags & (AUTH | KEPT_ALIVE)) === (AUTH | KEPT_ALIVE)) return r.error('TOKEN_REQUIRED');
  // One that has not (its announce may have been forged) gives way to a plain announce; a token announce retried gets it again.
  if ((flags & KEPT_ALIVE) !== 0 || ((flags & AUTH) !== 0 && !req.wantsToken)) {
    // A new announce from an address whose session is established replaces it:
    // the old shareId stops resolving (the address may now be someone else).
    sessions.remove(slot);
    slot = -1;
  }
  // An announce retried before any keep-alive (the desktop client resends every
  // second until answered) gets the same shareId again.
  if (slot < 0) {
    const limit = sessionLimitOf(s);
    if (limit !== null) return r.error(limit);
    // A full table: a session that proved nothing gives way (sessions.ts evictForNew), a proven one never.
    if (!roomInTable(s)) return r.error('TRACKER_FULL');
    slot = sessions.create(r.key, r.port, socket, bucket);
    s.pointers.write(slot);
  }
  const told = req.wantsToken ? DOCUMENTED : dialectOfAnnounce(req);
  if (told !== UNKNOWN) t.dialect[slot] = told;
  if (req.nat !== NAT_NOT_REPORTED) t.nat[slot] = req.nat;
  if (req.local !== undefined) sessions.setLocal(slot, req.local);
  r.dialect = t.dialect[slot]!;
  sessions.keepAlive(slot);
  if (req.wantsToken) {
    t.flags[slot]! |= AUTH;
    return tokenAnnounceReply(s, slot);
  }
  for (const reply of announceReplies(s.opts.announceReply, t.dialect[slot]!, t.shareId(slot))) r.sendFirstFitting(reply);
}
