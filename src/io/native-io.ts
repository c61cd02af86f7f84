// The native path (see datagram-io.ts): the sobani_udp addon (src/io/native/udp.c)
// owns the UDP sockets (one per bound address) on the main thread's event loop. It
// drains a socket with recvmmsg, writes each datagram straight into its shard's
// batch (the routing bucket computed in C) and calls JS once per receive pass; a
// shard's whole reply batch goes out in one sendmmsg per socket it leaves from.
// The addon is found the way node-gyp-build finds any: build/Release/ (compiled at
// install) first, then the prebuild the npm package ships
// (prebuilds/<platform>-<arch>/); where neither fits, loadNativeUdp() says why and
// the tracker uses dgram-io.ts.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config.js';
import { errorJson } from '../protocol/errors.js';
import { Batch, type BatchTarget, type BoundAddress, type DatagramIo, type Endpoint, type IoCounters } from './datagram-io.js';

/** Sockets one DatagramIo may own (udp.c MAX_ENDPOINTS): config host:port and 3 more, as a STUN server needs. */
export const MAX_ENDPOINTS = 4;

/** The addon's API (src/io/native/udp.c); test/native-socket.test.ts tests it against these types. */
export interface UdpSocketStats extends Omit<IoCounters, 'startupDropped'> {
  receivePasses: number;
  recvCalls: number;
  sendCalls: number;
  /** Send syscalls the kernel refused for lack of buffer (EAGAIN/ENOBUFS): what was left went to the send queue. */
  sendBlockedCalls: number;
  /** Datagrams that went through the send queue. */
  sendQueued: number;
  recvBufferSize?: number;
  sendBufferSize?: number;
}

export interface UdpSocket {
  /** The bound address of endpoint i (default 0). */
  address(i?: number): BoundAddress;
  /** Sends a reply batch; `count`: the requests in the batch `peers` belongs to (a REPLY must name one of them). */
  sendReplies(out: Uint8Array, peers: ArrayBuffer | null, count: number): number;
  stats(): UdpSocketStats;
  /** Nothing is read from the socket before this: datagrams wait in the kernel's buffer. */
  startReceiving(): void;
  stopReceiving(): void;
  close(): void;
}

export interface NativeUdp {
  /** Bytes of one entry of a batch's peers table (a source sockaddr). */
  PEER_BYTES: number;
  /** routing.ts addressBucket as the receive path computes it; 8-bit text only (a TypeError otherwise). */
  addressBucket(address: string): number;
  /** Test-only: the address text and bucket the receive path makes from a sockaddr_in / sockaddr_in6's bytes. */
  formatSockaddr(sockaddr: Uint8Array): [string, number] | null;
  UdpSocket: new (options: UdpSocketOptions) => UdpSocket;
}

export interface UdpSocketOptions {
  /** The addresses to bind, socket 0 first (at most MAX_ENDPOINTS); or host and port for one. */
  endpoints?: Endpoint[];
  host?: string; port?: number;
  recvBufferSize: number; sendBufferSize: number; maxDatagram: number;
  tooLargeReply: Buffer; shards: number; state: Int32Array;
  onBatch: (shard: number, full: boolean) => [ArrayBuffer, ArrayBuffer] | null;
  onReceived: () => void;
}

// The package root (package.json, build/, prebuilds/): two levels above src/io/ under
// tsx, three above dist/src/io/, wherever the package is installed.
const ROOT = ['../../', '../../../']
  .map((rel) => fileURLToPath(new URL(rel, import.meta.url)))
  .find((dir) => existsSync(join(dir, 'package.json')));

/** node-gyp-build (no types of its own): the addon file it would load from a package root. */
interface NodeGypBuild { path(dir: string): string }

/** The addon, or the reason it cannot be used. */
export function loadNativeUdp(): NativeUdp | Error {
  if (process.platform !== 'linux') return new Error(`the native UDP path needs Linux (recvmmsg/sendmmsg), not ${process.platform}`);
  if (ROOT === undefined) return new Error(`no package.json above ${fileURLToPath(import.meta.url)}, so no addon to look for`);
  const require = createRequire(import.meta.url);
  let gypBuild: NodeGypBuild;
  try {
    gypBuild = require('node-gyp-build') as NodeGypBuild;
  } catch (err) {
    return new Error(`node-gyp-build, which finds the addon, does not load: ${(err as Error).message.split('\n')[0]}`);
  }
  let file: string;
  try {
    file = gypBuild.path(ROOT);
  } catch {
    return new Error(
      `the sobani_udp addon is not there for ${process.platform}-${process.arch}: no prebuild in ${join(ROOT, 'prebuilds')} fits, ` +
        'and none was compiled into build/Release/ (the install compiles it when python3, make and a C compiler are there; see build/native-build.log)',
    );
  }
  try {
    const addon = require(file) as NativeUdp;
    // node-gyp-build takes any .node file in build/Release/: a stale one from another target must not pass for this one
    if (typeof addon.UdpSocket !== 'function') return new Error(`${file} is not the sobani_udp addon (it has no UdpSocket); rebuild with \`yarn install\``);
    return addon;
  } catch (err) {
    return new Error(`${file} does not load: ${(err as Error).message}`);
  }
}

