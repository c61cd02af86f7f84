// Pushes between tracker instances, on the main thread.
//
//   requester's instance                          owner's instance
//   shard: target not here -> lookup
//   GET sobani:s:<id> -> owner
//   PUBLISH sobani:i:<owner> {push}  ----------->  shard holding <id>: income to the
//                                                  target from this socket; the
//                                                  requester's replies, within the
//                                                  grant it carried, written for
//                                     <-----------  PUBLISH sobani:i:<from> {result}
//   sends the replies from its own socket
//
// Each side's NAT mapping only exists toward the instance it talks to, so each
// peer hears from its own instance. Every failure reaches the requester as an
// error written by a shard, within the same reply budget as any reply:
// UNKNOWN_SHARE_ID (no pointer), PEER_UNREACHABLE (the owner is gone or did not
// answer within directoryTimeout), DIRECTORY_UNAVAILABLE (Redis cannot answer).
import { Packr, Unpackr } from 'msgpackr';
import type { ErrorCode } from '../protocol/errors.js';
import type { PushForward } from '../wire/messages.js';
import type { RedisDirectory } from './redis-directory.js';

type Message =
  | { k: 'push'; from: string; req: number; f: PushForward }
  | { k: 'result'; req: number; out: Uint8Array };

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
}

/** What the pushes need from the rest of the main thread (io/dispatcher.ts). */
export interface PushRouter {
  /** Hands a push to a shard of this instance (by index). */
  toShard(shard: number, f: PushForward): void;
  /** The shard that holds a shareId's bucket. */
  shardOf(shareId: string): number;
  /** Sends a reply batch of SEND_TO records (wire/frame.ts) from this instance's socket. */
  send(out: Uint8Array): void;
}

export class RemotePushes {
  readonly counters: RemotePushCounters = {
    outcomes: { answered: 0 } as RemotePushCounters['outcomes'],
    served: 0,
    latencyBuckets: new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0),
    latencySumMs: 0,
  };
  private readonly packr = new Packr({ useRecords: false });
  private readonly unpackr = new Unpackr({ useRecords: false });
  private nextReq = 1;
  private readonly pending = new Map<number, { shard: number; f: PushForward; timer: NodeJS.Timeout; startedAt: number }>();

  constructor(
    private readonly directory: RedisDirectory,
    private readonly router: PushRouter,
    private readonly timeoutMs: number,
  ) {}

  /** A push from shard `shard` whose target no shard here holds. */
  push(shard: number, f: PushForward): void {
    if (this.directory.state !== 'up') return this.fail(shard, f, 'DIRECTORY_UNAVAILABLE');
    const req = this.nextReq++;
    const timer = setTimeout(() => this.settle(req, 'PEER_UNREACHABLE'), this.timeoutMs);
    this.pending.set(req, { shard, f, timer, startedAt: performance.now() });
    this.directory.lookup(f.target).then(
      (owner) => {
        if (!this.pending.has(req)) return;
        // No pointer, or one to this very instance: the session is gone (expired, replaced).
        if (owner === null || owner === this.directory.instanceId) return this.settle(req, 'UNKNOWN_SHARE_ID');
        const message: Message = { k: 'push', from: this.directory.instanceId, req, f };
        this.directory.publish(owner, this.pack(message)).then(
          (receivers) => { if (receivers === 0) this.settle(req, 'PEER_UNREACHABLE'); },
          () => this.settle(req, 'DIRECTORY_UNAVAILABLE'),
        );
      },
      () => this.settle(req, 'DIRECTORY_UNAVAILABLE'),
    );
  }

  /** The answer (replies for our requester) a shard here wrote for another instance's push. */
  answer(from: string, req: number, out: Uint8Array): void {
    const message: Message = { k: 'result', req, out };
    this.directory.publish(from, this.pack(message)).catch(() => {}); // the requester times out and says so
  }

  /** A message on this instance's channel. */
  onMessage(raw: Buffer): void {
    let m: Message;
    try { m = this.unpackr.unpack(raw) as Message; } catch { return; }
    if (m.k === 'push') {
      this.counters.served++;
      this.router.toShard(this.router.shardOf(m.f.target), { ...m.f, remote: { from: m.from, req: m.req } });
    } else if (m.k === 'result') {
      const p = this.pending.get(m.req);
      if (p === undefined) return; // too late: the requester was told PEER_UNREACHABLE
      this.done(m.req, p);
      this.counters.outcomes.answered++;
      const ms = performance.now() - p.startedAt;
      const i = LATENCY_BUCKETS_MS.findIndex((b) => ms <= b);
      this.counters.latencyBuckets[i < 0 ? LATENCY_BUCKETS_MS.length : i]!++;
      this.counters.latencySumMs += ms;
      if (m.out.length > 0) this.router.send(m.out);
    }
  }

  private settle(req: number, code: ErrorCode): void {
    const p = this.pending.get(req);
    if (p === undefined) return;
    this.done(req, p);
    this.fail(p.shard, p.f, code);
  }

  private done(req: number, p: { timer: NodeJS.Timeout }): void {
    clearTimeout(p.timer);
    this.pending.delete(req);
  }

  /** The requester's shard tells it, within its budget. */
  private fail(shard: number, f: PushForward, code: ErrorCode): void {
    this.counters.outcomes[code] = (this.counters.outcomes[code] ?? 0) + 1;
    this.router.toShard(shard, { ...f, failed: code });
  }

  private pack(m: Message): Uint8Array {
    // pack() returns a view into msgpackr's own buffer: copy it before it leaves
    return Uint8Array.prototype.slice.call(this.packr.pack(m));
  }

  close(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
  }
}
