// A wire-level UDP peer for tests: sends raw bytes or JSON and awaits datagrams.
// Protocol tests use it (not the client library) because they check exact bytes
// and send what no well-behaved client would.
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { startTracker, type Tracker } from '../../src/tracker.js';
import type { Config, IoChoice } from '../../src/config.js';
import { addressBucket, shardOfBucket } from '../../src/routing.js';

/**
 * The datagram I/O path the suite runs on: `yarn test` runs the whole suite once
 * with SOBANI_IO=native and once with SOBANI_IO=dgram (auto when unset).
 */
export const TEST_IO = (process.env.SOBANI_IO ?? 'auto') as IoChoice;

/**
 * For a test that gains nothing from a second pass (it does not exercise the
 * tracker's datagram I/O path, or covers it elsewhere): why it skips in the dgram
 * pass, or false. `why` says what covers the dgram path instead, if anything.
 */
export function onceInNativePass(why: string): string | false {
  return TEST_IO === 'dgram' ? `SOBANI_IO=dgram: runs once, in the native pass (${why})` : false;
}

/** 48 bytes: 3x its 76 wire bytes covers announceReceived + announced (175 wire bytes with 12-character ids). */
export const PADDED_ANNOUNCE = JSON.stringify({ action: 'announce', pad: 'x'.repeat(18) });

/** IPv4 (20) + UDP (8) header bytes: the tracker's reply budget counts bytes on the wire. */
export const IPV4_UDP_HEADERS = 28;

/** Bytes on the wire of IPv4 datagrams with these payloads. */
export function wireBytes(...payloads: (string | Buffer | number)[]): number {
  return payloads.reduce<number>((n, p) => n + IPV4_UDP_HEADERS + (typeof p === 'number' ? p : Buffer.byteLength(p)), 0);
}

export interface Reply { action: string; data?: Record<string, unknown>; raw: string; from: string }

/**
 * How long a test waits for a datagram it expects. It only bounds how long a failing
 * test takes: nothing is asserted about speed, so it is generous, for a loaded machine.
 */
export const EXPECT_MS = 10_000;

/** A STUN Binding request with this transaction id (what settle() sends). */
function bindingRequest(txid: Buffer): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt16BE(0x0001, 0); // Binding request, no attributes
  b.writeUInt32BE(0x2112a442, 4);
  txid.copy(b, 8);
  return b;
}

export class WirePeer {
  readonly socket: dgram.Socket;
  private readonly inbox: Reply[] = [];
  private waiters: (() => void)[] = [];
  /** The transaction id of the settle() barrier in flight, and its resolver. */
  private barrier: { txid: Buffer; done: () => void } | null = null;

