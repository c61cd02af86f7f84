// A shard: its slice of the peer table, its expiry wheel, and the handlers for
// every request. Pure logic over bytes: the worker (worker.ts) feeds it batches
// and ships what it writes. Tests drive it directly.
import { Packr, Unpackr } from 'msgpackr';
import type { AnnounceReply } from '../config.js';
import { ADDR_BYTES, formatIp, isV4Mapped, parseIp } from '../protocol/address.js';
import {
  ALIVED, LEGACY, PULSE_NO_SESSION, PULSE_OK_PREFIX, PULSE_OK_SUFFIX, PULSE_OVERRIDDEN_PREFIX,
  PUSH_NO_SESSION, UNKNOWN, EXPIRED, announceReplies, dialectOfKeepAlive, pushPlan, type PeerView,
} from '../protocol/dialect.js';
import { ERROR_CODES, errorJson, type ErrorCode } from '../protocol/errors.js';
import { parseRequest, type ParseLimits, type PulseRequest } from '../protocol/request.js';
import { addressBucket, shardOfBucket } from '../routing.js';
import { ReplyWriter } from '../io/frame.js';
import { ExpiryWheel } from './expiry-wheel.js';
import { PeerTable } from './peer-table.js';
import { ShareIdMinter } from './share-id.js';
import { ShardCounters } from './counters.js';

export interface ShardOptions {
  index: number;
  shards: number;
  ttlMs: number;
  shareIdLength: number;
  announceReply: AnnounceReply;
  maxMultiaddr: number;
  /** socket index -> 'udp4' | 'udp6', to write addresses the sending socket accepts */
  socketTypes: readonly ('udp4' | 'udp6')[];
  now?: () => number;
}

/** A request from another shard's session to push to one of ours. */
type Forward = [
  targetId: string, sendAddress: string, port: number, socket: number, dialect: number,
  shownIp: string, shownPort: number, ipv6: boolean, shareId: string, multiaddr: string | null,
];

/** Error replies to a source with no session may not exceed this multiple of its request. */
const UNVERIFIED_REPLY_FACTOR = 3;
/** Expiries per turn of the event loop: bounds the stall a mass expiry causes. */
export const EXPIRY_BUDGET = 8192;

export class Shard {
  readonly table: PeerTable;
  readonly wheel: ExpiryWheel;
  readonly writer = new ReplyWriter();
  readonly counters = new ShardCounters();
  readonly tickMs: number;
  private readonly ttlTicks: number;
  private readonly minter: ShareIdMinter;
  private readonly limits: ParseLimits;
  private readonly now: () => number;
  private readonly key = new Uint8Array(ADDR_BYTES);
  private forwards: (Forward[] | null)[];
  private readonly packr = new Packr({ useRecords: false });
  private readonly unpackr = new Unpackr({ useRecords: false });

  // Where replies to the request being handled go: a request index in the current
  // batch, or (for a forwarded push) an explicit address.
  private replyIndex = -1;
  private replySocket = 0;
  private replyAddress = '';
  private replyPort = 0;

  /** Called with an exception a handler threw (the request is dropped, the shard goes on). */
  onInternalError: ((err: unknown) => void) | null = null;

  constructor(readonly opts: ShardOptions) {
    this.now = opts.now ?? (() => performance.now());
    // ~100 ticks per ttl, between 10 ms and 1 s: expiry lands within 1 % of the ttl.
    this.tickMs = Math.min(1000, Math.max(10, Math.floor(opts.ttlMs / 100)));
    this.ttlTicks = Math.ceil(opts.ttlMs / this.tickMs);
    this.table = new PeerTable(opts.shareIdLength, 1024, (cap) => this.wheel.grow(cap));
    this.wheel = new ExpiryWheel(this.ttlTicks + 1, this.table.capacity, this.tick());
    this.minter = new ShareIdMinter(opts.shareIdLength);
    this.limits = { shareIdLength: opts.shareIdLength, maxMultiaddr: opts.maxMultiaddr };
    this.forwards = new Array<Forward[] | null>(opts.shards).fill(null);
  }

  tick(): number {
    return Math.floor(this.now() / this.tickMs);
  }

  get peers(): number { return this.table.size; }

  // ------------------------------------------------------------------ batches

