// Pushes between tracker instances, on the main thread.
//
//   requester's instance                          owner's instance
//   shard: target not here -> lookup
//   GET sobani:s:<id> -> owner
//   PUBLISH sobani:i2:<owner> {push}  ----------->  shard holding <id>: income to the
//                                                  target from this socket; the
//                                                  requester's replies, within the
//                                                  grant it carried, as payloads
//                                     <-----------  PUBLISH sobani:i2:<from> {result}
//   sends them from its own socket to
//   where it recorded the push came from
//
// Every message is checked by messages.ts before use. A result is taken only for a
// request pending here (an unguessable id) with the instance it was sent to, once;
// its replies go to the address this instance recorded, within the grant this
// instance took: nothing in a message says where a datagram goes.
//
// Each side's NAT mapping only exists toward the instance it talks to, so each
// peer hears from its own instance. Every failure reaches the requester as an
// error written by a shard, within the same reply budget as any reply:
// UNKNOWN_SHARE_ID (no pointer), PEER_UNREACHABLE (the owner is gone or did not
// answer within directoryTimeout), DIRECTORY_UNAVAILABLE (Redis cannot answer).
//
// This instance's channel also carries the claims of token sessions that follow
// their client to another instance: decoded here, handled by remote-claims.ts.
import type { Logger } from '../log.js';
import type { ErrorCode } from '../protocol/errors.js';
import { WIRE_OVERHEAD_V6, wireOverheadOf } from '../shard/ip-table.js';
import { ReplyWriter } from '../wire/frame.js';
import type { Forward, PushForward } from '../wire/messages.js';
import { DirectoryMessages, mintReqId, type InvalidReason, type MessageLimits, type RemotePush } from './messages.js';
import type { RedisDirectory } from './redis-directory.js';
import type { SessionKey } from '../auth/session-key.js';
import { TAG_CHARS, TAG_END, TAG_MEMBER } from '../auth/tag.js';
import { RemoteClaims } from './remote-claims.js';

/** Upper bounds (ms) of the remote push latency histogram. */
export const LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

export interface RemotePushCounters {
  /** pushes this instance sent to others, by outcome */
  outcomes: Record<'answered' | ErrorCode, number>;
  /** pushes from other instances handled here */
  served: number;
  /** answered pushes by latency (non-cumulative counts per LATENCY_BUCKETS_MS bound, the last: above) and their sum */
  latencyBuckets: number[];
  latencySumMs: number;
  /** messages on this instance's channel that were dropped, by reason (messages.ts InvalidReason) */
  invalid: Partial<Record<InvalidReason, number>>;
}

/** What the pushes need from the rest of the main thread (io/dispatcher.ts). */
export interface PushRouter {
  /** Hands a push (or a claim's outcome, a release) to a shard of this instance (by index). */
  toShard(shard: number, f: Forward): void;
  /** The shard that holds a shareId's bucket. */
  shardOf(shareId: string): number;
  /** Sends a reply batch of SEND_TO records (wire/frame.ts) from this instance's socket. */
  send(out: Uint8Array): void;
}

interface Pending {
  shard: number;
  /** the push as this instance's shard wrote it: where the requester's replies go, and their grant */
  f: PushForward;
  /** the instance the push was published to; null until the lookup answers */
  owner: string | null;
  timer: NodeJS.Timeout;
  startedAt: number;
}

