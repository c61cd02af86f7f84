// One shard's sessions: the peer table and its expiry wheel, each session's count
// in its IP's entry, and what a session is shown as. Where a session is, and what
// others are told of it, is decided here; the request handlers ask.
import { ADDR_BYTES, formatIp, isV4Mapped } from '../protocol/address.js';
import type { PeerView } from '../protocol/dialect.js';
import { ExpiryWheel } from './expiry-wheel.js';
import type { IpTable } from './ip-table.js';
import type { ShardOptions } from './options.js';
import { GiveWayQueues, NEVER_KEPT_ALIVE, NOT_PROVEN } from './give-way.js';
import { AUTH, KEPT_ALIVE, PeerTable, VERIFIED } from './peer-table.js';
import { ShareIdMinter } from './share-id.js';

export class Sessions {
  readonly table: PeerTable;
  readonly wheel: ExpiryWheel;
  readonly minter: ShareIdMinter;
  /** ~100 ticks per ttl, between 10 ms and 1 s: expiry lands within 1 % of the ttl. */
  readonly tickMs: number;
  readonly ttlTicks: number;
  /** How long a session lives until its first keep-alive (announceTtl, at most the ttl). */
  readonly announceTicks: number;
  /** Who gives way to a new announce when the table is full (give-way.ts). */
  readonly giveWay: GiveWayQueues;

  constructor(private readonly opts: ShardOptions, private readonly ips: IpTable, private readonly now: () => number) {
    this.tickMs = Math.min(1000, Math.max(10, Math.floor(opts.ttlMs / 100)));
    this.ttlTicks = Math.ceil(opts.ttlMs / this.tickMs);
    this.announceTicks = Math.min(this.ttlTicks, Math.ceil(opts.announceTtlMs / this.tickMs));
    this.table = new PeerTable(opts.shareIdLength, 1024, (cap) => { this.wheel.grow(cap); this.giveWay.grow(cap); });
    this.wheel = new ExpiryWheel(this.ttlTicks + 1, this.table.capacity, this.tick());
    this.giveWay = new GiveWayQueues(this.table.capacity);
    this.minter = new ShareIdMinter(opts.shareIdLength);
  }

  tick(): number {
    return Math.floor(this.now() / this.tickMs);
  }

  get size(): number { return this.table.size; }

  /** The live session at this address (16 bytes at key[0]) and port, or -1. */
  at(key: Uint8Array, port: number): number {
    return this.table.findByAddress(key, 0, port);
  }

  /** Whether the session at this address proved it receives there (a shareId came back from it). */
  verifiedAt(key: Uint8Array, port: number): boolean {
    const slot = this.at(key, port);
    return slot >= 0 && (this.table.flags[slot]! & VERIFIED) !== 0;
  }

  isVerified(slot: number): boolean {
    return (this.table.flags[slot]! & VERIFIED) !== 0;
  }

  /**
   * Whether the session proved anything, so it never gives way to a new announce: it
   * proved it receives at its address (VERIFIED), or it is a token session that kept
   * alive with its token (a forged announce can ask for a token too, but never learns it).
   */
  isProven(slot: number): boolean {
    const f = this.table.flags[slot]!;
    return (f & VERIFIED) !== 0 || (f & (AUTH | KEPT_ALIVE)) === (AUTH | KEPT_ALIVE);
  }

  /** A new session at key:port with a fresh shareId of `bucket`, counted in its IP's entry, live for announceTtl. */
  create(key: Uint8Array, port: number, socket: number, bucket: number): number {
    const slot = this.table.insert(key, 0, port, socket, this.mint(bucket));
    this.countForIp(key);
    this.keepAlive(slot);
    return slot;
  }

  /**
   * Live for another ttl from now, or (no keep-alive yet: an announce) another
   * announceTtl; and last in its give-way list, or off them once it is proven.
   */
  keepAlive(slot: number): void {
    if ((this.table.flags[slot]! & KEPT_ALIVE) === 0) {
      this.wheel.schedule(slot, this.tick() + this.announceTicks);
      this.giveWay.push(slot, NEVER_KEPT_ALIVE);
      return;
    }
    this.wheel.schedule(slot, this.tick() + this.ttlTicks);
    if (this.isProven(slot)) this.giveWay.remove(slot);
    else this.giveWay.push(slot, NOT_PROVEN);
  }

  /** A restored session (session-block.ts): live for what it had left, at most its ttl or announceTtl; in its give-way list. */
  restore(slot: number, ttlMs: number): void {
    const most = (this.table.flags[slot]! & KEPT_ALIVE) === 0 ? this.announceTicks : this.ttlTicks;
    const ticks = Math.min(most, Math.max(1, Math.ceil(ttlMs / this.tickMs)));
    this.wheel.schedule(slot, this.tick() + ticks);
    if (this.isProven(slot)) this.giveWay.remove(slot);
    else this.giveWay.push(slot, (this.table.flags[slot]! & KEPT_ALIVE) === 0 ? NEVER_KEPT_ALIVE : NOT_PROVEN);
  }