  /** Handles one request batch (see io/frame.ts for the layout). */
  handleBatch(buf: Uint8Array, len: number): void {
    let o = 0;
    for (let index = 0; o < len; index++) {
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
      if (parseIp(buf, addrAt, addrLen, this.key, 0) === 0) { this.counters.drop('bad_source'); continue; }
      const mark = this.writer.position;
      try {
        this.handleRequest(socket, port, bucket, buf, payloadAt, payloadLen);
      } catch (err) {
        // A bug must cost one request, not the shard and every session in it.
        this.writer.cancel(mark);
        this.counters.drop('internal_error');
        this.onInternalError?.(err);
      }
    }
  }

  /** Everything written since the last call: reply bytes and packed forwards per shard. */
  finishBatch(): { out: ArrayBuffer | null; fwd: (Uint8Array | null)[] | null } {
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
    return { out, fwd };
  }

  /** Pushes forwarded from other shards (msgpackr-packed Forward[]). */
  handleForwards(packed: Uint8Array): void {
    let list: Forward[];
    try { list = this.unpackr.unpack(packed) as Forward[]; } catch { this.counters.drop('bad_forward'); return; }
    for (const f of list) {
      this.replyIndex = -1;
      this.replyAddress = f[1]; this.replyPort = f[2]; this.replySocket = f[3];
      const requester: PeerView = { ip: f[5], port: f[6], ipv6: f[7], shareId: f[8], multiaddr: f[9] };
      this.resolvePush(f[0], f[4], requester, -1);
    }
  }

  // ----------------------------------------------------------------- requests

  private handleRequest(socket: number, port: number, bucket: number, buf: Uint8Array, at: number, len: number): void {
    const req = parseRequest(buf, at, len, this.limits);
    this.counters.request(req.action);
    switch (req.action) {
      case 'pulse':
      case 'alive': return this.keepAlive(req.action, req.action === 'pulse' ? req : null, port, len);
      case 'announce': return this.announce(socket, port, bucket);
      case 'push': return this.push(req.shareId, port, len);
      case 'invalid': return this.rejectUnverified(req.code, req.message, port, len);
    }
  }

