// Per-source-IP state of one shard: the amplification credit, the request and
// push token buckets, and the number of live sessions. Requests are routed to
// shards by source IP (routing.ts), so everything about one IP lives here, in
// one shard, and no other thread needs to agree on it.
//
// An IPv6 client is counted by its /64 (the key is the address with its last 64
// bits zeroed), since one host may hold a whole /64: the budgets and the session
// count are per /64, with a session cap of its own. IPv4 (and IPv4-mapped) is
// counted per address. Routing hashes the whole address (routing.ts), so the
// addresses of one /64 spread over the shards: each shard counts its own share.
//
// Struct-of-arrays like the peer table; entries idle for `idleMs` with no live
// session are evicted by their own expiry wheel. At `capacity` new IPs are not
// tracked: their requests are still answered, under a per-request 3x rule.
import { ADDR_BYTES } from '../protocol/address.js';
import { ExpiryWheel } from './expiry-wheel.js';
import { EMPTY, indexErase, indexPut } from './open-index.js';

export interface IpLimits {
  /** requests per second per IP, and the burst allowed */
  rate: number;
  burst: number;
  /** push attempts per second per IP, and the burst allowed */
  pushRate: number;
  pushBurst: number;
  /** relay requests per second per IP, and the burst allowed */
  relayRate: number;
  relayBurst: number;
  /** bytes of reply credit an IP may bank */
  maxCredit: number;
  capacity: number;
  idleMs: number;
  tickMs: number;
}

/** Reply bytes an unverified source may receive per byte it sent, counted on the wire. */
export const AMPLIFICATION_FACTOR = 3;

/**
 * What a datagram costs on the wire besides its payload: the IPv4 (20) or IPv6
 * (40) header and the UDP header (8). Credit and charges are counted in wire
 * bytes, since bytes on the wire are what an attacker gains by spoofing, and for
 * datagrams this small the headers are most of them.
 */
export const WIRE_OVERHEAD_V4 = 28;
export const WIRE_OVERHEAD_V6 = 48;

/** The overhead for parseIp's family (4: IPv4 or IPv4-mapped, 6: IPv6). */
export function wireOverhead(family: 4 | 6): number {
  return family === 4 ? WIRE_OVERHEAD_V4 : WIRE_OVERHEAD_V6;
}

/** The overhead of datagrams to an address given as text ("::ffff:a.b.c.d" is IPv4). */
export function wireOverheadOf(address: string): number {
  return address.includes(':') && !address.startsWith('::ffff:') ? WIRE_OVERHEAD_V6 : WIRE_OVERHEAD_V4;
}

function mix(h: number): number {
  h ^= h >>> 16; h = Math.imul(h, 0x45d9f3b); h ^= h >>> 16;
  return h >>> 0;
}

/** Whether the 16 bytes at b[o] are an IPv6 address (not IPv4-mapped): keyed by its /64. */
function isIpv6(b: Uint8Array, o: number): boolean {
  for (let i = 0; i < 10; i++) if (b[o + i] !== 0) return true;
  return b[o + 10] !== 0xff || b[o + 11] !== 0xff;
}

export class IpTable {
  size = 0;
  private cap: number;
  private keys: Uint8Array;
  credit: Float32Array;
  private tokens: Float32Array;
  private pushTokens: Float32Array;
  private relayTokens: Float32Array;
  private lastMs: Uint32Array; // ms since the table was made (wraps after 49 days; differences stay right)
  private readonly epoch: number;
  sessions: Uint32Array;
  private index: Int32Array;
  private freeSlots: Int32Array;
  private freeTop: number;
  private readonly wheel: ExpiryWheel;
  /** The key of the address being looked up: the address, or an IPv6 address's /64 (no allocation per request). */
  private readonly probe = new Uint8Array(ADDR_BYTES);

  constructor(readonly limits: IpLimits, private readonly now: () => number, initial = 1024) {
    this.cap = initial;
    this.keys = new Uint8Array(initial * ADDR_BYTES);
    this.credit = new Float32Array(initial);
    this.tokens = new Float32Array(initial);
    this.pushTokens = new Float32Array(initial);
    this.relayTokens = new Float32Array(initial);
    this.lastMs = new Uint32Array(initial);
    this.epoch = now();
    this.sessions = new Uint32Array(initial);
    this.index = new Int32Array(initial * 2);
    this.freeSlots = Int32Array.from({ length: initial }, (_, i) => initial - 1 - i);
    this.freeTop = initial;
    this.wheel = new ExpiryWheel(Math.ceil(limits.idleMs / limits.tickMs) + 1, initial, this.tick());
  }

  private msNow(): number { return (this.now() - this.epoch) >>> 0; }

  private tick(): number { return Math.floor(this.now() / this.limits.tickMs); }

  private hash(k: Uint8Array, off: number): number {
    let h = 0x811c9dc5;
    for (let i = 0; i < ADDR_BYTES; i++) h = Math.imul(h ^ k[off + i]!, 0x01000193);
    return mix(h);
  }

  /** Writes the key of the address at addr[off] into probe: the address, or (IPv6) its /64 with the rest zero. */
  private keyOf(addr: Uint8Array, off: number): Uint8Array {
    const k = this.probe;
    const v6 = isIpv6(addr, off);
    for (let j = 0; j < ADDR_BYTES; j++) k[j] = v6 && j >= 8 ? 0 : addr[off + j]!;
    return k;
  }

