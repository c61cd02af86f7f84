// The main thread's batching: the datagram I/O (datagram-io.ts) appends each
// request to its shard's pending batch; this decides when a batch goes to its
// shard, and hands the shard's replies back to the I/O to send. One batch per
// shard is in flight at a time: the shard's reply clocks the next send, so under
// load batches grow instead of thread hops multiplying.
import type { FromShard } from '../wire/messages.js';
import type { Batch, BatchTarget, DatagramIo } from './datagram-io.js';
import type { ShardLink } from './shard-link.js';

export class BatchCounters {
  batches = 0;
  batchedDatagrams = 0;
}

export class Dispatcher implements BatchTarget {
  readonly counters = new BatchCounters();
  private links: ShardLink[] = [];
  private flushScheduled = false;

  constructor(
    private readonly io: DatagramIo,
    private readonly maxShardQueue: number,
  ) {}

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

  /** Sends whatever is pending now, in flight or not (shutdown). */
  flushNow(): void {
    for (const link of this.links) this.flush(link, true);
  }
}
