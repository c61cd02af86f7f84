// relay: TURN credentials (the README's "Relay"), only for a live session that
// proved it receives (the reply is larger than the request), at most relayRate a
// second per IP, and the same pair again until relayInterval seconds after it was
// minted, counted in the whole seconds of its expiry (the unix seconds coturn reads).
import { relayReceived } from '../protocol/dialect.js';
import { turnCredentialFor } from '../relay/credentials.js';
import type { ShardContext } from './context.js';
import { AUTH } from './peer-table.js';

/** `known`: the session a token request is for (tokens.ts), or -1: the one at the source address. */
export function relay(s: ShardContext, known = -1): void {
  const r = s.requester, sessions = s.sessions, t = sessions.table;
  const relay = s.opts.relay;
  if (relay === null) return r.error('RELAY_NOT_CONFIGURED');
  if (r.ipSlot >= 0 && !s.ips.takeRelayToken(r.ipSlot)) return r.error('RELAY_RATE_LIMITED');
  const slot = known >= 0 ? known : sessions.at(r.key, r.port);
  if (slot < 0) { s.counters.unknownSession('relay'); return r.error('NO_SESSION'); }
  if (known < 0 && (t.flags[slot]! & AUTH) !== 0) return r.error('TOKEN_REQUIRED');
  r.dialect = t.dialect[slot]!;
  if (!sessions.isVerified(slot)) return r.error('PROOF_REQUIRED');
  const nowMs = Date.now(); // wall clock: coturn reads the expiry as unix seconds
  const now = Math.floor(nowMs / 1000);
  let expiry = t.relayExpiry[slot]!;
  if (expiry === 0 || now >= expiry - relay.ttl + relay.interval) {
    expiry = now + relay.ttl;
    t.relayExpiry[slot] = expiry;
    s.counters.relayMinted++;
  } else s.counters.relayReused++;
  r.send(relayReceived(relay.urls, turnCredentialFor(relay.secret, t.shareId(slot), expiry, nowMs)));
}
