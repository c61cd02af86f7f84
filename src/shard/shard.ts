// A shard: its slice of the sessions and the per-IP budgets, and the batch loop
// that hands each request to its handler. Pure logic over bytes: the worker
// (worker.ts) feeds it batches and ships what it writes; tests drive it directly.
//
// One file per request kind beside this one, each a function over the shard:
//   announce.ts, keep-alive.ts (pulse, alive), push.ts (push and the income it
//   sends), relay.ts (TURN credentials), stun.ts (Binding), forwards.ts (pushes from
//   other shards and instances). What they share: requester.ts (where a reply goes
//   and what it may cost), sessions.ts (the table, the wheel, what a session is
//   shown as), directory.ts (pointers for other instances), session-block.ts
//   (snapshots).
import { Packr } from 'msgpackr';
import { parseIp } from '../protocol/address.js';
import { LEGACY, UNKNOWN, dialectOfKeepAlive } from '../protocol/dialect.js';
import { parseRequest, type ParseLimits } from '../protocol/request.js';
import { addressBucket, shardOfBucket } from '../routing.js';
import { looksLikeStun } from '../stun/codec.js';
import { RecordTooLong, ReplyWriter } from '../wire/frame.js';
import type { ClaimForward, Forward, PushForward, RequestForward, SessionBlock, SessionState, ShardExtras } from '../wire/messages.js';
import type { ErrorCode } from '../protocol/errors.js';
import { startHere } from './claims.js';
import { SessionKey } from '../auth/session-key.js';
import { authenticate } from './tokens.js';
import { announce } from './announce.js';
import type { ShardContext } from './context.js';
import { ShardCounters, actionIndex } from './counters.js';
import { DirectoryPointers } from './directory.js';
import type { ExpiryWheel } from './expiry-wheel.js';
import { handleForwards } from './forwards.js';
import { IpTable, wireOverhead, wireOverheadOf } from './ip-table.js';
import { keepAlive } from './keep-alive.js';
import type { ShardOptions } from './options.js';
import type { PeerTable } from './peer-table.js';
import { push } from './push.js';
import { relay } from './relay.js';
import { Requester } from './requester.js';
import { exportSessions, importSessions } from './session-block.js';
import { Sessions } from './sessions.js';
import { StunResponder } from './stun.js';

export { shardOptions, type RelayOptions, type ShardOptions } from './options.js';
export { DIRECTORY_TICK_MS } from './directory.js';

/** IP entries with no session are forgotten after this long without a request. */
const IP_IDLE_MS = 60_000;
/** Expiries per turn of the event loop: bounds the stall a mass expiry causes. */
export const EXPIRY_BUDGET = 8192;

export class Shard implements ShardContext {
  readonly sessions: Sessions;
  readonly ips: IpTable;
  /** The batch's reply records: requester replies, income, STUN responses. */
  readonly writer = new ReplyWriter();
  /** Replies to a push from another instance: written here, sent by that instance. */
  readonly remoteWriter = new ReplyWriter(1024);
  readonly counters = new ShardCounters();
  readonly requester: Requester;
  readonly pointers: DirectoryPointers;
  readonly limits: ParseLimits;
  private readonly stunResponder: StunResponder;
  private readonly readClock: () => number;
  /** opts.now at the start of the current piece of work: read once per batch, not once per request. */
  clock: number;
  private forwards: (Forward[] | null)[];
  readonly key: SessionKey;
  /** The request being handled: the socket it came in on, and (to forward it raw) where its source address and payload are. */
  socket = 0;
  private source: Uint8Array = new Uint8Array(0);
  private sourceAt = 0;
  private sourceLen = 0;
  private requestBuf: Uint8Array = new Uint8Array(0);
  private payloadAt = 0;
  private payloadLen = 0;
  private extras: ShardExtras = {};
  /** While a claim's answer is handled (handleClaimAnswer): what the requester is told if no session started. */
  claimAnswer: 'none' | ErrorCode | null = null;
  private readonly packr = new Packr({ useRecords: false });