export class RemotePushes {
  readonly counters: RemotePushCounters = {
    outcomes: { answered: 0 } as RemotePushCounters['outcomes'],
    served: 0,
    latencyBuckets: new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0),
    latencySumMs: 0,
    invalid: {},
  };
  private readonly messages: DirectoryMessages;
  private readonly writer = new ReplyWriter(1024);
  private readonly pending = new Map<string, Pending>();
  /** Token sessions moving between instances; null without a session key (tests of pushes alone). */
  readonly claims: RemoteClaims | null;

  /**
   * `key`: this instance's session key. A push that carried its requester's token is
   * answered by the owner untagged; this instance tags the replies with the secret of
   * the requester's session (its own: it issued the token), so instances need not
   * share a key for a push between them. `keyShared`: the key comes from
   * --session-key-file, which every instance on the directory shares: each message
   * then carries its MAC (messages.ts), and claims of token sessions are possible.
   */
  constructor(
    private readonly directory: RedisDirectory,
    private readonly router: PushRouter,
    private readonly timeoutMs: number,
    limits: MessageLimits,
    private readonly log?: Logger,
    private readonly key?: SessionKey,
    keyShared = false,
  ) {
    this.messages = new DirectoryMessages(limits, keyShared && key !== undefined ? key : null);
    this.claims = key === undefined ? null : new RemoteClaims(directory, router, timeoutMs, this.messages, key, (reason) => this.invalid(reason));
  }

  /** A push from shard `shard` whose target no shard here holds. */
  push(shard: number, f: PushForward): void {
    if (this.directory.state !== 'up') return this.fail(shard, f, 'DIRECTORY_UNAVAILABLE');
    const req = mintReqId();
    const timer = setTimeout(() => this.settle(req, 'PEER_UNREACHABLE'), this.timeoutMs);
    const p: Pending = { shard, f, owner: null, timer, startedAt: performance.now() };
    this.pending.set(req, p);
    this.directory.lookup(f.target).then(
      (owner) => {
        if (!this.pending.has(req)) return;
        // No pointer, or one to this very instance: the session is gone (expired, replaced).
        if (owner === null || owner === this.directory.instanceId) return this.settle(req, 'UNKNOWN_SHARE_ID');
        p.owner = owner;
        const remote: RemotePush = {
          target: f.target, dialect: f.dialect, requester: f.requester, grant: f.grant,
          v6: wireOverheadOf(f.address) === WIRE_OVERHEAD_V6, ...(f.relay !== undefined ? { relay: f.relay } : {}),
          ...(f.cap !== undefined ? { cap: f.cap } : {}),
        };
        this.directory.publish(owner, this.messages.encode({ k: 'push', from: this.directory.instanceId, req, f: remote })).then(
          (receivers) => { if (receivers === 0) this.settle(req, 'PEER_UNREACHABLE'); },
          () => this.settle(req, 'DIRECTORY_UNAVAILABLE'),
        );
      },
      () => this.settle(req, 'DIRECTORY_UNAVAILABLE'),
    );
  }

  /** The answer (reply payloads for its requester) a shard here wrote for another instance's push. */
  answer(from: string, req: string, replies: Uint8Array[]): void {
    const message = this.messages.encode({ k: 'result', from: this.directory.instanceId, req, replies });
    this.directory.publish(from, message).catch(() => {}); // the requester times out and says so
  }

  /** A message on this instance's channel. */
  onMessage(raw: Uint8Array): void {
    const m = this.messages.decode(raw);
    if ('invalid' in m) return this.invalid(m.invalid, m.field);
    if (m.k === 'claim' || m.k === 'handover') {
      if (this.claims === null) return this.invalid('bad_kind');
      return m.k === 'claim' ? this.claims.onClaim(m) : this.claims.onHandover(m);
    }
    if (m.k === 'push') {
      this.counters.served++;
      const f = m.f;
      // No address to answer to: the replies go back to m.from as payloads (shard/forwards.ts).
      this.router.toShard(this.router.shardOf(f.target), {
        target: f.target, dialect: f.dialect, requester: f.requester, grant: f.grant,
        socket: 0, address: '', port: 0, remote: { from: m.from, req: m.req, v6: f.v6 },
        ...(f.relay !== undefined ? { relay: f.relay } : {}),
        ...(f.cap !== undefined ? { cap: f.cap } : {}),
      });
      return;
    }
    const p = this.pending.get(m.req);
    // too late (the requester was told PEER_UNREACHABLE), answered already, or not ours
    if (p === undefined || p.owner !== m.from) return this.invalid('unmatched_result');
    this.done(m.req, p);
    this.counters.outcomes.answered++;
    const ms = performance.now() - p.startedAt;
    const i = LATENCY_BUCKETS_MS.findIndex((b) => ms <= b);
    this.counters.latencyBuckets[i < 0 ? LATENCY_BUCKETS_MS.length : i]!++;
    this.counters.latencySumMs += ms;
    // To where this instance recorded the request came from, within the grant it took.
    const { socket, address, port, grant } = p.f;
    const overhead = wireOverheadOf(address);
    let budget = grant;
    const tagKey = p.f.tagged === true && this.key !== undefined ? this.key.tagKeyOf(p.f.requester.shareId) : null;
    for (const reply of m.replies) {
      // a tagged message is a JSON object: what an owner could not have written is not sent
      if (tagKey !== null && reply[reply.length - 1] !== 0x7d /* } */) { this.invalid('bad_field', 'replies'); continue; }
      const bytes = reply.length + (tagKey !== null ? TAG_MEMBER.length + TAG_CHARS + TAG_END.length - 1 : 0);
      if (budget >= 0) {
        if (bytes + overhead > budget) { this.invalid('over_budget'); break; }
        budget -= bytes + overhead;
      }
      this.writer.toAddress(socket, address, port);
      this.writer.bytes(reply);
      if (tagKey === null) this.writer.end();
      else this.writer.endTagged(tagKey);
    }
    const out = this.writer.take();
    if (out !== null) this.router.send(out);
  }

  private invalid(reason: InvalidReason, field?: string): void {
    const n = this.counters.invalid[reason] = (this.counters.invalid[reason] ?? 0) + 1;
    // the first of each reason is logged; the counter tells the rest
    if (n === 1) this.log?.warn({ reason, ...(field !== undefined ? { field } : {}) }, 'dropped a message from the session directory (counted in sobani_directory_invalid_total)');
  }

  private settle(req: string, code: ErrorCode): void {
    const p = this.pending.get(req);
    if (p === undefined) return;
    this.done(req, p);
    this.fail(p.shard, p.f, code);
  }

  private done(req: string, p: { timer: NodeJS.Timeout }): void {
    clearTimeout(p.timer);
    this.pending.delete(req);
  }

  /** The requester's shard tells it, within its budget. */
  private fail(shard: number, f: PushForward, code: ErrorCode): void {
    this.counters.outcomes[code] = (this.counters.outcomes[code] ?? 0) + 1;
    this.router.toShard(shard, { ...f, failed: code });
  }

  close(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
    this.claims?.close();
  }
}
