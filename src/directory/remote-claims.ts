// A token session that follows its client to another instance, on the main thread
// (several instances on one directory, sharing --session-key-file).
//
//   the client's new instance                      the session's owner
//   shard: a valid token and path challenge,
//   no session here -> claim
//   GET sobani:s:<id> -> owner
//   PUBLISH sobani:i2:<owner> {claim, proof} ---->  proof checked (the shared key);
//                                                   the shard holding <id> ends the
//                                                   session and gives its state
//                                      <----------  PUBLISH sobani:i2:<from> {handover}
//   the shard starts the session at the client's
//   validated address with its shareId and state,
//   then serves the request
//
// The outcome reaches the claiming shard with the request: moved (with the state),
// fresh (the pointer names an instance nobody listens for: it is gone, and its
// sessions with it; the session starts here, its shareId kept), none (no pointer, or
// the owner does not hold it: NO_SESSION), or the error the requester is told
// (DIRECTORY_UNAVAILABLE, PEER_UNREACHABLE after directoryTimeout; a handover that
// comes after that still starts the session here, so a slow Redis loses no session:
// the requester's retry is then served; within 30 directoryTimeouts, after that it is
// unmatched). Only a request
// with the session's token and a challenge proving its source receives makes a
// claim; only a claim with the key's proof ends a session; a handover is taken only
// for a claim pending here with the instance it was sent to.
import type { SessionKey } from '../auth/session-key.js';
import type { ClaimForward, Forward, SessionState } from '../wire/messages.js';
import { mintReqId, type DirectoryMessages, type InvalidReason } from './messages.js';
import type { RedisDirectory } from './redis-directory.js';

type Outcome = NonNullable<ClaimForward['outcome']>;

/** How many directoryTimeouts a claim that timed out still takes its handover (the owner may have ended the session): 30 s at the default. */
export const LATE_TIMEOUTS = 30;
/**
 * A claim is taken within this much of when it was made (instances' clocks must
 * agree to within it, as NTP keeps them), and only once: a claim captured from Redis
 * and published again ends nothing.
 */
export const CLAIM_WINDOW_MS = 30_000;

export interface ClaimCounters {
  /**
   * claims this instance made, by outcome; besides: `late`, a handover after
   * PEER_UNREACHABLE, taken; `unanswered`, no handover within LATE_TIMEOUTS after one
   */
  outcomes: Partial<Record<Outcome | 'late' | 'unanswered', number>>;
  /** sessions this instance handed to another one */
  released: number;
}

/** What the claims need from the rest of the main thread (io/dispatcher.ts). */
export interface ClaimRouter {
  toShard(shard: number, f: Forward): void;
  shardOf(shareId: string): number;
}

interface Pending { shard: number; f: ClaimForward; owner: string | null; timer: NodeJS.Timeout }

export class RemoteClaims {
  readonly counters: ClaimCounters = { outcomes: {}, released: 0 };
  private readonly pending = new Map<string, Pending>();
  /** Claims answered PEER_UNREACHABLE after they were published: their handover is still taken, for LATE_TIMEOUTS x timeoutMs. */
  private readonly late = new Map<string, Pending>();
  /** Other instances' claims taken in the last CLAIM_WINDOW_MS ("from req" -> when), oldest first. */
  private readonly taken = new Map<string, number>();

  constructor(
    private readonly directory: RedisDirectory,
    private readonly router: ClaimRouter,
    private readonly timeoutMs: number,
    private readonly messages: DirectoryMessages,
    private readonly key: SessionKey,
    private readonly invalid: (reason: InvalidReason) => void,
  ) {}

