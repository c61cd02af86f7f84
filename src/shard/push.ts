// push: the requester is told where the target is, and the target (in the same
// moment) where the requester is: income, the hole punch's starting gun. A target
// in another shard, or (with a directory) in another instance, gets the push
// forwarded with where the requester's replies go and the budget they may use.
import { PUSH_NO_SESSION, pushPlan } from '../protocol/dialect.js';
import { relayAllowed } from '../relay/allowed.js';
import { shardOfBucket } from '../routing.js';
import type { PushForward } from '../wire/messages.js';
import { INCOME } from './counters.js';
import type { ShardContext } from './context.js';

export function push(s: ShardContext, targetId: string, relay: string | null): void {
  const r = s.requester, sessions = s.sessions, t = sessions.table;
  // Every push spends a push token, so guessing shareIds is slow (and counted).
  if (r.ipSlot >= 0 && !s.ips.takePushToken(r.ipSlot)) { s.counters.drop('push_rate_limited'); return; }
  const slot = sessions.at(r.key, r.port);
  if (slot < 0) {
    s.counters.unknownSession('push');
    // the sender's dialect is unknown: told in both forms (the error, then the legacy "expired")
    const [error, expired] = PUSH_NO_SESSION;
    if (r.sendFirstFitting(error!)) s.counters.error('NO_SESSION');
    r.sendFirstFitting(expired!);
    return;
  }
  r.dialect = t.dialect[slot]!;
  r.verified = sessions.isVerified(slot);
  // A relayed address sends the target there: only a requester that proved where it is may name one.
  if (relay !== null && !r.verified) return r.error('PROOF_REQUIRED');
  // ... and only an address on a relay the operator configured (relay/allowed.ts), not one of its own.
  if (relay !== null && !relayAllowed(s.opts.relayIps, relay)) return r.error('RELAY_NOT_ALLOWED');
  const bucket = sessions.minter.bucketOf(targetId);
  if (bucket < 0) return r.error('UNKNOWN_SHARE_ID');
  const target = shardOfBucket(bucket, s.opts.shards);
  const withRelay = relay !== null ? { relay } : {};
  if (target === s.opts.index && (!s.pointers.enabled || t.findByShareId(targetId) >= 0)) {
    resolvePush(s, { target: targetId, dialect: t.dialect[slot]!, requester: sessions.view(slot), ...withRelay }, slot);
    return;
  }
  // To another shard, or (when no shard here holds it) to the directory: the push
  // carries where its replies go and the requester's reply budget.
  const f: PushForward = {
    target: targetId, socket: t.socket[slot]!, address: sessions.sendAddress(slot), port: r.port,
    dialect: t.dialect[slot]!, requester: sessions.view(slot), grant: r.takeGrant(), ...withRelay,
  };
  if (target === s.opts.index) s.lookup(f);
  else s.forward(target, f);
}

/**
 * Answers a push whose target belongs in this shard. requesterSlot is -1 when
 * the requester lives in another shard or instance (s.requester then says where replies go).
 */
export function resolvePush(s: ShardContext, f: Pick<PushForward, 'target' | 'dialect' | 'requester' | 'remote' | 'relay'>, requesterSlot: number): void {
  const r = s.requester, sessions = s.sessions, table = sessions.table;
  const t = table.findByShareId(f.target);
  if (t < 0) {
    // Not here: with a directory, a push from this instance may find it in another one.
    if (s.pointers.enabled && requesterSlot < 0 && f.remote === undefined) {
      s.lookup(f as PushForward);
      return;
    }
    return r.error('UNKNOWN_SHARE_ID');
  }
  if (t === requesterSlot) return r.error('SELF_PUSH');
  // A push from another instance was checked there; its relayed address is checked here too, as anything from Redis.
  if (f.relay !== undefined && f.remote !== undefined && !relayAllowed(s.opts.relayIps, f.relay)) return r.error('RELAY_NOT_ALLOWED');
  const plan = pushPlan(f.dialect, f.requester, table.dialect[t]!, sessions.view(t), f.relay ?? null);
  if (f.relay !== undefined && plan.toTarget !== null) s.counters.relayForwarded++;
  let told = false;
  for (const reply of plan.toRequester) told = r.sendFirstFitting(reply) || told;
  if (plan.toTarget === null) { if (told) s.counters.error('PEER_ADDRESS_UNSUPPORTED'); return; }
  // income goes to where the target really is, never to an override. It is not
  // charged to anyone's reply budget: the push names the target's shareId, which
  // the tracker only ever sent to the target's own address, so the pusher got it
  // from the target; the pusher's push-rate limit bounds how often it comes.
  s.writer.toAddress(table.socket[t]!, sessions.sendAddress(t), table.port[t]!);
  s.writer.text(plan.toTarget);
  s.writer.end();
  s.counters.out(INCOME, table.dialect[t]!);
  s.counters.incomes++;
}