  /** Called with an exception a handler threw (the request is dropped, the shard goes on). */
  onInternalError: ((err: unknown) => void) | null = null;

  constructor(readonly opts: ShardOptions) {
    this.readClock = opts.now ?? (() => performance.now());
    this.clock = this.readClock();
    this.ips = new IpTable({
      rate: opts.ipRate, burst: opts.ipBurst, pushRate: opts.pushRate, pushBurst: opts.pushBurst, relayRate: opts.relayRate, relayBurst: opts.relayBurst,
      maxCredit: 16 * 1024, capacity: opts.maxTrackedIps, idleMs: IP_IDLE_MS, tickMs: 1000,
    }, () => this.clock);
    this.sessions = new Sessions(opts, this.ips, () => this.clock);
    this.requester = new Requester(this.ips, this.counters, this.writer);
    this.pointers = new DirectoryPointers(this.sessions, opts.pointerRefreshMs, (p) => (this.extras.pointers ??= []).push(p));
    this.limits = { shareIdLength: opts.shareIdLength, maxMultiaddr: opts.maxMultiaddr };
    this.forwards = new Array<Forward[] | null>(opts.shards).fill(null);
    this.key = new SessionKey(opts.sessionKey);
    this.stunResponder = new StunResponder(opts.stunEndpoints, this.requester.key, opts.maxDatagram);
  }

  get table(): PeerTable { return this.sessions.table; }
  get wheel(): ExpiryWheel { return this.sessions.wheel; }
  get tickMs(): number { return this.sessions.tickMs; }
  get peers(): number { return this.sessions.size; }

  /** Reads the clock for the piece of work about to start. */
  readTime(): void { this.clock = this.readClock(); }

  // ------------------------------------------------------------------ batches

  /** Handles one request batch (see wire/frame.ts for the layout). */
  handleBatch(buf: Uint8Array, len: number): void {
    this.readTime();
    const r = this.requester;
    let o = 0;
    let index = 0;
    for (; o < len; index++) {
      const socket = buf[o]!;
      const port = (buf[o + 1]! << 8) | buf[o + 2]!;
      const bucket = (buf[o + 3]! << 8) | buf[o + 4]!;
      const addrLen = buf[o + 5]!;
      const addrAt = o + 6;
      const lenAt = addrAt + addrLen;
      const payloadLen = (buf[lenAt]! << 8) | buf[lenAt + 1]!;
      const payloadAt = lenAt + 2;
      o = payloadAt + payloadLen;
      const family = parseIp(buf, addrAt, addrLen, r.key, 0);
      if (family === 0) { this.counters.drop('bad_source'); continue; }
      r.fromRecord(index, port, wireOverhead(family));
      if (!r.admit(r.overhead + payloadLen)) continue;
      const mark = this.writer.position;
      try {
        if (looksLikeStun(buf, payloadAt, payloadLen)) this.stunResponder.respond(this, socket, family, buf, addrAt, addrLen, payloadAt, payloadLen);
        else if (socket === 0) {
          this.source = buf; this.sourceAt = addrAt; this.sourceLen = addrLen;
          this.handleRequest(socket, bucket, buf, payloadAt, payloadLen, false);
        }
        else this.counters.drop('not_stun'); // the other STUN addresses answer STUN alone
      } catch (err) {
        // A bug must cost one request, not the shard and every session in it.
        this.writer.cancel(mark);
        if (err instanceof RecordTooLong) { this.counters.drop('reply_too_long'); continue; } // counted, not logged: a request may cause it
        this.counters.drop('internal_error');
        this.onInternalError?.(err);
      }
    }
    this.counters.batch(index);
  }

