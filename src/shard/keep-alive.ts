// pulse (documented) and alive (legacy): the session lives another ttl; a pulse
// may also prove the client receives (its own shareId), report its NAT, override
// what push reports, or ask for a new shareId.
import {
  ALIVED, PULSE_OK_PREFIX, PULSE_OK_SEED, PULSE_OK_SUFFIX, PULSE_OVERRIDDEN_PREFIX, PULSE_OVERRIDDEN_SEED, dialectOfKeepAlive, keepAliveNoSession,
} from '../protocol/dialect.js';
import { NAT_NOT_REPORTED } from '../protocol/nat.js';
import type { PulseRequest } from '../protocol/request.js';
import { KEPT_ALIVE, VERIFIED, type PeerTable } from './peer-table.js';
import type { ShardContext } from './context.js';

export function keepAlive(s: ShardContext, action: 'pulse' | 'alive', pulse: PulseRequest | null): void {
  const r = s.requester, sessions = s.sessions, t = sessions.table;
  const slot = sessions.at(r.key, r.port);
  if (slot < 0) {
    s.counters.unknownSession(action);
    r.send(keepAliveNoSession(action));
    return;
  }
  t.dialect[slot] = dialectOfKeepAlive(action);
  t.flags[slot]! |= KEPT_ALIVE;
  sessions.keepAlive(slot);
  if (pulse?.proof != null && t.shareIdEquals(slot, pulse.proof)) t.flags[slot]! |= VERIFIED;
  if (pulse !== null && pulse.nat !== NAT_NOT_REPORTED) t.nat[slot] = pulse.nat;
  if (pulse?.local !== undefined) sessions.setLocal(slot, pulse.local);
  r.verified = sessions.isVerified(slot);
  if (pulse === null) {
    r.send(ALIVED);
    return;
  }
  const overridden = pulse.override && applyOverride(t, slot, pulse);
  const idLen = t.idLength;
  const prefix = overridden ? PULSE_OVERRIDDEN_PREFIX : PULSE_OK_PREFIX;
  const full = prefix.length + idLen + PULSE_OK_SUFFIX.length;
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
  w.bytes(PULSE_OK_SUFFIX);
  w.end();
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
