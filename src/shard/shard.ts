// A shard: its slice of the peer table, its expiry wheel, and the handlers for
// every request. Pure logic over bytes: the worker (worker.ts) feeds it batches
// and ships what it writes. Tests drive it directly.
import { Packr, Unpackr } from 'msgpackr';
import type { Config } from '../config.js';
import { ADDR_BYTES, formatIp, isV4Mapped, parseIp } from '../protocol/address.js';
import {
  ALIVED, LEGACY, PULSE_OK_PREFIX, PULSE_OK_SEED, PULSE_OK_SUFFIX, PULSE_OVERRIDDEN_PREFIX, PULSE_OVERRIDDEN_SEED,
  PUSH_NO_SESSION, UNKNOWN, announceReplies, relayReceived, dialectOfAnnounce, dialectOfKeepAlive, keepAliveNoSession, pushPlan, type PeerView, type ReplyForms,
} from '../protocol/dialect.js';
import { formatPeerAddr } from '../protocol/address.js';
import { NAT_NOT_REPORTED } from '../protocol/nat.js';
import { ERROR_CODES, errorJson, type ErrorCode } from '../protocol/errors.js';
import { parseRequest, type AnnounceRequest, type ParseLimits, type PulseRequest } from '../protocol/request.js';
import { addressBucket, shardOfBucket } from '../routing.js';
import { ReplyWriter } from '../wire/frame.js';
import { ExpiryWheel } from './expiry-wheel.js';
import { KEPT_ALIVE, PeerTable, VERIFIED } from './peer-table.js';
import { AMPLIFICATION_FACTOR, IpTable, wireOverhead, wireOverheadOf } from './ip-table.js';
import { ShareIdMinter } from './share-id.js';
import { ShardCounters, actionIndex, INCOME, PUSH, STUN } from './counters.js';
import { CHANGE_IP, CHANGE_PORT, looksLikeStun } from '../stun/codec.js';
import { BindingRequest, errorBytes, readRequest, successBytes, writeError, writeSuccess, type AddressRef, type Discovery } from '../stun/binding.js';
import type { PointerWrite, PushForward, SessionBlock, ShardExtras } from '../wire/messages.js';
import { pointerRefreshMs } from '../directory/cadence.js';
import { turnCredentialFor } from '../relay/credentials.js';

/** The settings a shard uses as configured (config.ts documents each), and its own. */
export interface ShardOptions extends Pick<Config, 'shareIdLength' | 'announceReply' | 'maxMultiaddr' |
  'maxSessionsPerIp' | 'ipRate' | 'ipBurst' | 'pushRate' | 'pushBurst' | 'relayRate' | 'relayBurst'> {
  index: number;
  shards: number;
  ttlMs: number;
  /** this shard's share of the configured totals */
  maxSessions: number;
  maxTrackedIps: number;
  /** socket index -> 'udp4' | 'udp6', to write addresses the sending socket accepts */
  socketTypes: readonly ('udp4' | 'udp6')[];
  /** A session directory is configured: unknown push targets are looked up there, and every live session's pointer is kept fresh in it, each once per this many ms (0: no directory). */
  pointerRefreshMs: number;
  /**
   * With STUN NAT behaviour discovery (config stunOtherHost), the tracker's four
   * addresses by socket index: primary IP and port, primary IP and other port, other
   * IP and primary port, other IP and other port (io/stun-endpoints.ts). Else empty.
   */
  stunEndpoints: readonly { address: string; port: number }[];
  /** The relay whose credentials this shard mints (config turnUrl), or null: none configured. */
  relay: RelayOptions | null;
  now?: () => number;
}

/** What a shard needs to mint relay credentials (relay/credentials.ts) and hand them out. */
export interface RelayOptions {
  urls: string[];
  /** the secret shared with coturn, read at start (config turnSecret or turnSecretFile) */
  secret: string;
  ttl: number;
  interval: number;
}

/**
 * Shard `index`'s options under `config`: the settings it uses, and its share of the
 * totals. `io`: the datagram I/O's sockets, by index. `turnSecret`: the secret
 * read at start, when a relay is configured.
 */
export function shardOptions(config: Config, index: number, io: { socketTypes: readonly ('udp4' | 'udp6')[]; addresses: readonly { address: string; port: number }[] },
  turnSecret: string | null = null): ShardOptions {
  return {
    index,
    shards: config.shards,
    ttlMs: config.ttl * 1000,
    shareIdLength: config.shareIdLength,
    announceReply: config.announceReply,
    maxMultiaddr: config.maxMultiaddr,
    socketTypes: io.socketTypes,
    stunEndpoints: config.stunOtherHost === '' ? [] : io.addresses.map(({ address, port }) => ({ address, port })),
    maxSessions: Math.ceil(config.maxSessions / config.shards),
    maxSessionsPerIp: config.maxSessionsPerIp, // exact: all of an IP's sessions live in one shard
    maxTrackedIps: Math.ceil(config.maxTrackedIps / config.shards),
    ipRate: config.ipRate,
    ipBurst: config.ipBurst,
    pushRate: config.pushRate,
    pushBurst: config.pushBurst,
    relayRate: config.relayRate,
    relayBurst: config.relayBurst,
    relay: config.turnUrl === '' || turnSecret === null ? null
      : { urls: config.turnUrl.split(',').map((u) => u.trim()), secret: turnSecret, ttl: config.turnTtl, interval: config.relayInterval },
    pointerRefreshMs: config.directory === '' ? 0 : pointerRefreshMs(config.ttl),
  };
}

