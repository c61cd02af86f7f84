// The main thread's hot path: receive a datagram, route it by its source IP
// address to a shard, append it to that shard's batch; send what shards answer.
// Per datagram this does a string hash and two memcpys, nothing else: no JSON,
// no object beyond the Buffer and rinfo that dgram itself hands us.
import type { Socket, RemoteInfo } from 'node:dgram';
import { errorJson } from '../protocol/errors.js';
import { addressBucket, shardOfBucket } from '../routing.js';
import { REPLY } from '../wire/frame.js';
import type { FromShard } from '../wire/messages.js';
import type { Batch, ShardLink } from './shard-link.js';

const TOO_LARGE = Buffer.from(errorJson('DATAGRAM_TOO_LARGE'));
/** Header bytes of a request record besides the address text; see wire/frame.ts. */
const RECORD_OVERHEAD = 1 + 2 + 2 + 1 + 2;

export class MainCounters {
  datagramsIn = 0;
  bytesIn = 0;
  datagramsOut = 0;
  bytesOut = 0;
  tooLarge = 0;
  shardBusy = 0;
  batches = 0;
  batchedDatagrams = 0;
}

export class Dispatcher {
  readonly counters = new MainCounters();
  private links: ShardLink[] = [];
  private flushScheduled = false;
  private receiving = true;

  constructor(
    private readonly sockets: readonly Socket[],
    private readonly maxDatagram: number,
    private readonly maxShardQueue: number,
  ) {}

  attach(links: ShardLink[]): void {
    this.links = links;
    this.sockets.forEach((socket, i) => {
      socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => this.receive(i, msg, rinfo));
    });
  }

  stopReceiving(): void {
    this.receiving = false;
    for (const s of this.sockets) s.removeAllListeners('message');
  }

  private receive(socketIndex: number, msg: Buffer, rinfo: RemoteInfo): void {
    const c = this.counters;
    c.datagramsIn++;
    c.bytesIn += msg.length;
    if (!this.receiving) return;
    const address = rinfo.address;
    const port = rinfo.port;
    if (msg.length > this.maxDatagram) {
      // The error is smaller than what triggered it, so answering cannot amplify.
      c.tooLarge++;
      this.send(socketIndex, TOO_LARGE, 0, TOO_LARGE.length, port, address);
      return;
    }
    const bucket = addressBucket(address);
    const link = this.links[shardOfBucket(bucket, this.links.length)]!;

    let b = link.batch();
    const need = RECORD_OVERHEAD + address.length + msg.length;
    if (b.len + need > b.buf.length || b.count === 0xffff) {
      // A full batch goes out even while others are in flight, up to maxShardQueue:
      // past that the shard is not keeping up, and the datagram is dropped (counted).
      if (link.queueDepth >= this.maxShardQueue) { c.shardBusy++; return; }
      this.flush(link, true);
      b = link.batch();
    }
    const buf = b.buf;
    let o = b.len;
    buf[o] = socketIndex;
    buf[o + 1] = port >>> 8; buf[o + 2] = port & 0xff;
    buf[o + 3] = bucket >>> 8; buf[o + 4] = bucket & 0xff;
    buf[o + 5] = address.length;
    o += 6 + buf.write(address, o + 6, 'latin1');
    buf[o] = msg.length >>> 8; buf[o + 1] = msg.length & 0xff;
    o += 2 + msg.copy(buf, o + 2);
    b.len = o;
    b.addrs[b.count] = address;
    b.ports[b.count] = port;
    b.sockets[b.count] = socketIndex;
    b.count++;
    // Everything that arrives in this turn of the event loop goes in one batch.
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

  /** A shard answered a batch: send its replies, queue its forwards, send what waited. */
  readonly onReply = (link: ShardLink, batch: Batch, m: Extract<FromShard, { t: 'b' }>): void => {
    if (m.out !== null) this.sendReplies(batch, Buffer.from(m.out));
    this.flush(link, false);
    if (m.fwd !== null) {
      for (let s = 0; s < m.fwd.length; s++) {
        const f = m.fwd[s];
        if (!f) continue;
        const target = this.links[s]!;
        (target.forwards ??= []).push(f);
      }
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(this.flushAll);
      }
    }
  };

  private sendReplies(batch: Batch, out: Buffer): void {
    let o = 0;
    while (o < out.length) {
      if (out[o] === REPLY) {
        const i = (out[o + 1]! << 8) | out[o + 2]!;
        const len = (out[o + 3]! << 8) | out[o + 4]!;
        this.send(batch.sockets[i]!, out, o + 5, len, batch.ports[i]!, batch.addrs[i]!);
        o += 5 + len;
      } else { // SEND_TO: a third party (income) or a requester in another shard's batch
        const socket = out[o + 1]!;
        const port = (out[o + 2]! << 8) | out[o + 3]!;
        const alen = out[o + 4]!;
        const address = out.toString('latin1', o + 5, o + 5 + alen);
        const at = o + 5 + alen;
        const len = (out[at]! << 8) | out[at + 1]!;
        this.send(socket, out, at + 2, len, port, address);
        o = at + 2 + len;
      }
    }
  }

  private send(socketIndex: number, buf: Buffer, offset: number, len: number, port: number, address: string): void {
    this.counters.datagramsOut++;
    this.counters.bytesOut += len;
    // No callback, so no completion request per datagram. Node then drops a failed
    // send silently (only a callback would see it), so failed sends are not counted.
    this.sockets[socketIndex]!.send(buf, offset, len, port, address);
  }

  /** Sends whatever is pending now, in flight or not (shutdown). */
  flushNow(): void {
    for (const link of this.links) this.flush(link, true);
  }
}
