// A token session follows its client to another instance (several instances on one
// directory, sharing --session-key-file; the main thread's side is
// directory/remote-claims.ts), in three steps:
//   claimHere    (tokens.ts) a token request whose token checks out and whose
//                session no shard here holds: as for any move, the path challenge
//                first; with it, the request goes to the main thread as a claim,
//                and nothing is answered yet;
//   release      at the owner: the session ends there, and its state goes back;
//   startHere    the claim's answer, here again: the session starts at the address
//                the challenge validated, with its shareId and state (moved), or its
//                shareId alone (fresh: its owner is gone); then the request is
//                handled as if it had just arrived (shard.ts handleClaimAnswer).
import { DOCUMENTED } from '../protocol/dialect.js';
import type { ErrorCode } from '../protocol/errors.js';
import { shardOfBucket } from '../routing.js';
import type { ClaimForward, ReleaseForward, SessionState } from '../wire/messages.js';
import type { ShardContext } from './context.js';
import { AUTH, KEPT_ALIVE, VERIFIED } from './peer-table.js';
import { roomInTable } from './room.js';

/** Another instance claims a session: if it is a token session here, it ends, and its state goes back. */
export function release(s: ShardContext, f: ReleaseForward): void {
  const sessions = s.sessions, t = sessions.table;
  const slot = typeof f.release === 'string' ? t.findByShareId(f.release) : -1;
  let state: SessionState | null = null;
  if (slot >= 0 && (t.flags[slot]! & AUTH) !== 0) {
    state = { nat: t.nat[slot]!, relayExpiry: t.relayExpiry[slot]! };
    const override = t.overrides.get(slot), local = t.local.get(slot);
    if (override !== undefined) state.override = { ...override };
    if (local !== undefined) state.local = [...local];
    sessions.remove(slot);
  }
  s.handover(f.remote.from, f.remote.req, state);
}

/**
 * The claim's answer (moved or fresh): the session starts at the claiming request's
 * source (r.key, as the shard parsed it) with the claimed shareId. Returns the error
 * the requester gets when it cannot (TRACKER_FULL), or null.
 */
export function startHere(s: ShardContext, f: ClaimForward): ErrorCode | null {
  const r = s.requester, sessions = s.sessions, t = sessions.table;
  if (t.findByShareId(f.shareId) >= 0) return null; // here already (a claim answered twice)
  const bucket = sessions.minter.bucketOf(f.shareId);
  if (bucket < 0 || shardOfBucket(bucket, s.opts.shards) !== s.opts.index) return null;
  const there = sessions.at(r.key, f.port);
  if (there >= 0) {
    // the address's own session, as an announce would replace it; one that uses its token stays
    if ((t.flags[there]! & (AUTH | KEPT_ALIVE)) === (AUTH | KEPT_ALIVE)) return null;
    sessions.remove(there);
  }
  if (!roomInTable(s)) return 'TRACKER_FULL';
  const slot = t.insert(r.key, 0, f.port, f.socket, f.shareId);
  sessions.countForIp(r.key);
  t.dialect[slot] = DOCUMENTED;
  // it holds the token, and the challenge proved it receives here
  t.flags[slot] = AUTH | VERIFIED | KEPT_ALIVE;
  const st = f.state;
  if (st !== undefined) {
    t.nat[slot] = st.nat;
    t.relayExpiry[slot] = st.relayExpiry;
    if (st.override !== undefined) t.overrides.set(slot, st.override);
    if (st.local !== undefined) sessions.setLocal(slot, st.local);
  }
  sessions.keepAlive(slot);
  s.pointers.write(slot);
  s.counters.moved++;
  return null;
}