  /**
   * Makes room for a new announce in a full table: ends the session that gives way
   * first (one that never kept alive, the oldest first; else the least recently kept
   * alive that never proved anything). Returns which list it came from, or -1: every
   * session is proven, none gives way.
   */
  evictForNew(): number {
    const t = this.table, q = this.giveWay;
    for (let slot = q.head(NEVER_KEPT_ALIVE); slot >= 0; slot = q.head(NEVER_KEPT_ALIVE)) {
      if ((t.flags[slot]! & KEPT_ALIVE) === 0) { this.remove(slot); return NEVER_KEPT_ALIVE; }
      // flagged kept alive without a refresh: where it belongs now
      if (this.isProven(slot)) q.remove(slot); else q.push(slot, NOT_PROVEN);
    }
    for (let slot = q.head(NOT_PROVEN); slot >= 0; slot = q.head(NOT_PROVEN)) {
      if (!this.isProven(slot)) { this.remove(slot); return NOT_PROVEN; }
      q.remove(slot); // proven since it was last refreshed
    }
    return -1;
  }

  /** A fresh shareId for `bucket`, not live in this shard. */
  mint(bucket: number): string {
    return this.minter.mint(bucket, (id) => this.table.findByShareId(id) >= 0);
  }

  /** Ends a session: off the wheel, out of the table and its IP's count. */
  remove(slot: number): void {
    this.wheel.remove(slot);
    this.dropFromTable(slot);
  }

  /** Expires what is due; false when the budget ran out first. */
  expireDue(budget: number, onExpired: () => void): boolean {
    return this.wheel.advance(this.tick(), budget, (slot) => {
      this.dropFromTable(slot);
      onExpired();
    });
  }

  /** Counts a session in its IP's entry (announced, restored and synthetic sessions alike). */
  countForIp(key: Uint8Array): void {
    const ip = this.ips.touch(key, 0);
    if (ip >= 0) this.ips.sessions[ip]!++;
  }

  /**
   * Moves a session to the address key:port (a token session that proved it receives
   * there, tokens.ts): same shareId, nat, override and relay state; the old address
   * stops resolving, and the session is counted in its new IP's entry. A session
   * still at that address here is gone: its address now belongs to the mover.
   */
  moveTo(slot: number, key: Uint8Array, port: number, socket: number, proven = true): void {
    const t = this.table;
    const there = t.findByAddress(key, 0, port);
    if (there >= 0 && there !== slot) this.remove(there);
    const old = this.ips.slotOf(t.addr, slot * ADDR_BYTES);
    if (old >= 0 && this.ips.sessions[old]! > 0) this.ips.sessions[old]!--;
    t.move(slot, key, 0, port, socket);
    this.countForIp(key);
    if (proven) t.flags[slot]! |= VERIFIED;
  }

  // The desktop client's v0.1.2 puts an 8-hex "id" in every alive, known to it and the
  // tracker only: a NAT that gives it a new port (after sleep, say) is followed by it.
  // Sparse: only sessions that send one pay for the two entries.
  private readonly slotOfDesktopId = new Map<number, number>();
  private readonly desktopIdOfSlot = new Map<number, number>();

  /** Remembers the desktop id a session's alive carried. */
  noteDesktopId(slot: number, id: number): void {
    const had = this.desktopIdOfSlot.get(slot);
    if (had === id) return;
    if (had !== undefined && this.slotOfDesktopId.get(had) === slot) this.slotOfDesktopId.delete(had);
    this.desktopIdOfSlot.set(slot, id);
    this.slotOfDesktopId.set(id, slot);
  }

  /** The live session whose alive carried this id from the IP in key[0, 16), or -1. */
  desktopSessionAt(key: Uint8Array, id: number): number {
    const slot = this.slotOfDesktopId.get(id);
    if (slot === undefined) return -1;
    const a = this.table.addr, o = slot * ADDR_BYTES;
    for (let i = 0; i < ADDR_BYTES; i++) if (a[o + i] !== key[i]) return -1;
    return slot;
  }

  private dropFromTable(slot: number): void {
    this.giveWay.remove(slot);
    const id = this.desktopIdOfSlot.get(slot);
    if (id !== undefined) {
      this.desktopIdOfSlot.delete(slot);
      if (this.slotOfDesktopId.get(id) === slot) this.slotOfDesktopId.delete(id);
    }
    const ip = this.ips.slotOf(this.table.addr, slot * ADDR_BYTES);
    if (ip >= 0 && this.ips.sessions[ip]! > 0) this.ips.sessions[ip]!--;
    this.table.remove(slot);
  }

  /** Keeps the session's local candidates ([] forgets them). */
  setLocal(slot: number, local: readonly string[]): void {
    if (local.length === 0) this.table.local.delete(slot);
    else this.table.local.set(slot, local);
  }

  /** What a peer is shown of this session: its reported (possibly overridden) address. */
  view(slot: number): PeerView {
    const t = this.table;
    const o = t.overrides.get(slot);
    const ip = o?.ip ?? formatIp(t.addr, slot * ADDR_BYTES);
    const local = t.local.get(slot);
    return {
      ...(local !== undefined ? { local } : {}),
      ip,
      port: o?.port || t.port[slot]!,
      ipv6: ip.includes(':'),
      shareId: t.shareId(slot),
      multiaddr: o?.multiaddr ?? null,
      nat: t.nat[slot]!,
      // proved where others are told to send: an override of ip or port was never proved
      verified: this.isVerified(slot) && (o === undefined || (o.ip === null && o.port === 0)),
    };
  }

  /** The address text the session's socket sends to (IPv4 on a dual-stack socket is IPv4-mapped). */
  sendAddress(slot: number): string {
    const t = this.table;
    const ip = formatIp(t.addr, slot * ADDR_BYTES);
    return this.opts.socketTypes[t.socket[slot]!] === 'udp6' && isV4Mapped(t.addr, slot * ADDR_BYTES) ? '::ffff:' + ip : ip;
  }
}