  /** One request; `forwarded`: it came from another shard, which found its token's session lives here. */
  private handleRequest(socket: number, bucket: number, buf: Uint8Array, at: number, len: number, forwarded: boolean): void {
    const r = this.requester;
    const req = parseRequest(buf, at, len, this.limits);
    this.socket = socket;
    this.requestBuf = buf; this.payloadAt = at; this.payloadLen = len;
    this.counters.request(req.action);
    r.action = actionIndex(req.action);
    r.dialect = UNKNOWN; // handlers refine it once they know the session
    // -1: the handler finds the session by source address; else the token's session (tokens.ts)
    let slot = -1;
    if ((req.action === 'pulse' || req.action === 'push' || req.action === 'relay') && req.token !== null) {
      slot = authenticate(this, req.action, req, forwarded);
      if (slot < 0) { this.counters.in(r.action, r.dialect); return; }
    }
    switch (req.action) {
      case 'pulse':
      case 'alive':
        r.dialect = dialectOfKeepAlive(req.action);
        keepAlive(this, req.action, req.action === 'pulse' ? req : null, slot, req.action === 'alive' ? req.id ?? -1 : -1);
        break;
      case 'announce': announce(this, req, socket, bucket); break;
      case 'push': push(this, req.shareId, req.relay, slot); break;
      case 'relay': relay(this, slot); break;
      case 'invalid': r.error(req.code, req.message); break;
    }
    this.counters.in(r.action, r.dialect);
  }

  /** The request being handled, raw, with where it came from and its budget (taken from its IP now): to be handled elsewhere as if it had arrived there. */
  private rawRequest(): RequestForward {
    const r = this.requester;
    return {
      request: Uint8Array.prototype.slice.call(this.requestBuf, this.payloadAt, this.payloadAt + this.payloadLen),
      socket: this.socket,
      address: Buffer.from(this.source.buffer, this.source.byteOffset + this.sourceAt, this.sourceLen).toString('latin1'),
      port: r.port,
      grant: r.takeGrant(),
      cap: r.replyCap,
    };
  }

  /** The request being handled, raw, to shard `shard`: its token's session lives there. */
  forwardRequest(shard: number): void {
    this.forward(shard, this.rawRequest());
  }

  /** The request being handled, raw, to the main thread as a claim for a token session of another instance (claims.ts). */
  claim(shareId: string): void {
    (this.extras.claims ??= []).push({ shareId, ...this.rawRequest() });
  }

  /** The answer to another instance's claim (claims.ts release). */
  handover(from: string, req: string, state: SessionState | null): void {
    (this.extras.handovers ??= []).push({ from, req, state });
  }

  /** A claim's answer from the main thread: the session starts here if it may (claims.ts), then its request is handled. */
  handleClaimAnswer(f: ClaimForward): void {
    const text = Buffer.from(f.address, 'latin1');
    if (parseIp(text, 0, text.length, this.requester.key, 0) === 0 || typeof f.shareId !== 'string') { this.counters.drop('bad_forward'); return; }
    this.readTime();
    const started = f.outcome === 'moved' || f.outcome === 'fresh';
    const refused = started ? startHere(this, f) : null;
    const failed = f.outcome === 'PEER_UNREACHABLE' || f.outcome === 'DIRECTORY_UNAVAILABLE' ? f.outcome : 'none';
    this.claimAnswer = refused ?? (started ? 'none' : failed);
    try {
      this.handleForwardedRequest(f);
    } finally {
      this.claimAnswer = null;
    }
  }

  /** A token request another shard forwarded here (forwardRequest): handled as if it had arrived here. */
  handleForwardedRequest(f: RequestForward): void {
    const r = this.requester;
    const text = Buffer.from(f.address, 'latin1');
    const family = parseIp(text, 0, text.length, r.key, 0);
    if (family === 0 || !(f.request instanceof Uint8Array)) { this.counters.drop('bad_forward'); return; }
    r.fromForward(f.socket, f.address, f.port, wireOverheadOf(f.address), f.grant, this.writer, f.cap);
    this.source = text; this.sourceAt = 0; this.sourceLen = text.length;
    const mark = this.writer.position;
    try {
      this.handleRequest(f.socket, 0, f.request, 0, f.request.length, true);
    } catch (err) {
      this.writer.cancel(mark);
      this.counters.drop('internal_error');
      this.onInternalError?.(err);
    }
  }

