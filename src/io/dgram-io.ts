// The dgram path (see datagram-io.ts): Node's own UDP sockets. Per datagram
// received: a string hash and two memcpys into the shard's batch, nothing else (no
// JSON, no object beyond the Buffer and rinfo that dgram itself hands over).
import dgram, { type RemoteInfo, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { errorJson } from '../protocol/errors.js';
import { addressBucket, shardOfBucket } from '../routing.js';
import { REPLY, SEND_TO } from '../wire/frame.js';
import { Batch, BATCH_BYTES, type BatchTarget, type BoundAddress, type DatagramIo, type Endpoint, type IoCounters } from './datagram-io.js';

const TOO_LARGE = Buffer.from(errorJson('DATAGRAM_TOO_LARGE'));
/** Header bytes of a request record besides the address text; see wire/frame.ts. */
const RECORD_OVERHEAD = 1 + 2 + 2 + 1 + 2;

/**
 * dgram reads from the bind on and cannot pause, so datagrams that arrive before
 * start() (while the shards start, or a snapshot is restored) are kept, up to
 * these bounds, and served at start(); past them they are counted
 * (startupDropped). About what the kernel's own buffer holds: the native path does
 * not read before start(), and there they wait in the kernel.
 */
const EARLY_MAX_DATAGRAMS = 4096;
const EARLY_MAX_BYTES = 1 << 20;

interface Early { socket: number; msg: Buffer; rinfo: RemoteInfo }

/** A batch that remembers each request's source as dgram reported it. */
class DgramBatch extends Batch {
  readonly addrs: string[] = [];
  readonly ports: number[] = [];
  readonly sockets: number[] = [];
}

/** Binds config host:port (socket 0), then each extra endpoint; "::" takes IPv4 too, or is 0.0.0.0 where IPv6 is off. */
async function bindSockets(config: Config, extra: readonly Endpoint[], log: Logger, onError: (err: NodeJS.ErrnoException) => void): Promise<Socket[]> {
  const open = (type: 'udp4' | 'udp6', host: string, port: number): Promise<Socket> => new Promise((resolve, reject) => {
    const socket = dgram.createSocket({
      type,
      ipv6Only: false, // "::" also receives IPv4, as IPv4-mapped addresses
      recvBufferSize: config.recvBufferSize,
      sendBufferSize: config.sendBufferSize,
    });
    const failed = (err: Error): void => { socket.close(); reject(err); };
    socket.once('error', failed);
    socket.bind({ port, address: host, exclusive: true }, () => {
      socket.off('error', failed);
      // Socket errors arrive here (failed reads: a failed send goes to its callback);
      // without a listener they would kill the process.
      socket.on('error', onError);
      resolve(socket);
    });
  });
  const bind = async ({ host, port }: Endpoint): Promise<Socket> => {
    if (host !== '::') return open(isIP(host) === 6 ? 'udp6' : 'udp4', host, port);
    try {
      return await open('udp6', '::', port);
    } catch (err) {
      // Only a host without IPv6 (as the native path reads it); a port in use is in use on 0.0.0.0 too.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EAFNOSUPPORT' && code !== 'EPROTONOSUPPORT') throw err;
      log.warn(`IPv6 is unavailable (${code}); listening on 0.0.0.0 (IPv4 only)`);
      return open('udp4', '0.0.0.0', port);
    }
  };
  const sockets: Socket[] = [];
  try {
    for (const e of [{ host: config.host, port: config.port }, ...extra]) sockets.push(await bind(e));
  } catch (err) {
    await Promise.all(sockets.map((s) => new Promise<void>((r) => s.close(() => r()))));
    throw err;
  }
  return sockets;
}

export class DgramIo implements DatagramIo {
  readonly path = 'dgram';
  readonly addresses: BoundAddress[];
  readonly socketTypes: ('udp4' | 'udp6')[];
  private closed = false;
  private readonly c: Omit<IoCounters, 'sendQueueDepth' | 'sendQueueBytes'> = { datagramsIn: 0, bytesIn: 0, datagramsOut: 0, bytesOut: 0, tooLarge: 0, shardBusy: 0, startupDropped: 0, droppedAtStop: 0, sendErrors: {}, recvErrors: {} };
  private target: BatchTarget | null = null;
  /** What arrived before start(); null once started. */
  private early: Early[] | null = [];
  private earlyBytes = 0;
  private readonly shards: number;
  private readonly maxDatagram: number;

  private constructor(private readonly sockets: Socket[], config: Config) {
    this.shards = config.shards;
    this.maxDatagram = config.maxDatagram;
    this.addresses = sockets.map((s) => {
      const a = s.address();
      return { address: a.address, port: a.port, family: a.family as 'IPv4' | 'IPv6' };
    });
    this.socketTypes = this.addresses.map((a) => (a.family === 'IPv6' ? 'udp6' : 'udp4'));
    sockets.forEach((socket, i) => {
      socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => this.onMessage(i, msg, rinfo));
    });
  }

  static async open(config: Config, log: Logger, extra: readonly Endpoint[] = []): Promise<DgramIo> {
    let io: DgramIo | null = null;
    const sockets = await bindSockets(config, extra, log, (err) => {
      log.warn({ err }, 'udp socket error');
      const c = io?.c;
      if (c !== undefined) { const code = err.code ?? 'other'; c.recvErrors[code] = (c.recvErrors[code] ?? 0) + 1; }
    });
    return (io = new DgramIo(sockets, config));
  }

  newBatch(): Batch { return new DgramBatch(); }

  start(target: BatchTarget): void {
    this.target = target;
    const early = this.early;
    this.early = null;
    this.earlyBytes = 0;
    if (early !== null) for (const e of early) this.receive(e.socket, e.msg, e.rinfo, target);
  }

  stopReceiving(): void {
    this.target = null;
    this.early = null;
  }

  private onMessage(socketIndex: number, msg: Buffer, rinfo: RemoteInfo): void {
    const c = this.c;
    c.datagramsIn++;
    c.bytesIn += msg.length;
    const target = this.target;
    if (target !== null) {
      this.receive(socketIndex, msg, rinfo, target);
    } else if (this.early !== null) {
      if (this.early.length < EARLY_MAX_DATAGRAMS && this.earlyBytes + msg.length <= EARLY_MAX_BYTES) {
        this.early.push({ socket: socketIndex, msg, rinfo });
        this.earlyBytes += msg.length;
      } else {
        c.startupDropped++;
      }
    } else {
      c.droppedAtStop++; // stopped: dgram goes on reading until close()
    }
  }

  private receive(socketIndex: number, msg: Buffer, rinfo: RemoteInfo, target: BatchTarget): void {
    const c = this.c;
    const address = rinfo.address;
    const port = rinfo.port;
    const need = RECORD_OVERHEAD + address.length + msg.length;
    if (msg.length > this.maxDatagram || need > BATCH_BYTES) {
      // The error is smaller than what triggered it, so answering cannot amplify.
      c.tooLarge++;
      this.send(socketIndex, TOO_LARGE, 0, TOO_LARGE.length, port, address);
      return;
    }
    const bucket = addressBucket(address);
    const shard = shardOfBucket(bucket, this.shards);
    let b = target.batchFor(shard, false) as DgramBatch | null;
    if (b !== null && (b.len + need > b.buf.length || b.count === 0xffff)) b = target.batchFor(shard, true) as DgramBatch | null;
    if (b === null) { c.shardBusy++; return; }
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
    target.received();
  }

  sendReplies(batch: Batch, out: Buffer): void {
    const b = batch as DgramBatch;
    const end = out.length;
    let o = 0;
    // A record that runs past the batch's end (a header, an address or a payload) is
    // malformed, and so is all after it: counted, never read past the end (as udp.c does).
    while (o < end) {
      if (out[o] === REPLY) {
        if (o + 5 > end) { this.malformed(); return; }
        const i = (out[o + 1]! << 8) | out[o + 2]!;
        const len = (out[o + 3]! << 8) | out[o + 4]!;
        if (o + 5 + len > end) { this.malformed(); return; }
        // only a request of this batch: past count, the arrays still hold an earlier batch's sources
        if (i < b.count) this.send(b.sockets[i]!, out, o + 5, len, b.ports[i]!, b.addrs[i]!);
        else this.malformed();
        o += 5 + len;
      } else if (out[o] === SEND_TO) { // a third party (income) or a requester in another shard's batch
        if (o + 5 > end) { this.malformed(); return; }
        const socket = out[o + 1]!;
        const port = (out[o + 2]! << 8) | out[o + 3]!;
        const alen = out[o + 4]!;
        const at = o + 5 + alen;
        if (at + 2 > end) { this.malformed(); return; }
        const len = (out[at]! << 8) | out[at + 1]!;
        if (at + 2 + len > end) { this.malformed(); return; }
        if (socket < this.sockets.length) this.send(socket, out, at + 2, len, port, out.toString('latin1', o + 5, at));
        else this.malformed(); // no such socket
        o = at + 2 + len;
      } else {
        this.malformed(); // no such kind: nothing after it can be framed
        return;
      }
    }
  }

  private malformed(): void {
    this.c.sendErrors.malformed = (this.c.sendErrors.malformed ?? 0) + 1;
  }

  private send(socketIndex: number, buf: Buffer, offset: number, len: number, port: number, address: string): void {
    // A callback is the only way Node reports a failed send (without one it is
    // dropped silently); one shared function, so no closure per datagram.
    // What dgram refuses before sending (port 0, say) throws instead: counted the same way.
    try { this.sockets[socketIndex]!.send(buf, offset, len, port, address, this.onSent); } catch (err) { this.onSent(err as Error, 0); }
  }

  private readonly onSent = (err: Error | null, bytes: number): void => {
    const c = this.c;
    if (err === null) {
      c.datagramsOut++;
      c.bytesOut += bytes;
      return;
    }
    const code = (err as NodeJS.ErrnoException).code ?? 'other';
    c.sendErrors[code] = (c.sendErrors[code] ?? 0) + 1;
  };

  counters(): IoCounters {
    let depth = 0;
    let bytes = 0;
    if (!this.closed) {
      for (const s of this.sockets) {
        depth += s.getSendQueueCount();
        bytes += s.getSendQueueSize();
      }
    }
    return { ...this.c, sendErrors: { ...this.c.sendErrors }, recvErrors: { ...this.c.recvErrors }, sendQueueDepth: depth, sendQueueBytes: bytes };
  }

  bufferSizes(): { recv: number; send: number } {
    return { recv: this.sockets[0]!.getRecvBufferSize(), send: this.sockets[0]!.getSendBufferSize() };
  }

  isBound(): boolean {
    try { for (const s of this.sockets) s.address(); return true; } catch { return false; } // address() throws once closed
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.sockets.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}