/** How often a shard writes its next slice of directory pointers (worker.ts). */
export const DIRECTORY_TICK_MS = 100;
/** Table slots re-registered per shard per directory tick after the directory came back: up to 50 k a second. */
const REREGISTER_PER_TICK = 5000;

/** Most reply credit (wire bytes) a push carries to another shard: a pushReceived plus a pushed fit. */
const MAX_PUSH_GRANT = 1024;
/** IP entries with no session are forgotten after this long without a request. */
const IP_IDLE_MS = 60_000;
/** Expiries per turn of the event loop: bounds the stall a mass expiry causes. */
export const EXPIRY_BUDGET = 8192;

function payloadBytes(payload: Uint8Array | string): number {
  return typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
}

export class Shard {
  readonly table: PeerTable;
  readonly wheel: ExpiryWheel;
  readonly writer = new ReplyWriter();
  readonly counters = new ShardCounters();
  readonly tickMs: number;
  readonly ips: IpTable;
  private readonly ttlTicks: number;
  private readonly minter: ShareIdMinter;
  private readonly limits: ParseLimits;
  private readonly readClock: () => number;
  /** opts.now at the start of the current piece of work: read once per batch, not once per request. */
  private clock: number;
  private readonly key = new Uint8Array(ADDR_BYTES);
  private forwards: (PushForward[] | null)[];
  private extras: ShardExtras = {};
  /** Replies to a push from another instance: written here, sent by that instance. */
  private readonly remoteWriter = new ReplyWriter(1024);
  /** Where requester replies go: the batch's reply writer, or remoteWriter. income always goes out through `writer`. */
  private replies: ReplyWriter = this.writer;
  /** Directory refresh: the next slot whose pointer is written, the pointers owed (a fraction), and a re-registration's remainder. */
  private refreshCursor = 0;
  private refreshCredit = 0;
  private reregisterLeft = 0;
  private readonly packr = new Packr({ useRecords: false });
  private readonly unpackr = new Unpackr({ useRecords: false });

  // Where replies to the request being handled go: a request index in the current
  // batch, or (for a forwarded push) an explicit address.
  private replyIndex = -1;
  private replySocket = 0;
  private replyAddress = '';
  private replyPort = 0;
  // What the request being handled counts as (counters.ts indexes), for datagram counts.
  private action = 0;
  private peerDialect: number = UNKNOWN;
  // The reply budget of the request being handled (see allow()), in wire bytes:
  // overhead is the IP + UDP header every datagram to this requester costs.
  private ip = -1;
  private verified = false;
  private grant = -1;
  private overhead = 0;

  // STUN: the request being read (one object, reused), the tracker's addresses by
  // socket index (NAT behaviour discovery only), and the mapped address (the source).
  private readonly stunRequest = new BindingRequest();
  private readonly stunEndpoints: AddressRef[];
  private readonly mapped: AddressRef = { addr: this.key, at: 0, port: 0, family: 4 };
  private readonly discovery: Discovery | null;

  /** Called with an exception a handler threw (the request is dropped, the shard goes on). */
  onInternalError: ((err: unknown) => void) | null = null;

  constructor(readonly opts: ShardOptions) {
    this.readClock = opts.now ?? (() => performance.now());
    this.clock = this.readClock();
    // ~100 ticks per ttl, between 10 ms and 1 s: expiry lands within 1 % of the ttl.
    this.tickMs = Math.min(1000, Math.max(10, Math.floor(opts.ttlMs / 100)));
    this.ttlTicks = Math.ceil(opts.ttlMs / this.tickMs);
    this.table = new PeerTable(opts.shareIdLength, 1024, (cap) => this.wheel.grow(cap));
    this.wheel = new ExpiryWheel(this.ttlTicks + 1, this.table.capacity, this.tick());
    this.minter = new ShareIdMinter(opts.shareIdLength);
    this.limits = { shareIdLength: opts.shareIdLength, maxMultiaddr: opts.maxMultiaddr };
    this.ips = new IpTable({
      rate: opts.ipRate, burst: opts.ipBurst, pushRate: opts.pushRate, pushBurst: opts.pushBurst, relayRate: opts.relayRate, relayBurst: opts.relayBurst,
      maxCredit: 16 * 1024, capacity: opts.maxTrackedIps, idleMs: IP_IDLE_MS, tickMs: 1000,
    }, () => this.clock);
    this.forwards = new Array<PushForward[] | null>(opts.shards).fill(null);
    this.stunEndpoints = opts.stunEndpoints.map(({ address, port }) => {
      const addr = new Uint8Array(ADDR_BYTES);
      const text = Buffer.from(address, 'latin1');
      const family = parseIp(text, 0, text.length, addr, 0);
      if (family === 0) throw new Error(`not an IP address: ${address}`);
      return { addr, at: 0, port, family };
    });
    this.discovery = this.stunEndpoints.length === 4 ? { origin: this.stunEndpoints[0]!, other: this.stunEndpoints[3]! } : null;
  }