  private constructor(socket: dgram.Socket, private target: { address: string; port: number }) {
    this.socket = socket;
    socket.on('message', (msg, rinfo) => {
      const b = this.barrier;
      if (b !== null && msg.length >= 20 && msg.readUInt16BE(0) === 0x0101 && msg.subarray(8, 20).equals(b.txid)) {
        this.barrier = null;
        b.done();
        return;
      }
      const raw = msg.toString('utf8');
      let parsed: { action: string; data?: Record<string, unknown> };
      try { parsed = JSON.parse(raw); } catch { parsed = { action: '<not json>' }; }
      this.inbox.push({ ...parsed, raw, from: `${rinfo.address}:${rinfo.port}` });
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static async open(target: { address: string; port: number }, bindAddress = '127.0.0.1', bindPort = 0): Promise<WirePeer> {
    const socket = dgram.createSocket(bindAddress.includes(':') ? 'udp6' : 'udp4');
    await new Promise<void>((resolve, reject) => {
      // a bind that fails closes the socket, or it would keep the test file's process alive
      socket.once('error', (err) => { socket.close(); reject(err); });
      socket.bind(bindPort, bindAddress, () => { socket.removeAllListeners('error'); resolve(); });
    });
    socket.on('error', () => {}); // e.g. ICMP port unreachable after the tracker stops
    socket.unref(); // a test that fails before close() must not keep its file's process alive
    return new WirePeer(socket, target);
  }

  get address(): string {
    const a = this.socket.address();
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  get port(): number { return this.socket.address().port; }

  /** The tracker this peer talks to from now on, from the same socket (a client whose tracker's name now resolves to another instance). */
  retarget(target: { address: string; port: number }): void { this.target = target; }

  send(msg: unknown): void {
    const bytes = typeof msg === 'string' || Buffer.isBuffer(msg) ? msg : JSON.stringify(msg);
    this.socket.send(bytes, this.target.port, this.target.address);
  }

  /** The next datagram (optionally the next whose action matches), or throws after timeoutMs. */
  async next(action?: string, timeoutMs = EXPECT_MS): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex((r) => action === undefined || r.action === action);
      if (i >= 0) return this.inbox.splice(i, 1)[0]!;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${action ?? 'datagram'} within ${timeoutMs} ms (inbox: ${this.inbox.map((r) => r.raw).join(' | ') || 'empty'})`);
      await new Promise<void>((r) => { const t = setTimeout(r, left); this.waiters.push(() => { clearTimeout(t); r(); }); });
    }
  }

  /** Sends and returns the first reply with the given action. */
  async request(msg: unknown, action: string, timeoutMs = EXPECT_MS): Promise<Reply> {
    this.send(msg);
    return this.next(action, timeoutMs);
  }

  /**
   * Everything that arrived before the tracker answered a STUN Binding sent now: a
   * barrier, not a wait. The tracker handles one source IP's requests in order, in
   * one shard, and sends each batch's replies in order, so every reply to what this
   * peer sent before (and every datagram the tracker sent before it answered the
   * Binding) arrives first. It changes no session (the Binding is charged to this
   * IP like any request: 20 bytes in, 44 out). Not a barrier for what another shard
   * or instance has yet to send (a push forwarded there): wait for the reply that
   * shows it was handled first.
   */
  async settle(timeoutMs = EXPECT_MS): Promise<Reply[]> {
    const txid = randomBytes(12);
    const arrived = new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => { this.barrier = null; reject(new Error(`the tracker did not answer the settle() Binding within ${timeoutMs} ms`)); }, timeoutMs);
      this.barrier = { txid, done: () => { clearTimeout(t); resolve(); } };
    });
    this.socket.send(bindingRequest(txid), this.target.port, this.target.address);
    await arrived;
    return this.inbox.splice(0);
  }

  /** Everything that arrives within ms: only for datagrams that are not the tracker's (a peer's), or where no barrier applies. */
  async drain(ms = 300): Promise<Reply[]> {
    await new Promise((r) => setTimeout(r, ms));
    return this.inbox.splice(0);
  }

  /**
   * Announces as a well-behaved documented client does: the first datagram is
   * padded so that both announce forms fit the 3x budget of an unverified source,
   * and (unless verify is false) a pulse carrying the new shareId then proves the
   * client receives at its address, so no later reply is trimmed. That pulse makes
   * the session's dialect "documented".
   */
  async announce({ verify = true } = {}): Promise<string> {
    const r = await this.request(PADDED_ANNOUNCE, 'announceReceived');
    await this.next('announced'); // the legacy form, sent too by default, in the same batch
    const shareId = r.data!.shareId as string;
    if (verify) await this.request({ action: 'pulse', shareId }, 'pulseReceived');
    return shareId;
  }

  close(): void { this.socket.close(); }
}

export async function withTracker(config: Partial<Config>, fn: (t: Tracker, target: { address: string; port: number }) => Promise<void>): Promise<void> {
  const tracker = await startTracker({ host: '127.0.0.1', port: 0, shards: 2, logLevel: 'silent', io: TEST_IO, ...config });
  try {
    await fn(tracker, { address: tracker.addresses[0]!.address, port: tracker.addresses[0]!.port });
  } finally {
    await tracker.close();
  }
}

/** Polls until `done()` holds; the deadline only bounds a failing test, never a speed. */
export async function until(what: string, done: () => boolean | Promise<boolean>, ms = EXPECT_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Polls until `get()` gives a value, and returns it; the deadline only bounds a failing test. */
export async function untilValue<T>(what: string, get: () => Promise<T | null>, ms = 3 * EXPECT_MS): Promise<T> {
  let v: T | null = null;
  await until(what, async () => (v = await get()) !== null, ms);
  return v as T;
}


/** The first loopback address `${prefix}.N` (N = 1, 2, ...) whose IP routes to shard `shard` of `shards` (with `not`: to any other shard). */
export function ipInShard(prefix: string, shards: number, shard: number, not = false): string {
  for (let i = 1; i < 255; i++) {
    const ip = `${prefix}.${i}`;
    if ((shardOfBucket(addressBucket(ip), shards) === shard) !== not) return ip;
  }
  throw new Error(`no address of ${prefix}.0/24 routes ${not ? 'away from' : 'to'} shard ${shard} of ${shards}`);
}