/** Records per batch: a peers entry for each. Smaller records than 32 bytes on average just ship a batch early. */
const PEERS_PER_BATCH = 2048;

/**
 * A batch whose request sources the addon keeps as sockaddrs, one PEER_BYTES entry
 * each (with the index of the socket the request came in on, for its REPLY).
 */
class NativeBatch extends Batch {
  constructor(readonly peers: ArrayBuffer) { super(); }
}

export class NativeIo implements DatagramIo {
  readonly path = 'native';
  readonly addresses: BoundAddress[];
  readonly socketTypes: ('udp4' | 'udp6')[];
  private readonly socket: UdpSocket;
  /** [len, count] of each shard's batch while the addon appends to it; see onBatch. */
  private readonly state: Int32Array;
  private readonly pending: (NativeBatch | null)[];
  private target: BatchTarget | null = null;

  constructor(private readonly addon: NativeUdp, config: Config, extra: readonly Endpoint[] = []) {
    this.state = new Int32Array(config.shards * 2);
    this.pending = new Array<NativeBatch | null>(config.shards).fill(null);
    this.socket = new addon.UdpSocket({
      endpoints: [{ host: config.host, port: config.port }, ...extra],
      recvBufferSize: config.recvBufferSize,
      sendBufferSize: config.sendBufferSize,
      maxDatagram: config.maxDatagram,
      tooLargeReply: Buffer.from(errorJson('DATAGRAM_TOO_LARGE')),
      shards: config.shards,
      state: this.state,
      onBatch: this.onBatch,
      onReceived: this.onReceived,
    });
    this.addresses = Array.from({ length: 1 + extra.length }, (_, i) => this.socket.address(i));
    this.socketTypes = this.addresses.map((a) => (a.family === 'IPv6' ? 'udp6' : 'udp4'));
  }

  newBatch(): Batch { return new NativeBatch(new ArrayBuffer(PEERS_PER_BATCH * this.addon.PEER_BYTES)); }

  start(target: BatchTarget): void {
    this.target = target;
    this.socket.startReceiving();
  }

  /**
   * The addon asks for shard s's batch at its first datagram for s in a receive
   * pass, and again when that batch is full. The batch's len/count travel in
   * `state` while the addon appends; they are copied back before anyone else
   * looks at the batch (here, and at the end of the pass).
   */
  private readonly onBatch = (shard: number, full: boolean): [ArrayBuffer, ArrayBuffer] | null => {
    if (this.target === null) return null;
    this.syncPending(shard);
    const b = this.target.batchFor(shard, full) as NativeBatch | null;
    this.pending[shard] = b;
    if (b === null) return null;
    this.state[2 * shard] = b.len;
    this.state[2 * shard + 1] = b.count;
    return [b.buf.buffer as ArrayBuffer, b.peers];
  };

  private readonly onReceived = (): void => {
    this.syncAll();
    this.target?.received();
  };

  private syncAll(): void {
    for (let s = 0; s < this.pending.length; s++) this.syncPending(s);
  }

  private syncPending(shard: number): void {
    const b = this.pending[shard];
    if (b === null || b === undefined) return;
    b.len = this.state[2 * shard]!;
    b.count = this.state[2 * shard + 1]!;
    this.pending[shard] = null;
  }

  /**
   * Called by a callback (in a receive pass), the addon ends the pass at once and
   * writes the batches' final len/count to `state`; they are taken back here, as
   * onReceived would have.
   */
  stopReceiving(): void {
    this.target = null;
    this.socket.stopReceiving();
    this.syncAll();
  }

  sendReplies(batch: Batch, out: Buffer): void {
    this.socket.sendReplies(out, (batch as NativeBatch).peers, batch.count);
  }

  counters(): IoCounters & Omit<UdpSocketStats, 'recvBufferSize' | 'sendBufferSize'> {
    const { recvBufferSize: _r, sendBufferSize: _s, ...counters } = this.socket.stats();
    return { ...counters, startupDropped: 0 }; // before start() datagrams wait in the kernel's buffer
  }

  bufferSizes(): { recv: number; send: number } {
    const s = this.socket.stats();
    return { recv: s.recvBufferSize ?? 0, send: s.sendBufferSize ?? 0 };
  }

  isBound(): boolean {
    try { this.socket.address(); return true; } catch { return false; } // address() throws once closed
  }

  async close(): Promise<void> {
    this.target = null;
    this.socket.close();
    this.syncAll();
  }
}
