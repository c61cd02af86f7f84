// The main thread's batching: the datagram I/O (datagram-io.ts) appends each
// request to its shard's pending batch; this decides when a batch goes to its
// shard, and hands the shard's replies back to the I/O to send. One batch per
// shard is in flight at a time: the shard's reply clocks the next send, so under
// load batches grow instead of thread hops multiplying. It also carries pushes
// between shards, and (with a session directory, src/directory/) hands a shard's
// pointers and lookups to Redis and pushes from other instances to the shards.
import { Packr, Unpackr } from 'msgpackr';
import type { RedisDirectory } from '../directory/redis-directory.js';
import type { PushRouter, RemotePushes } from '../directory/remote-pushes.js';
import { bucketOfShareId, shardOfBucket } from '../routing.js';
import type { Forward, FromShard, ShardExtras } from '../wire/messages.js';
import type { Batch, BatchTarget, DatagramIo } from './datagram-io.js';
import type { ShardLink, ShardLinkHost } from './shard-link.js';

export class BatchCounters {
  batches = 0;
  batchedDatagrams = 0;
}

/** With a session directory: the Redis side and the pushes between instances. */
export interface CrossInstance { directory: RedisDirectory; pushes: RemotePushes }

export class Dispatcher implements BatchTarget, ShardLinkHost, PushRouter {
  readonly counters = new BatchCounters();
  private links: ShardLink[] = [];
  private flushScheduled = false;
  cross: CrossInstance | null = null;
  private readonly packr = new Packr({ useRecords: false });
  private readonly unpackr = new Unpackr({ useRecords: false });
  /** Carries reply batches that answer no request batch (SEND_TO records only). */
  private noBatch: Batch | null = null;

  constructor(
    private readonly io: DatagramIo,
    private readonly maxShardQueue: number,
  ) {}

  newBatch(): Batch { return this.io.newBatch(); }

  attach(links: ShardLink[]): void {
    this.links = links;
    this.io.start(this);
  }

  stopReceiving(): void {
    this.io.stopReceiving();
  }

  batchFor(shard: number, full: boolean): Batch | null {
    const link = this.links[shard]!;
    if (full) {
      // A full batch goes out even while others are in flight, up to maxShardQueue:
      // past that the shard is not keeping up, and the datagram is dropped (counted).
      if (link.queueDepth >= this.maxShardQueue) return null;
      this.flush(link, true);
    }
    return link.batch();
  }

  /** Everything that arrives in this turn of the event loop goes in one batch per shard. */
  received(): void {
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushAll);
    }
  }

  private flush(link: ShardLink, force: boolean): void {
    const count = link.pending?.count ?? 0;
    if (link.flush(force)) {
      this.counters.batches++;
      this.counters.batchedDatagrams += count;
    }
  }

  private readonly flushAll = (): void => {
    this.flushScheduled = false;
    for (const link of this.links) this.flush(link, false);
  };

  /** A shard answered a batch: send it what waited, then send the replies, then queue its forwards. */
  readonly onReply = (link: ShardLink, batch: Batch, m: Extract<FromShard, { t: 'b' }>): void => {
    // The next batch goes first, so the shard works on it while this thread sends.
    this.flush(link, false);
    if (m.out !== null) this.io.sendReplies(batch, Buffer.from(m.out.buffer, m.out.byteOffset, m.out.byteLength));
    if (m.ext !== null) this.onExtras(link, m.ext);
    if (m.fwd !== null) {
      for (let s = 0; s < m.fwd.length; s++) {
        const f = m.fwd[s];
        if (!f) continue;
        const target = this.links[s]!;
        (target.forwards ??= []).push(f);
      }
      this.received();
    }
  };

  /** What a shard produced besides replies: directory pointers, pushes for other instances, their answers. */
  onExtras(link: ShardLink, ext: Uint8Array): void {
    const e = this.unpackr.unpack(ext) as ShardExtras;
    const cross = this.cross;
    if (cross === null) return; // only a shard with a directory produces extras
    if (e.pointers !== undefined) cross.directory.writePointers(e.pointers);
    if (e.lookups !== undefined) for (const f of e.lookups) cross.pushes.push(link.index, f);
    if (e.results !== undefined) for (const r of e.results) cross.pushes.answer(r.from, r.req, r.replies);
    const claims = cross.pushes.claims;
    if (claims !== null) {
      if (e.claims !== undefined) for (const c of e.claims) claims.claim(link.index, c);
      if (e.handovers !== undefined) for (const h of e.handovers) claims.handover(h.from, h.req, h.state);
    }
  }

  toShard(shard: number, f: Forward): void {
    const link = this.links[shard]!;
    // pack() returns a view into msgpackr's own buffer: copy before it crosses threads
    (link.forwards ??= []).push(Uint8Array.prototype.slice.call(this.packr.pack([f])));
    this.received();
  }

  shardOf(shareId: string): number {
    return shardOfBucket(Math.max(0, bucketOfShareId(shareId)), this.links.length);
  }

  send(out: Uint8Array): void {
    this.noBatch ??= this.io.newBatch();
    this.io.sendReplies(this.noBatch, Buffer.from(out.buffer, out.byteOffset, out.byteLength));
  }

  /** Sends whatever is pending now, in flight or not (shutdown). */
  flushNow(): void {
    for (const link of this.links) this.flush(link, true);
  }
}