  /** The entry whose key is the probe's, or -1. */
  private find(): number {
    const k = this.probe, mask = this.index.length - 1;
    for (let i = this.hash(k, 0) & mask; ; i = (i + 1) & mask) {
      const cell = this.index[i]!;
      if (cell === EMPTY) return -1;
      const o = (cell - 1) * ADDR_BYTES;
      let same = true;
      for (let j = 0; j < ADDR_BYTES; j++) if (this.keys[o + j] !== k[j]) { same = false; break; }
      if (same) return cell - 1;
    }
  }

  /**
   * The entry for the IP (IPv6: the /64) of this address, created on first sight (full
   * token buckets, no credit), or -1 when the table is at capacity. Refreshes its idle timer.
   */
  touch(addr: Uint8Array, off: number): number {
    const key = this.keyOf(addr, off);
    let slot = this.find();
    if (slot < 0) {
      if (this.size >= this.limits.capacity) return -1;
      if (this.freeTop === 0) this.grow();
      slot = this.freeSlots[--this.freeTop]!;
      for (let j = 0; j < ADDR_BYTES; j++) this.keys[slot * ADDR_BYTES + j] = key[j]!;
      this.credit[slot] = 0;
      this.tokens[slot] = this.limits.burst;
      this.pushTokens[slot] = this.limits.pushBurst;
      this.relayTokens[slot] = this.limits.relayBurst;
      this.lastMs[slot] = this.msNow();
      this.sessions[slot] = 0;
      this.put(slot);
      this.size++;
    }
    this.wheel.schedule(slot, this.tick() + Math.ceil(this.limits.idleMs / this.limits.tickMs));
    return slot;
  }

  /** Refills both buckets for the time since the last request; adds credit for its `wireBytes`. */
  admit(slot: number, wireBytes: number): boolean {
    const now = this.msNow();
    const dt = ((now - this.lastMs[slot]!) >>> 0) / 1000;
    this.lastMs[slot] = now;
    const l = this.limits;
    this.tokens[slot] = Math.min(l.burst, this.tokens[slot]! + dt * l.rate);
    this.pushTokens[slot] = Math.min(l.pushBurst, this.pushTokens[slot]! + dt * l.pushRate);
    this.relayTokens[slot] = Math.min(l.relayBurst, this.relayTokens[slot]! + dt * l.relayRate);
    // banked up to maxCredit, but never less than this request's own 3x: a large request pays for its own reply
    this.credit[slot] = Math.min(Math.max(l.maxCredit, AMPLIFICATION_FACTOR * wireBytes), this.credit[slot]! + AMPLIFICATION_FACTOR * wireBytes);
    if (this.tokens[slot]! < 1) return false;
    this.tokens[slot]!--;
    return true;
  }

  takePushToken(slot: number): boolean {
    if (this.pushTokens[slot]! < 1) return false;
    this.pushTokens[slot]!--;
    return true;
  }

  takeRelayToken(slot: number): boolean {
    if (this.relayTokens[slot]! < 1) return false;
    this.relayTokens[slot]!--;
    return true;
  }

  /** Spends `bytes` of credit if the IP has them. */
  spend(slot: number, bytes: number): boolean {
    if (this.credit[slot]! < bytes) return false;
    this.credit[slot]! -= bytes;
    return true;
  }

  /** The entry of an address that already has one (a live session's IP always does). */
  slotOf(addr: Uint8Array, off: number): number {
    this.keyOf(addr, off);
    return this.find();
  }

  /** Whether the entry counts an IPv6 /64 (else an IPv4 address). */
  isIpv6Prefix(slot: number): boolean {
    return isIpv6(this.keys, slot * ADDR_BYTES);
  }

  /** Evicts entries idle past idleMs that hold no live session. */
  evictIdle(budget: number): boolean {
    return this.wheel.advance(this.tick(), budget, (slot) => {
      if (this.sessions[slot]! > 0) {
        this.wheel.schedule(slot, this.tick() + Math.ceil(this.limits.idleMs / this.limits.tickMs));
        return;
      }
      this.remove(slot);
    });
  }

  private put(slot: number): void {
    indexPut(this.index, this.hash(this.keys, slot * ADDR_BYTES), slot);
  }

  private remove(slot: number): void {
    indexErase(this.index, slot, (s) => this.hash(this.keys, s * ADDR_BYTES));
    this.freeSlots[this.freeTop++] = slot;
    this.size--;
  }

  private grow(): void {
    const old = this.cap, cap = old * 2;
    const keys = new Uint8Array(cap * ADDR_BYTES); keys.set(this.keys); this.keys = keys;
    const f32 = (a: Float32Array): Float32Array => { const b = new Float32Array(cap); b.set(a); return b; };
    const u32 = (a: Uint32Array): Uint32Array => { const b = new Uint32Array(cap); b.set(a); return b; };
    this.credit = f32(this.credit);
    this.tokens = f32(this.tokens);
    this.pushTokens = f32(this.pushTokens);
    this.relayTokens = f32(this.relayTokens);
    this.lastMs = u32(this.lastMs);
    this.sessions = u32(this.sessions);
    this.freeSlots = Int32Array.from({ length: cap }, (_, i) => (i < old ? cap - 1 - i : 0));
    this.freeTop = old;
    this.cap = cap;
    this.index = new Int32Array(cap * 2);
    for (let slot = 0; slot < old; slot++) this.put(slot); // every old slot is live: the free list was empty
    this.wheel.grow(cap);
  }

  get bytes(): number {
    return this.keys.byteLength + this.credit.byteLength + this.tokens.byteLength + this.pushTokens.byteLength + this.relayTokens.byteLength +
      this.lastMs.byteLength + this.sessions.byteLength + this.index.byteLength + this.freeSlots.byteLength;
  }
}
