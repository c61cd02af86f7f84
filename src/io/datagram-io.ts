// The main thread's datagram I/O, whichever path moves the bytes:
//   native  native-io.ts: the sobani_udp addon (recvmmsg/sendmmsg; JS is called
//           once per receive pass and once per reply batch, never per datagram)
//   dgram   dgram-io.ts: Node's dgram (one JS callback per datagram received, one
//           send call per datagram sent); the fallback where the addon is missing
// Both append request records (wire/frame.ts) to the shard batches the dispatcher
// hands out, and send a shard's reply batch to the sources of the batch it answers.
import { MAX_REQUEST_HEADER, transferableBuffer } from '../wire/frame.js';

export type IoPath = 'native' | 'dgram';

/** Bytes of one shard batch buffer. */
export const BATCH_BYTES = 64 * 1024;

/**
 * The largest request whose record always fits an empty batch, whatever its source
 * address (65,464 bytes): the cap of config maxDatagram. A record that could not fit
 * even an empty batch is answered DATAGRAM_TOO_LARGE on both paths.
 */
export const MAX_DATAGRAM = BATCH_BYTES - MAX_REQUEST_HEADER;

/**
 * Datagrams on their way to a shard. Each path subclasses it to remember where
 * request #i came from, so that the shard's REPLY records can be sent there.
 */
export abstract class Batch {
  buf: Buffer = transferableBuffer(BATCH_BYTES);
  len = 0;
  count = 0;
}

export interface IoCounters {
  datagramsIn: number;
  bytesIn: number;
  datagramsOut: number;
  bytesOut: number;
  /** Datagrams over maxDatagram (or whose record cannot fit an empty batch), answered DATAGRAM_TOO_LARGE by the main thread. */
  tooLarge: number;
  /** Datagrams dropped because their shard was not keeping up (maxShardQueue). */
  shardBusy: number;
  /**
   * Datagrams that arrived before start() and were dropped: the dgram path keeps a
   * bounded list of them to serve at start() (the native path does not read the
   * socket before start(), so they wait in the kernel's buffer and this stays 0).
   */
  startupDropped: number;
  /**
   * Datagrams read from the socket after stopReceiving() (native: what a receive
   * pass had taken when a callback stopped or closed the socket; dgram: anything
   * read until close()), not served.
   */
  droppedAtStop: number;
  /**
   * Datagrams not sent, by reason: refused by the kernel (EHOSTUNREACH, EACCES, ...),
   * malformed reply records, and on the native path queueFull / closed (its send queue).
   */
  sendErrors: Record<string, number>;
  /** Reads from the socket that failed, by reason (errno name, e.g. ENOMEM); receiving goes on. */
  recvErrors: Record<string, number>;
  /**
   * Datagrams waiting to be sent (the socket's send buffer was full), and their
   * payload bytes: a gauge. Native: a bounded queue (4096 datagrams, 2 MiB; past it
   * sendErrors.queueFull); dgram: libuv's own queue, unbounded.
   */
  sendQueueDepth: number;
  sendQueueBytes: number;
}

export interface BoundAddress { address: string; port: number; family: 'IPv4' | 'IPv6' }

/** An address to bind besides config host:port (e.g. the other addresses a STUN server answers from). */
export interface Endpoint { host: string; port: number }

/** The dispatcher's side of the I/O: where received datagrams go. */
export interface BatchTarget {
  /**
   * The batch to append shard `shard`'s next datagram to. `full`: the one handed
   * out before has no room left: ship it first. null: the shard is not keeping up,
   * drop (and count) the datagram.
   */
  batchFor(shard: number, full: boolean): Batch | null;
  /** Datagrams were appended: ship what can go. */
  received(): void;
}

export interface DatagramIo {
  readonly path: IoPath;
  /**
   * Every bound socket by index, the "socket" of request and SEND_TO records: 0 is
   * config host:port, then the extra endpoints in order. A request arrives with the
   * index of its socket, its REPLY leaves from that socket, a SEND_TO from the one
   * it names.
   */
  readonly addresses: readonly BoundAddress[];
  /** Socket index (as in request records) -> the family it sends with. */
  readonly socketTypes: readonly ('udp4' | 'udp6')[];
  newBatch(): Batch;
  /** Starts receiving into `target`'s batches; datagrams that arrived since the bind are served too. */
  start(target: BatchTarget): void;
  stopReceiving(): void;
  /** Sends a shard's reply batch (wire/frame.ts) for `batch`. Failures are counted, never thrown. */
  sendReplies(batch: Batch, out: Buffer): void;
  counters(): IoCounters;
  /** Socket buffer sizes the kernel granted. */
  bufferSizes(): { recv: number; send: number };
  isBound(): boolean;
  close(): Promise<void>;
}