  tick(): number {
    return Math.floor(this.clock / this.tickMs);
  }

  get peers(): number { return this.table.size; }

  // ------------------------------------------------------------------ batches

  /** Handles one request batch (see wire/frame.ts for the layout). */
  handleBatch(buf: Uint8Array, len: number): void {
    this.clock = this.readClock();
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
      this.replyIndex = index;
      const family = parseIp(buf, addrAt, addrLen, this.key, 0);
      if (family === 0) { this.counters.drop('bad_source'); continue; }
      this.overhead = wireOverhead(family);
      if (!this.admit(this.overhead + payloadLen)) continue;
      const mark = this.writer.position;
      try {
        if (looksLikeStun(buf, payloadAt, payloadLen)) this.stun(socket, port, family, buf, addrAt, addrLen, payloadAt, payloadLen);
        else if (socket === 0) this.handleRequest(socket, port, bucket, buf, payloadAt, payloadLen);
        else this.counters.drop('not_stun'); // the other STUN addresses answer STUN alone
      } catch (err) {
        // A bug must cost one request, not the shard and every session in it.
        this.writer.cancel(mark);
        this.counters.drop('internal_error');
        this.onInternalError?.(err);
      }
    }
    this.counters.batch(index);
  }

  /**
   * Per-IP rate limit and reply budget for the request about to be handled
   * (`wireBytes`: its payload plus IP and UDP headers). A tracked IP gains
   * AMPLIFICATION_FACTOR x that in credit; an IP the table has no room for may
   * get that much back for this request alone.
   */
  private admit(wireBytes: number): boolean {
    this.verified = false;
    this.ip = this.ips.touch(this.key, 0);
    if (this.ip < 0) {
      this.grant = AMPLIFICATION_FACTOR * wireBytes;
      return true;
    }
    this.grant = -1;
    if (this.ips.admit(this.ip, wireBytes)) return true;
    this.counters.drop('rate_limited');
    return false;
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
    if (e.lookups === undefined && e.results === undefined && e.pointers === undefined) return null;
    this.extras = {};
    return Uint8Array.prototype.slice.call(this.packr.pack(e));
  }

  /**
   * Pushes forwarded from other shards, from other instances, or sent back by the
   * main thread as failed (msgpackr-packed PushForward[]).
   */
  handleForwards(packed: Uint8Array): void {
    let list: PushForward[];
    try { list = this.unpackr.unpack(packed) as PushForward[]; } catch { this.counters.drop('bad_forward'); return; }
    this.clock = this.readClock();
    for (const f of list) {
      this.replyIndex = -1;
      this.action = PUSH; this.peerDialect = f.dialect;
      this.replyAddress = f.address; this.replyPort = f.port; this.replySocket = f.socket;
      this.verified = f.grant < 0; this.grant = f.grant; this.ip = -1; this.overhead = wireOverheadOf(f.address);
      this.replies = f.remote !== undefined ? this.remoteWriter : this.writer;
      if (f.failed !== undefined) this.replyError(f.failed);
      else this.resolvePush(f, -1);
      if (f.remote !== undefined) {
        // Always answered, if only with nothing (every reply over budget): the
        // requester's instance must not mistake silence for an owner that is gone.
        const out = this.remoteWriter.take() ?? new Uint8Array(0);
        (this.extras.results ??= []).push({ from: f.remote.from, req: f.remote.req, out });
        this.replies = this.writer;
      }
    }
  }

  // ----------------------------------------------------------------- requests

  private handleRequest(socket: number, port: number, bucket: number, buf: Uint8Array, at: number, len: number): void {
    const req = parseRequest(buf, at, len, this.limits);
    this.counters.request(req.action);
    this.action = actionIndex(req.action);
    this.peerDialect = UNKNOWN; // handlers refine it once they know the session
    switch (req.action) {
      case 'pulse':
      case 'alive':
        this.peerDialect = dialectOfKeepAlive(req.action);
        this.keepAlive(req.action, req.action === 'pulse' ? req : null, port);
        break;
      case 'announce': this.announce(req, socket, port, bucket); break;
      case 'push': this.push(req.shareId, req.relay, port); break;
      case 'relay': this.relay(port); break;
      case 'invalid': this.rejectInvalid(req.code, req.message, port); break;
    }
    this.counters.in(this.action, this.peerDialect);
  }

  private keepAlive(action: 'pulse' | 'alive', pulse: PulseRequest | null, port: number): void {
    const slot = this.table.findByAddress(this.key, 0, port);
    if (slot < 0) {
      this.counters.unknownSession(action);
      this.sendReply(keepAliveNoSession(action));
      return;
    }
    this.table.dialect[slot] = dialectOfKeepAlive(action);
    this.table.flags[slot]! |= KEPT_ALIVE;
    this.wheel.schedule(slot, this.tick() + this.ttlTicks);
    if (pulse?.proof != null && this.table.shareIdEquals(slot, pulse.proof)) this.table.flags[slot]! |= VERIFIED;
    if (pulse !== null && pulse.nat !== NAT_NOT_REPORTED) this.table.nat[slot] = pulse.nat;
    this.verified = (this.table.flags[slot]! & VERIFIED) !== 0;
    if (pulse === null) {
      this.sendReply(ALIVED);
      return;
    }
    let overridden = false;
    if (pulse.override) overridden = this.applyOverride(slot, pulse);
    const idLen = this.table.idLength;
    const prefix = overridden ? PULSE_OVERRIDDEN_PREFIX : PULSE_OK_PREFIX;
    const full = prefix.length + idLen + PULSE_OK_SUFFIX.length;
    if (pulse.regenerate) {
      // A new shareId the client could not be told would strand it: only mint one
      // when the reply that carries it can go out (the client retries otherwise).
      if (!this.affords(full)) { this.counters.drop('amplification'); return; }
      const bucket = this.minter.bucketOf(this.table.shareId(slot));
      this.table.replaceShareId(slot, this.mint(bucket));
    }
    if (overridden || pulse.regenerate) this.writePointer(slot);
    if (!this.allow(full)) {
      // The reply exactly as the seed README defines it, without the shareId extension.
      this.sendReply(overridden ? PULSE_OVERRIDDEN_SEED : PULSE_OK_SEED);
      return;
    }
    const w = this.writer;
    this.beginReply();
    w.bytes(prefix);
    w.bytes(this.table.ids, slot * idLen, idLen);
    w.bytes(PULSE_OK_SUFFIX);
    w.end();
  }

  /** Sets what push reports for this peer; never where the tracker sends. */
  private applyOverride(slot: number, p: PulseRequest): boolean {
    if (p.ip === null && p.port === 0 && p.multiaddr === null) {
      this.table.overrides.delete(slot);
      return false;
    }
    const cur = this.table.overrides.get(slot);
    this.table.overrides.set(slot, {
      ip: p.ip ?? cur?.ip ?? null,
      port: p.port || cur?.port || 0,
      multiaddr: p.multiaddr ?? cur?.multiaddr ?? null,
    });
    return true;
  }

  private mint(bucket: number): string {
    return this.minter.mint(bucket, (id) => this.table.findByShareId(id) >= 0);
  }

  private announce(req: AnnounceRequest, socket: number, port: number, bucket: number): void {
    const t = this.table;
    let slot = t.findByAddress(this.key, 0, port);
    if (slot >= 0 && (t.flags[slot]! & KEPT_ALIVE) !== 0) {
      // A new announce from an address whose session is established replaces it:
      // the old shareId stops resolving (the address may now be someone else).
      this.removeSession(slot);
      slot = -1;
    }
    // An announce retried before any keep-alive (the desktop client resends every
    // second until answered) gets the same shareId again.
    if (slot < 0) {
      if (this.ip >= 0 && this.ips.sessions[this.ip]! >= this.opts.maxSessionsPerIp) return this.replyError('SESSION_LIMIT');
      if (t.size >= this.opts.maxSessions) return this.replyError('TRACKER_FULL');
      slot = t.insert(this.key, 0, port, socket, this.mint(bucket));
      if (this.ip >= 0) this.ips.sessions[this.ip]!++;
      this.writePointer(slot);
    }
    const told = dialectOfAnnounce(req);
    if (told !== UNKNOWN) t.dialect[slot] = told;
    if (req.nat !== NAT_NOT_REPORTED) t.nat[slot] = req.nat;
    this.peerDialect = t.dialect[slot]!;
    this.wheel.schedule(slot, this.tick() + this.ttlTicks);
    for (const reply of announceReplies(this.opts.announceReply, t.dialect[slot]!, t.shareId(slot))) this.sendFirstFitting(reply);
  }

  /**
   * Relay credentials (the README's "Relay"): only for a live session that proved it
   * receives (the reply is larger than the request), at most relayRate a second per
   * IP, and the same pair again until relayInterval seconds after it was minted,
   * counted in the whole seconds of its expiry (the unix seconds coturn reads).
   */
  private relay(port: number): void {
    const relay = this.opts.relay;
    if (relay === null) return this.replyError('RELAY_NOT_CONFIGURED');
    if (this.ip >= 0 && !this.ips.takeRelayToken(this.ip)) return this.replyError('RELAY_RATE_LIMITED');
    const slot = this.table.findByAddress(this.key, 0, port);
    if (slot < 0) { this.counters.unknownSession('relay'); return this.replyError('NO_SESSION'); }
    this.peerDialect = this.table.dialect[slot]!;
    this.verified = (this.table.flags[slot]! & VERIFIED) !== 0;
    if (!this.verified) return this.replyError('PROOF_REQUIRED');
    const nowMs = Date.now(); // wall clock: coturn reads the expiry as unix seconds
    const now = Math.floor(nowMs / 1000);
    let expiry = this.table.relayExpiry[slot]!;
    if (expiry === 0 || now >= expiry - relay.ttl + relay.interval) {
      expiry = now + relay.ttl;
      this.table.relayExpiry[slot] = expiry;
      this.counters.relayMinted++;
    } else this.counters.relayReused++;
    this.sendReply(relayReceived(relay.urls, turnCredentialFor(relay.secret, this.table.shareId(slot), expiry, nowMs)));
  }

  private push(targetId: string, relay: string | null, port: number): void {
    // Every push spends a push token, so guessing shareIds is slow (and counted).
    if (this.ip >= 0 && !this.ips.takePushToken(this.ip)) { this.counters.drop('push_rate_limited'); return; }
    const slot = this.table.findByAddress(this.key, 0, port);
    if (slot < 0) {
      this.counters.unknownSession('push');
      for (const reply of PUSH_NO_SESSION) this.sendFirstFitting(reply);
      return;
    }
    this.peerDialect = this.table.dialect[slot]!;
    this.verified = (this.table.flags[slot]! & VERIFIED) !== 0;
    // A relayed address sends the target there: only a requester that proved where it is may name one.
    if (relay !== null && !this.verified) return this.replyError('PROOF_REQUIRED');
    const bucket = this.minter.bucketOf(targetId);
    if (bucket < 0) return this.replyError('UNKNOWN_SHARE_ID');
    const target = shardOfBucket(bucket, this.opts.shards);
    if (target === this.opts.index && (this.opts.pointerRefreshMs === 0 || this.table.findByShareId(targetId) >= 0)) {
      this.resolvePush({ target: targetId, dialect: this.table.dialect[slot]!, requester: this.view(slot), ...(relay !== null ? { relay } : {}) }, slot);
      return;
    }
    // To another shard, or (when no shard here holds it) to the directory: the push
    // carries where its replies go and the requester's reply budget.
    const f: PushForward = {
      target: targetId, socket: this.table.socket[slot]!, address: this.sendAddress(slot), port,
      dialect: this.table.dialect[slot]!, requester: this.view(slot), grant: this.takeGrant(), ...(relay !== null ? { relay } : {}),
    };
    if (target === this.opts.index) {
      (this.extras.lookups ??= []).push(f);
      return;
    }
    (this.forwards[target] ??= []).push(f);
    this.counters.forwarded++;
  }

  /**
   * Answers a push whose target belongs in this shard. requesterSlot is -1 when
   * the requester lives in another shard or instance (f then says where replies go).
   */
  private resolvePush(f: Pick<PushForward, 'target' | 'dialect' | 'requester' | 'remote' | 'relay'>, requesterSlot: number): void {
    const t = this.table.findByShareId(f.target);
    if (t < 0) {
      // Not here: with a directory, a push from this instance may find it in another one.
      if (this.opts.pointerRefreshMs > 0 && requesterSlot < 0 && f.remote === undefined) {
        (this.extras.lookups ??= []).push(f as PushForward);
        return;
      }
      return this.replyError('UNKNOWN_SHARE_ID');
    }
    if (t === requesterSlot) return this.replyError('SELF_PUSH');
    const plan = pushPlan(f.dialect, f.requester, this.table.dialect[t]!, this.view(t), f.relay ?? null);
    if (f.relay !== undefined && plan.toTarget !== null) this.counters.relayForwarded++;
    for (const reply of plan.toRequester) this.sendFirstFitting(reply);
    if (plan.toTarget === null) { this.counters.error('PEER_ADDRESS_UNSUPPORTED'); return; }
    // income goes to where the target really is, never to an override. It is not
    // charged to anyone's reply budget: the push names the target's shareId, which
    // the tracker only ever sent to the target's own address, so the pusher got it
    // from the target; the pusher's push-rate limit bounds how often it comes.
    this.writer.toAddress(this.table.socket[t]!, this.sendAddress(t), this.table.port[t]!);
    this.writer.text(plan.toTarget);
    this.writer.end();
    this.counters.out(INCOME, this.table.dialect[t]!);
    this.counters.incomes++;
  }

  // --------------------------------------------------------------------- STUN

  /**
   * A STUN message (RFC 8489 Binding; with a second address, RFC 5780 discovery).
   * The response obeys the reply budget like any other: a source that has not
   * proved it receives gets at most 3x the wire bytes it sent, wherever the
   * response goes (another socket of ours for CHANGE-REQUEST, another port of the
   * same IP for RESPONSE-PORT).
   */
  private stun(socket: number, port: number, family: 4 | 6, buf: Uint8Array, addrAt: number, addrLen: number, at: number, len: number): void {
    const r = this.stunRequest;
    const verdict = readRequest(buf, at, len, this.discovery !== null, r);
    this.counters.stunRequest(verdict);
    this.counters.in(STUN, UNKNOWN);
    this.action = STUN;
    this.peerDialect = UNKNOWN;
    switch (verdict) {
      case 'indication': return; // a keep-alive: no response
      case 'malformed': this.counters.drop('stun_malformed'); return;
      case 'bad-fingerprint': this.counters.drop('stun_bad_fingerprint'); return;
      case 'not-a-request': this.counters.drop('stun_not_a_request'); return;
      default: break;
    }
    // The session of this address, if it proved it receives, is not charged.
    const slot = this.table.findByAddress(this.key, 0, port);
    this.verified = slot >= 0 && (this.table.flags[slot]! & VERIFIED) !== 0;
    if (verdict !== 'binding') {
      const code = verdict === 'bad-request' ? 400 : 420;
      if (!this.allow(errorBytes(code, r))) { this.counters.drop('amplification'); return; }
      this.beginReply();
      const n = writeError(this.writer.room(errorBytes(code, r)), this.writer.position, buf, at, r, code);
      this.writer.skip(n);
      this.writer.end();
      this.counters.stunResponse(code);
      return;
    }
    // CHANGE-REQUEST: from the socket whose IP and/or port differ (socket = ip * 2 + port, see ShardOptions).
    const from = socket ^ ((r.change & CHANGE_IP) !== 0 ? 2 : 0) ^ ((r.change & CHANGE_PORT) !== 0 ? 1 : 0);
    const toPort = r.responsePort !== 0 ? r.responsePort : port;
    const d = this.discovery;
    if (d !== null) { d.origin = this.stunEndpoints[from]!; d.other = this.stunEndpoints[socket ^ 3]!; }
    this.mapped.port = port;
    this.mapped.family = family;
    // PADDING only where the budget affords it; the response is complete without.
    const padding = r.padding > 0 && this.affords(successBytes(family, d, r.padding, r.fingerprint)) ? r.padding : 0;
    const bytes = successBytes(family, d, padding, r.fingerprint);
    if (!this.allow(bytes)) { this.counters.drop('amplification'); return; }
    this.counters.out(STUN, UNKNOWN);
    if (from === socket && toPort === port) this.writer.toRequest(this.replyIndex);
    else this.writer.toAddressBytes(from, buf, addrAt, addrLen, toPort);
    const n = writeSuccess(this.writer.room(bytes), this.writer.position, buf, at, r, this.mapped, d, padding);
    this.writer.skip(n);
    this.writer.end();
    this.counters.stunResponse(0);
  }

  // ------------------------------------------------------------------ replies

  private beginReply(): void {
    this.counters.out(this.action, this.peerDialect);
    if (this.replyIndex >= 0) this.replies.toRequest(this.replyIndex);
    else this.replies.toAddress(this.replySocket, this.replyAddress, this.replyPort);
  }

  private replyError(code: ErrorCode, message?: string): void {
    this.counters.error(code);
    this.sendReply(errorJson(code, message ?? ERROR_CODES[code]));
  }

  /** An error for a malformed request; a session that proved itself gets it in full. */
  private rejectInvalid(code: ErrorCode, message: string | undefined, port: number): void {
    const slot = this.table.findByAddress(this.key, 0, port);
    this.verified = slot >= 0 && (this.table.flags[slot]! & VERIFIED) !== 0;
    this.replyError(code, message);
  }

  /** Sends one reply to the requester if its budget allows; else a counted drop. */
  private sendReply(payload: Uint8Array | string): boolean {
    if (!this.allow(payloadBytes(payload))) { this.counters.drop('amplification'); return false; }
    this.beginReply();
    if (typeof payload === 'string') this.replies.text(payload); else this.replies.bytes(payload);
    this.replies.end();
    return true;
  }

  /** Sends the fullest of a reply's forms that the budget affords; if none fits, a counted drop. */
  private sendFirstFitting(forms: ReplyForms): void {
    for (let i = 0; i < forms.length - 1; i++) {
      if (this.affords(payloadBytes(forms[i]!))) { this.sendReply(forms[i]!); return; }
    }
    this.sendReply(forms[forms.length - 1]!);
  }

  /**
   * The amplification rule: a requester that has not proved it receives at its
   * address gets replies only from its IP's credit (3x the wire bytes the IP
   * sent, see ip-table.ts), or from a fixed grant (an IP the table has no room
   * for; a push forwarded from another shard). A reply of `bytes` payload costs
   * its wire bytes. Spends them when allowed.
   */
  private allow(bytes: number): boolean {
    if (this.verified) return true;
    const wire = bytes + this.overhead;
    if (this.grant >= 0) {
      if (wire > this.grant) return false;
      this.grant -= wire;
      return true;
    }
    return this.ips.spend(this.ip, wire);
  }

  private affords(bytes: number): boolean {
    if (this.verified) return true;
    const wire = bytes + this.overhead;
    return this.grant >= 0 ? wire <= this.grant : this.ips.credit[this.ip]! >= wire;
  }

  /** Budget handed to another shard with a forwarded push, taken from this IP's credit now. */
  private takeGrant(): number {
    if (this.verified) return -1;
    if (this.grant >= 0) { const g = this.grant; this.grant = 0; return g; }
    const g = Math.min(MAX_PUSH_GRANT, this.ips.credit[this.ip]!);
    this.ips.credit[this.ip]! -= g;
    return g;
  }

  // ----------------------------------------------------------------- sessions

  private view(slot: number): PeerView {
    const o = this.table.overrides.get(slot);
    const ip = o?.ip ?? formatIp(this.table.addr, slot * ADDR_BYTES);
    return {
      ip,
      port: o?.port || this.table.port[slot]!,
      ipv6: ip.includes(':'),
      shareId: this.table.shareId(slot),
      multiaddr: o?.multiaddr ?? null,
      nat: this.table.nat[slot]!,
      // proved where others are told to send: an override of ip or port was never proved
      verified: (this.table.flags[slot]! & VERIFIED) !== 0 && (o === undefined || (o.ip === null && o.port === 0)),
    };
  }

  /** The address text the peer's socket sends to (IPv4 on a dual-stack socket is IPv4-mapped). */
  private sendAddress(slot: number): string {
    const ip = formatIp(this.table.addr, slot * ADDR_BYTES);
    return this.opts.socketTypes[this.table.socket[slot]!] === 'udp6' && isV4Mapped(this.table.addr, slot * ADDR_BYTES)
      ? '::ffff:' + ip : ip;
  }

  private removeSession(slot: number): void {
    this.wheel.remove(slot);
    this.dropFromTable(slot);
  }

  /** Removes a session from the table and from its IP's session count. */
  private dropFromTable(slot: number): void {
    const ip = this.ips.slotOf(this.table.addr, slot * ADDR_BYTES);
    if (ip >= 0 && this.ips.sessions[ip]! > 0) this.ips.sessions[ip]!--;
    this.table.remove(slot);
  }

  /** Counts a session in its IP's entry (restored and synthetic sessions, like announced ones). */
  private countForIp(): void {
    const ip = this.ips.touch(this.key, 0);
    if (ip >= 0) this.ips.sessions[ip]!++;
  }

  // ---------------------------------------------------------------- directory

  /** Queues this session's pointer for the directory (when there is one). */
  private writePointer(slot: number): void {
    if (this.opts.pointerRefreshMs === 0) return;
    const v = this.view(slot);
    (this.extras.pointers ??= []).push([v.shareId, formatPeerAddr(v.ip, v.port), v.multiaddr] satisfies PointerWrite);
  }

  /**
   * Called every DIRECTORY_TICK_MS: writes the pointers of the next live sessions
   * in slot order, as many as make every live session's pointer written once per
   * pointerRefreshMs at an even rate; after reregister(), every pointer again at
   * up to REREGISTER_PER_TICK.
   */
  directoryTick(): void {
    if (this.opts.pointerRefreshMs === 0) return;
    const t = this.table;
    // fractions carry over, so a small table is not refreshed faster than a big one
    this.refreshCredit += (t.size * DIRECTORY_TICK_MS) / this.opts.pointerRefreshMs;
    let quota = Math.floor(this.refreshCredit);
    this.refreshCredit -= quota;
    if (this.reregisterLeft > 0) {
      const n = Math.min(this.reregisterLeft, REREGISTER_PER_TICK);
      this.reregisterLeft -= n;
      quota = Math.max(quota, n);
    }
    // At most one pass over the table per tick, however sparse it is.
    for (let scanned = 0; quota > 0 && scanned < t.capacity; scanned++) {
      const slot = this.refreshCursor;
      this.refreshCursor = slot + 1 >= t.capacity ? 0 : slot + 1;
      if (!this.wheel.isScheduled(slot)) continue; // every live slot is on the wheel, and only those
      this.writePointer(slot);
      quota--;
    }
  }

  /** The directory lost its data (or was unreachable): write every live pointer again, paced. */
  reregister(): void {
    this.reregisterLeft = this.table.size;
  }

  /** Expires what is due (sessions, then idle IP entries); false when the budget ran out first. */
  expire(budget = EXPIRY_BUDGET): boolean {
    this.clock = this.readClock();
    return this.wheel.advance(this.tick(), budget, (slot) => {
      this.dropFromTable(slot);
      this.counters.expired++;
    }) && this.ips.evictIdle(budget);
  }

  // ---------------------------------------------------------------- snapshots

  /** Every live session with its remaining ttl, as columns (ops/snapshot.ts writes them). */
  exportSessions(): SessionBlock {
    const t = this.table, n = t.size, idLen = t.idLength;
    const block: SessionBlock = {
      count: n, addr: new Uint8Array(n * ADDR_BYTES), port: new Uint8Array(n * 2), dialect: new Uint8Array(n),
      flags: new Uint8Array(n), nat: new Uint8Array(n), relayExpiry: new Uint8Array(n * 4), ids: new Uint8Array(n * idLen), ttlMs: new Uint8Array(n * 4), overrides: [],
    };
    const ports = new DataView(block.port.buffer), ttls = new DataView(block.ttlMs.buffer), relays = new DataView(block.relayExpiry.buffer);
    this.clock = this.readClock();
    const now = this.tick();
    let i = 0;
    // Every live slot is on the wheel (and only live slots are), so the wheel says which slots to visit.
    for (let slot = 0; slot < t.capacity && i < n; slot++) {
      if (!this.wheel.isScheduled(slot)) continue;
      const due = this.wheel.dueTick(slot);
      // byte loops, not subarray()+set(): no object per session (a shard may hold millions)
      for (let k = 0; k < ADDR_BYTES; k++) block.addr[i * ADDR_BYTES + k] = t.addr[slot * ADDR_BYTES + k]!;
      ports.setUint16(i * 2, t.port[slot]!);
      block.dialect[i] = t.dialect[slot]!;
      block.flags[i] = t.flags[slot]!;
      block.nat[i] = t.nat[slot]!;
      relays.setUint32(i * 4, t.relayExpiry[slot]!);
      for (let k = 0; k < idLen; k++) block.ids[i * idLen + k] = t.ids[slot * idLen + k]!;
      ttls.setUint32(i * 4, Math.max(0, (due - now) * this.tickMs));
      const o = t.overrides.get(slot);
      if (o !== undefined) block.overrides.push([i, o.ip, o.port, o.multiaddr]);
      i++;
    }
    return block;
  }

  /**
   * Adds restored sessions through the same table and wheel code as announce.
   * Sessions that do not route to this shard, or whose address or shareId is
   * already live, are skipped. Returns how many were added.
   */
  importSessions(b: SessionBlock): number {
    const t = this.table, idLen = t.idLength;
    const ports = new DataView(b.port.buffer, b.port.byteOffset, b.port.byteLength);
    const ttls = new DataView(b.ttlMs.buffer, b.ttlMs.byteOffset, b.ttlMs.byteLength);
    const relays = new DataView(b.relayExpiry.buffer, b.relayExpiry.byteOffset, b.relayExpiry.byteLength);
    const slots = new Int32Array(b.count).fill(-1);
    this.clock = this.readClock();
    const now = this.tick();
    let added = 0;
    for (let i = 0; i < b.count; i++) {
      const id = String.fromCharCode.apply(null, b.ids.subarray(i * idLen, (i + 1) * idLen) as unknown as number[]);
      const bucket = this.minter.bucketOf(id);
      if (bucket < 0 || shardOfBucket(bucket, this.opts.shards) !== this.opts.index) continue;
      this.key.set(b.addr.subarray(i * ADDR_BYTES, (i + 1) * ADDR_BYTES));
      const port = ports.getUint16(i * 2);
      if (t.findByAddress(this.key, 0, port) >= 0 || t.findByShareId(id) >= 0) continue;
      const slot = t.insert(this.key, 0, port, 0, id);
      this.countForIp();
      t.dialect[slot] = b.dialect[i]!;
      t.flags[slot] = b.flags[i]!; // a verified client stays verified
      t.nat[slot] = b.nat[i]!;
      t.relayExpiry[slot] = relays.getUint32(i * 4);
      const ticks = Math.min(this.ttlTicks, Math.max(1, Math.ceil(ttls.getUint32(i * 4) / this.tickMs)));
      this.wheel.schedule(slot, now + ticks);
      slots[i] = slot;
      added++;
    }
    for (const [i, ip, port, multiaddr] of b.overrides) {
      const slot = slots[i] ?? -1;
      if (slot >= 0) t.overrides.set(slot, { ip, port, multiaddr });
    }
    if (added > 0) this.reregister(); // restored sessions point at this instance now
    this.counters.restored += added;
    return added;
  }

  /**
   * Bench/test only: adds `count` synthetic sessions through the same table,
   * minting and wheel code as announce (addresses 10.x.y.z that route here).
   */
  fill(count: number, seed = 0): void {
    this.clock = this.readClock();
    for (let n = 0, i = seed; n < count; i++) {
      const ip = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
      const port = 1024 + ((i >>> 24) & 0x3fff);
      const bucket = addressBucket(ip);
      if (shardOfBucket(bucket, this.opts.shards) !== this.opts.index) continue;
      const text = Buffer.from(ip, 'latin1');
      parseIp(text, 0, text.length, this.key, 0);
      if (this.table.findByAddress(this.key, 0, port) >= 0) continue;
      const slot = this.table.insert(this.key, 0, port, 0, this.mint(bucket));
      this.countForIp();
      this.table.dialect[slot] = LEGACY;
      this.wheel.schedule(slot, this.tick() + this.ttlTicks);
      n++;
    }
  }
}