  private keepAlive(action: 'pulse' | 'alive', pulse: PulseRequest | null, port: number, requestLen: number): void {
    const slot = this.table.findByAddress(this.key, 0, port);
    if (slot < 0) {
      this.counters.unknownSession(action);
      this.replyGuarded(action === 'alive' ? EXPIRED : PULSE_NO_SESSION, requestLen);
      return;
    }
    this.table.dialect[slot] = dialectOfKeepAlive(action);
    this.wheel.schedule(slot, this.tick() + this.ttlTicks);
    const w = this.writer;
    if (pulse === null) {
      w.toRequest(this.replyIndex); w.bytes(ALIVED); w.end();
      return;
    }
    let overridden = false;
    if (pulse.override) overridden = this.applyOverride(slot, pulse);
    if (pulse.regenerate) {
      const bucket = this.minter.bucketOf(this.table.shareId(slot));
      this.table.replaceShareId(slot, this.mint(bucket));
    }
    w.toRequest(this.replyIndex);
    w.bytes(overridden ? PULSE_OVERRIDDEN_PREFIX : PULSE_OK_PREFIX);
    w.bytes(this.table.ids, slot * this.table.idLength, this.table.idLength);
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

  private announce(socket: number, port: number, bucket: number): void {
    let slot = this.table.findByAddress(this.key, 0, port);
    if (slot >= 0 && this.table.dialect[slot] !== UNKNOWN) {
      // A new announce from an address whose session is established replaces it:
      // the old shareId stops resolving (the address may now be someone else).
      this.removeSession(slot);
      slot = -1;
    }
    // An announce retried before any keep-alive (the desktop client resends every
    // second until answered) gets the same shareId again.
    if (slot < 0) {
      slot = this.table.insert(this.key, 0, port, socket, this.mint(bucket));
    }
    this.wheel.schedule(slot, this.tick() + this.ttlTicks);
    for (const reply of announceReplies(this.opts.announceReply, this.table.shareId(slot))) {
      this.beginReply(); this.writer.text(reply); this.writer.end();
    }
  }

  private push(targetId: string, port: number, requestLen: number): void {
    const slot = this.table.findByAddress(this.key, 0, port);
    if (slot < 0) {
      this.counters.unknownSession('push');
      for (const reply of PUSH_NO_SESSION) this.replyGuarded(reply, requestLen);
      return;
    }
    const bucket = this.minter.bucketOf(targetId);
    if (bucket < 0) return this.replyError('UNKNOWN_SHARE_ID');
    const dialect = this.table.dialect[slot]!;
    const target = shardOfBucket(bucket, this.opts.shards);
    if (target === this.opts.index) {
      this.resolvePush(targetId, dialect, this.view(slot), slot);
      return;
    }
    const v = this.view(slot);
    const list = (this.forwards[target] ??= []);
    list.push([targetId, this.sendAddress(slot), port, this.table.socket[slot]!, dialect,
      v.ip, v.port, v.ipv6, v.shareId, v.multiaddr]);
    this.counters.forwarded++;
  }

  /** requesterSlot is -1 when the requester lives in another shard. */
  private resolvePush(targetId: string, dialect: number, requester: PeerView, requesterSlot: number): void {
    const t = this.table.findByShareId(targetId);
    if (t < 0) return this.replyError('UNKNOWN_SHARE_ID');
    if (t === requesterSlot) return this.replyError('SELF_PUSH');
    const plan = pushPlan(dialect, requester, this.table.dialect[t]!, this.view(t));
    for (const reply of plan.toRequester) { this.beginReply(); this.writer.text(reply); this.writer.end(); }
    if (plan.toTarget !== null) {
      // income goes to where the target really is, never to an override
      this.writer.toAddress(this.table.socket[t]!, this.sendAddress(t), this.table.port[t]!);
      this.writer.text(plan.toTarget);
      this.writer.end();
      this.counters.incomes++;
    } else this.counters.error('PEER_ADDRESS_UNSUPPORTED');
  }

  // ------------------------------------------------------------------ replies

  private beginReply(): void {
    if (this.replyIndex >= 0) this.writer.toRequest(this.replyIndex);
    else this.writer.toAddress(this.replySocket, this.replyAddress, this.replyPort);
  }

  private replyError(code: ErrorCode, message?: string): void {
    this.counters.error(code);
    this.beginReply(); this.writer.text(errorJson(code, message ?? ERROR_CODES[code])); this.writer.end();
  }

  /** An error for a request that may come from a spoofed source: dropped if it would amplify. */
  private rejectUnverified(code: ErrorCode, message: string | undefined, port: number, requestLen: number): void {
    this.counters.error(code);
    this.replyGuarded(Buffer.from(errorJson(code, message ?? ERROR_CODES[code])), requestLen, port);
  }

  /**
   * Replies unless the source has no live session and the reply is more than
   * UNVERIFIED_REPLY_FACTOR times its request: then it is a counted drop.
   */
  private replyGuarded(payload: Uint8Array, requestLen: number, port = -1): void {
    if (payload.length > UNVERIFIED_REPLY_FACTOR * requestLen &&
        (port < 0 || this.table.findByAddress(this.key, 0, port) < 0)) {
      this.counters.drop('amplification');
      return;
    }
    this.beginReply(); this.writer.bytes(payload); this.writer.end();
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
    this.table.remove(slot);
  }

  /** Expires what is due; false when the budget ran out and more is due now. */
  expire(budget = EXPIRY_BUDGET): boolean {
    return this.wheel.advance(this.tick(), budget, (slot) => {
      this.table.remove(slot);
      this.counters.expired++;
    });
  }

  /**
   * Bench/test only: adds `count` synthetic sessions through the same table,
   * minting and wheel code as announce (addresses 10.x.y.z that route here).
   */
  fill(count: number, seed = 0): void {
    for (let n = 0, i = seed; n < count; i++) {
      const ip = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
      const port = 1024 + ((i >>> 24) & 0x3fff);
      const bucket = addressBucket(ip, port);
      if (shardOfBucket(bucket, this.opts.shards) !== this.opts.index) continue;
      const text = Buffer.from(ip, 'latin1');
      parseIp(text, 0, text.length, this.key, 0);
      if (this.table.findByAddress(this.key, 0, port) >= 0) continue;
      const slot = this.table.insert(this.key, 0, port, 0, this.mint(bucket));
      this.table.dialect[slot] = LEGACY;
      this.wheel.schedule(slot, this.tick() + this.ttlTicks);
      n++;
    }
  }
}