  /** A shard's claim: its request waits here until the owner answers. */
  claim(shard: number, f: ClaimForward): void {
    if (this.directory.state !== 'up') return this.back(shard, f, 'DIRECTORY_UNAVAILABLE');
    const req = mintReqId();
    const timer = setTimeout(() => this.settle(req, 'PEER_UNREACHABLE'), this.timeoutMs);
    const p: Pending = { shard, f, owner: null, timer };
    this.pending.set(req, p);
    const self = this.directory.instanceId;
    this.directory.lookup(f.shareId).then(
      (owner) => {
        if (!this.pending.has(req)) return;
        // no pointer, or one to this very instance (no shard here holds it): the session is gone
        if (owner === null || owner === self) return this.settle(req, 'none');
        p.owner = owner;
        const at = Date.now();
        const proof = this.key.claimProof(f.shareId, self, req, at);
        this.directory.publish(owner, this.messages.encode({ k: 'claim', from: self, req, shareId: f.shareId, at, proof })).then(
          (receivers) => { if (receivers === 0) this.settle(req, 'fresh'); },
          () => this.settle(req, 'DIRECTORY_UNAVAILABLE'),
        );
      },
      () => this.settle(req, 'DIRECTORY_UNAVAILABLE'),
    );
  }

  /** Another instance claims one of this instance's sessions. */
  onClaim(m: { from: string; req: string; shareId: string; at: number; proof: string }): void {
    if (!this.key.checkClaimProof(m.shareId, m.from, m.req, m.at, m.proof)) return this.invalid('bad_proof');
    const now = Date.now();
    for (const [id, when] of this.taken) { if (now - when <= CLAIM_WINDOW_MS) break; this.taken.delete(id); }
    const id = `${m.from} ${m.req}`;
    if (Math.abs(now - m.at) > CLAIM_WINDOW_MS || this.taken.has(id)) return this.invalid('replayed');
    this.taken.set(id, now);
    this.router.toShard(this.router.shardOf(m.shareId), { release: m.shareId, remote: { from: m.from, req: m.req } });
  }

  /** A shard here answered a claim: the released session's state, or null. */
  handover(from: string, req: string, state: SessionState | null): void {
    if (state !== null) this.counters.released++;
    this.directory.publish(from, this.messages.encode({ k: 'handover', from: this.directory.instanceId, req, state })).catch(() => {});
  }

  /** The owner's answer to a claim of this instance. */
  onHandover(m: { from: string; req: string; state: SessionState | null }): void {
    const p = this.pending.get(m.req);
    if (p === undefined || p.owner !== m.from) {
      const l = this.late.get(m.req);
      if (l === undefined || l.owner !== m.from) return this.invalid('unmatched_result');
      this.done(m.req, l);
      // the requester was told PEER_UNREACHABLE: the session starts here all the same, its request answered again
      // only if it is now authenticated (no grant: its budget was spent on the error)
      if (m.state !== null) this.back(l.shard, { ...l.f, grant: 0, cap: 0 }, 'moved', m.state, 'late');
      return;
    }
    this.done(m.req, p);
    this.back(p.shard, p.f, m.state === null ? 'none' : 'moved', m.state ?? undefined);
  }

  private settle(req: string, outcome: Outcome): void {
    const p = this.pending.get(req);
    if (p === undefined) return;
    this.done(req, p);
    if (outcome === 'PEER_UNREACHABLE' && p.owner !== null) {
      p.timer = setTimeout(() => {
        this.late.delete(req);
        this.counters.outcomes.unanswered = (this.counters.outcomes.unanswered ?? 0) + 1;
      }, LATE_TIMEOUTS * this.timeoutMs);
      p.timer.unref();
      this.late.set(req, p);
    }
    this.back(p.shard, p.f, outcome);
  }

  private done(req: string, p: Pending): void {
    clearTimeout(p.timer);
    this.pending.delete(req);
    this.late.delete(req);
  }

  private back(shard: number, f: ClaimForward, outcome: Outcome, state?: SessionState, counted: Outcome | 'late' = outcome): void {
    this.counters.outcomes[counted] = (this.counters.outcomes[counted] ?? 0) + 1;
    this.router.toShard(shard, { ...f, outcome, ...(state !== undefined ? { state } : {}) });
  }

  close(): void {
    for (const p of [...this.pending.values(), ...this.late.values()]) clearTimeout(p.timer);
    this.pending.clear();
    this.late.clear();
  }
}
