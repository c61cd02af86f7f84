// The main thread's end of one shard: its piscina pool (one thread), the
// MessagePort the shard serves, the batch being filled, and the batches in
// flight. A shard that dies is replaced here with an empty one.
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { Logger } from 'pino';
import type { ServeTask } from '../shard/worker.js';
import type { ShardOptions } from '../shard/options.js';
import { transferableBuffer } from '../wire/frame.js';
import type { ControlOp, FromShard, ToShard } from '../wire/messages.js';
import { BATCH_BYTES, type Batch } from './datagram-io.js';

/** Batches sent to a shard and not yet answered, before the next one waits for a reply. */
const MAX_IN_FLIGHT = 1;

/** What a link needs from the main thread (io/dispatcher.ts). */
export interface ShardLinkHost {
  newBatch(): Batch;
  /** The shard answered `batch`. */
  onReply(link: ShardLink, batch: Batch, msg: Extract<FromShard, { t: 'b' }>): void;
  /** The shard has extras (wire/messages.ts ShardExtras, packed) outside a batch reply. */
  onExtras(link: ShardLink, ext: Uint8Array): void;
}

// Under tsx the sources are .ts, and piscina loads its worker from inside
// node_modules where tsx's .js -> .ts mapping does not apply: name the real file.
const WORKER_FILE = new URL(import.meta.url.endsWith('.ts') ? '../shard/worker.ts' : '../shard/worker.js', import.meta.url).href;

export class ShardLink {
  pending: Batch | null = null;
  /** Forwarded pushes from other shards, sent with the next batch. */
  forwards: Uint8Array[] | null = null;
  private readonly inflight: Batch[] = [];
  private readonly spare: Batch[] = [];
  private pool!: Piscina;
  private port!: MessagePort;
  private task: Promise<unknown> | null = null;
  private closing = false;
  private nextControlId = 1;
  private readonly controls = new Map<number, (result: unknown) => void>();
  /** Live sessions as of the last batch reply. */
  peers = 0;
  restarts = 0;
  lostPeers = 0;

  constructor(
    readonly index: number,
    private readonly options: ShardOptions,
    private readonly log: Logger,
    private readonly host: ShardLinkHost,
  ) {
    this.start();
  }

  get queueDepth(): number { return this.inflight.length; }

  private start(): void {
    this.pool = new Piscina({
      filename: WORKER_FILE,
      minThreads: 1,
      maxThreads: 1,
      idleTimeout: Infinity,
      // 'sync' parks idle workers in Atomics.wait, which would stop the expiry timer
      atomics: 'disabled',
      concurrentTasksPerWorker: 1,
    });
    this.pool.on('error', (err) => this.log.error({ shard: this.index, err }, 'shard pool error'));
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    port1.on('message', (m: FromShard) => this.onMessage(m));
    const task: ServeTask = { port: port2, options: this.options };
    const running = this.pool.run(task, { transferList: [port2] });
    this.task = running;
    running.then(
      () => { if (!this.closing) this.crashed(new Error('shard task ended unexpectedly')); },
      (err: unknown) => { if (!this.closing) this.crashed(err); },
    );
  }

  private crashed(err: unknown): void {
    this.lostPeers += this.peers;
    this.log.error({ shard: this.index, err, lostPeers: this.peers }, 'SHARD CRASHED: its sessions are lost; starting an empty replacement');
    this.peers = 0;
    this.restarts++;
    // Batches in flight died with it; their datagrams go unanswered (clients retry).
    for (const b of this.inflight.splice(0)) this.recycle(b);
    for (const resolve of this.controls.values()) resolve(null);
    this.controls.clear();
    this.port.close();
    void this.pool.destroy().catch(() => {});
    this.start();
  }

  private onMessage(m: FromShard): void {
    if (m.t === 'b') {
      const batch = this.inflight.shift();
      if (batch === undefined) return; // a reply from before a restart
      this.peers = m.peers;
      if (m.buf !== null) batch.buf = Buffer.from(m.buf);
      this.host.onReply(this, batch, m); // sends the replies, then what accumulated meanwhile
      this.recycle(batch);
    } else if (m.t === 'x') {
      this.host.onExtras(this, m.ext);
    } else if (m.t === 'c') {
      const resolve = this.controls.get(m.id);
      this.controls.delete(m.id);
      resolve?.(m.result);
    } else {
      this.log[m.level]({ shard: this.index, err: m.err }, m.msg);
    }
  }

  /** The batch to append to, started on demand. */
  batch(): Batch {
    if (this.pending !== null) return this.pending;
    const b = this.spare.pop() ?? this.host.newBatch();
    this.pending = b;
    return b;
  }

  private recycle(b: Batch): void {
    b.len = 0;
    b.count = 0;
    if (b.buf.buffer.byteLength === 0) b.buf = transferableBuffer(BATCH_BYTES); // detached: lost with a crash
    this.spare.push(b);
  }

  /**
   * Sends the pending batch and any forwards; every send gets exactly one reply.
   * While a batch is in flight the next one keeps filling instead (unless `force`,
   * for a full buffer): the shard's reply clocks the next send, so under load
   * batches grow and thread wake-ups per datagram fall, and at light load nothing
   * waits.
   */
  flush(force = false): boolean {
    const b = this.pending;
    const fwd = this.forwards;
    if (b === null && fwd === null) return false;
    if (!force && this.inflight.length >= MAX_IN_FLIGHT) return false;
    const batch = b ?? this.spare.pop() ?? this.host.newBatch();
    this.pending = null;
    this.forwards = null;
    this.inflight.push(batch);
    const hasData = batch.len > 0;
    const msg: ToShard = { t: 'b', buf: hasData ? batch.buf.buffer as ArrayBuffer : null, len: batch.len, fwd };
    this.port.postMessage(msg, hasData ? [batch.buf.buffer as ArrayBuffer] : []);
    return true;
  }

  /**
   * One control request (see wire/messages.ts); resolves with the shard's answer, or
   * null if the shard crashed or timeoutMs (when > 0) passed first.
   */
  control(op: ControlOp, arg?: unknown, timeoutMs = 0, transfer: ArrayBuffer[] = []): Promise<unknown> {
    const id = this.nextControlId++;
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | null = null;
      this.controls.set(id, (r) => { if (timer) clearTimeout(timer); resolve(r); });
      if (timeoutMs > 0) {
        timer = setTimeout(() => { this.controls.delete(id); resolve(null); }, timeoutMs);
        timer.unref();
      }
      this.port.postMessage({ t: 'c', id, op, arg } satisfies ToShard, transfer);
    });
  }

  /** Waits (up to deadline) for every batch in flight to come back. */
  async drain(deadline: number): Promise<void> {
    this.flush(true);
    while (this.inflight.length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  }

  async close(): Promise<void> {
    this.closing = true;
    this.port.close(); // the shard's serve() resolves when its end closes
    await Promise.race([this.task, new Promise((r) => setTimeout(r, 2000).unref())]).catch(() => {});
    await this.pool.destroy().catch(() => {});
  }

  /** Test/ops hook: kills the shard's thread as a crash would. */
  async terminateThread(): Promise<void> {
    const thread = this.pool.threads[0];
    if (thread) await thread.terminate();
  }
}