  /** Pushes forwarded from other shards, from other instances, or sent back by the main thread as failed (msgpackr-packed PushForward[]). */
  handleForwards(packed: Uint8Array): void {
    handleForwards(this, packed);
  }

  // ------------------------------------------------------------------ outbox

  /** A push (or a token request) for shard `shard` of this instance, sent with this batch's reply. */
  forward(shard: number, f: Forward): void {
    (this.forwards[shard] ??= []).push(f);
    this.counters.forwarded++;
  }

  /** A push whose target no shard here holds: the main thread asks the directory. */
  lookup(f: PushForward): void {
    (this.extras.lookups ??= []).push(f);
  }

  /** The requester's replies to a push from another instance, for it to send. */
  result(from: string, req: string, replies: Uint8Array[]): void {
    (this.extras.results ??= []).push({ from, req, replies });
  }

  /** Everything written since the last call: reply bytes, packed forwards per shard, packed extras. */
  finishBatch(): { out: Uint8Array | null; fwd: (Uint8Array | null)[] | null; ext: Uint8Array | null } {
    const out = this.writer.take();
    let fwd: (Uint8Array | null)[] | null = null;
    for (let s = 0; s < this.forwards.length; s++) {
      const list = this.forwards[s];
      if (!list) continue;
      fwd ??= new Array<Uint8Array | null>(this.forwards.length).fill(null);
      // pack() returns a view into msgpackr's own buffer: copy before it crosses threads
      fwd[s] = Uint8Array.prototype.slice.call(this.packr.pack(list));
      this.forwards[s] = null;
    }
    return { out, fwd, ext: this.takeExtras() };
  }

  /** Extras (directory lookups and pointers, results for other instances) since the last call, packed; or null. */
  takeExtras(): Uint8Array | null {
    const e = this.extras;
    if (e.lookups === undefined && e.results === undefined && e.pointers === undefined && e.claims === undefined && e.handovers === undefined) return null;
    this.extras = {};
    return Uint8Array.prototype.slice.call(this.packr.pack(e));
  }

  // ----------------------------------------------------------- housekeeping

  /** Expires what is due (sessions, then idle IP entries); false when the budget ran out first. */
  expire(budget = EXPIRY_BUDGET): boolean {
    this.readTime();
    return this.sessions.expireDue(budget, () => { this.counters.expired++; }) && this.ips.evictIdle(budget);
  }

  /** Writes the next slice of directory pointers (every DIRECTORY_TICK_MS, worker.ts). */
  directoryTick(): void { this.pointers.tick(); }

  /** The directory lost its data (or was unreachable): write every live pointer again, paced. */
  reregister(): void { this.pointers.reregister(); }

  /** Every live session with its remaining ttl, as columns (ops/snapshot.ts writes them). */
  exportSessions(): SessionBlock { return exportSessions(this); }

  /** Adds restored sessions (see session-block.ts); returns how many were added. */
  importSessions(b: SessionBlock): number { return importSessions(this, b); }

  /**
   * Bench/test only: adds `count` synthetic sessions through the same table,
   * minting and wheel code as announce (addresses 10.x.y.z that route here).
   */
  fill(count: number, seed = 0): void {
    this.readTime();
    const key = this.requester.key;
    for (let n = 0, i = seed; n < count; i++) {
      const ip = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
      const port = 1024 + ((i >>> 24) & 0x3fff);
      const bucket = addressBucket(ip);
      if (shardOfBucket(bucket, this.opts.shards) !== this.opts.index) continue;
      const text = Buffer.from(ip, 'latin1');
      parseIp(text, 0, text.length, key, 0);
      if (this.sessions.at(key, port) >= 0) continue;
      const slot = this.sessions.create(key, port, 0, bucket);
      this.table.dialect[slot] = LEGACY;
      n++;
    }
  }
}

