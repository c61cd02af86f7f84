// pulse (documented) and alive (legacy): the session lives another ttl; a pulse
// may also prove the client receives (its own shareId), report its NAT, override
// what push reports, or ask for a new shareId.
import {
  ALIVED, PULSE_OK_PREFIX, PULSE_OK_SEED, PULSE_OK_SUFFIX, PULSE_OVERRIDDEN_PREFIX, PULSE_OVERRIDDEN_SEED, dialectOfKeepAlive, keepAliveNoSession,
} from '../protocol/dialect.js';
import { NAT_NOT_REPORTED } from '../protocol/nat.js';
import type { PulseRequest } from '../protocol/request.js';
import { SECRET_CHARS } from '../auth/tag.js';
import { AUTH, KEPT_ALIVE, VERIFIED, type PeerTable } from './peer-table.js';
import type { ShardContext } from './context.js';
import { observedLength, writeObserved } from './tokens.js';

const TOKEN_MEMBER = Buffer.from('","token":"', 'latin1');

/**
 * `known`: the session a token pulse is for (tokens.ts), or -1: the one at the source
 * address. `desktopId`: the id a desktop v0.1.2 alive carried, or -1.
 */
export function keepAlive(s: ShardContext, action: 'pulse' | 'alive', pulse: PulseRequest | null, known = -1, desktopId = -1): void {
  const r = s.requester, sessions = s.sessions, t = sessions.table;
  let slot = known >= 0 ? known : sessions.at(r.key, r.port);
  if (slot < 0 && desktopId >= 0) slot = rebound(s, desktopId);
  if (slot < 0) {
    s.counters.unknownSession(action);
    r.send(keepAliveNoSession(action));
    return;
  }
  // a token session is kept alive, changed or proved only with its token
  if (known < 0 && (t.flags[slot]! & AUTH) !== 0) return r.error('TOKEN_REQUIRED');
  t.dialect[slot] = dialectOfKeepAlive(action);
  t.flags[slot]! |= KEPT_ALIVE;
  if (desktopId >= 0) sessions.noteDesktopId(slot, desktopId);
  sessions.keepAlive(slot);
  if (pulse?.proof != null && t.shareIdEquals(slot, pulse.proof)) t.flags[slot]! |= VERIFIED;
  if (pulse !== null && pulse.nat !== NAT_NOT_REPORTED) t.nat[slot] = pulse.nat;
  if (pulse?.local !== undefined) sessions.setLocal(slot, pulse.local);
  if (pulse === null) {
    r.send(ALIVED);
    return;
  }
  const overridden = pulse.override && applyOverride(t, slot, pulse);
  const idLen = t.idLength;
  const prefix = overridden ? PULSE_OVERRIDDEN_PREFIX : PULSE_OK_PREFIX;
  // a token pulse's reply also says what the tracker sees (a client notices a move), and after a regeneration the new token
  const tokenExtra = known < 0 ? 0 : (pulse.regenerate ? TOKEN_MEMBER.length + idLen + 1 + SECRET_CHARS : 0) + 14 + observedLength(r.key, r.port);
  const full = prefix.length + idLen + tokenExtra + PULSE_OK_SUFFIX.length;
  if (pulse.regenerate) {
    // A new shareId the client could not be told would strand it: only mint one
    // when the reply that carries it can go out (the client retries otherwise).
    if (!r.affords(full)) { s.counters.drop('amplification'); return; }
    t.replaceShareId(slot, sessions.mint(sessions.minter.bucketOf(t.shareId(slot))));
  }
  if (overridden || pulse.regenerate) s.pointers.write(slot);
  if (!r.allow(full)) {
    // The reply exactly as the seed README defines it, without the shareId extension.
    r.send(overridden ? PULSE_OVERRIDDEN_SEED : PULSE_OK_SEED);
    return;
  }
  // Hot path: constant bytes around the shareId, copied from the table.
  const w = r.begin();
  w.bytes(prefix);
  w.bytes(t.ids, slot * idLen, idLen);
  if (known >= 0) {
    if (pulse.regenerate) { w.bytes(TOKEN_MEMBER); w.text(s.key.tokenOf(t.shareId(slot))); }
    writeObserved(w, r.key, r.port);
  }
  w.bytes(PULSE_OK_SUFFIX);
  r.end();
}

/** Sets what push reports for this peer; never where the tracker sends. False when the pulse cleared every override. */
function applyOverride(t: PeerTable, slot: number, p: PulseRequest): boolean {
  if (p.ip === null && p.port === 0 && p.multiaddr === null) {
    t.overrides.delete(slot);
    return false;
  }
  const cur = t.overrides.get(slot);
  t.overrides.set(slot, {
    ip: p.ip ?? cur?.ip ?? null,
    port: p.port || cur?.port || 0,
    multiaddr: p.multiaddr ?? cur?.multiaddr ?? null,
  });
  return true;
}

/**
 * A desktop v0.1.2 alive from a port of an IP with no session there: a NAT rebinding
 * (same public IP, new port) when a legacy session at that very IP sent this id. The
 * session moves to the new port (no proof: it is not VERIFIED there); a token session
 * moves only with its token. Returns the session, or -1.
 */
function rebound(s: ShardContext, id: number): number {
  const r = s.requester, sessions = s.sessions, t = sessions.table;
  const slot = sessions.desktopSessionAt(r.key, id);
  if (slot < 0 || (t.flags[slot]! & AUTH) !== 0) return -1;
  sessions.moveTo(slot, r.key, r.port, t.socket[slot]!, false);
  s.pointers.write(slot);
  s.counters.moved++;
  return slot;
}
