// One shard's slice of the peer table, as struct-of-arrays.
//
// A session is a slot number. Its fields live in typed arrays indexed by slot,
// and two open-addressing hash tables (linear probing, backward-shift deletion,
// load <= 1/2) find a slot by source address+port and by shareId. No JS object
// exists per peer, so 1 M peers cost tens of bytes each instead of hundreds and
// the GC has nothing to trace. The rare override data lives in a sparse Map.
import { ADDR_BYTES } from '../protocol/address.js';
import { EMPTY, indexErase, indexPut } from './open-index.js';

export interface Override {
  ip: string | null;
  port: number; // 0 = not overridden
  multiaddr: string | null;
}

/** flags: the client proved it receives at its address (it sent back its shareId). */
export const VERIFIED = 1;
/** flags: the session has sent a keep-alive (pulse or alive), so a new announce from its address replaces it. */
export const KEPT_ALIVE = 2;
/** flags: a token session (it asked for a token at announce; set by the token code). Proven once it kept alive with its token. */
export const AUTH = 4;

function fnv(h: number, byte: number): number {
  return Math.imul(h ^ byte, 0x01000193);
}

function mix(h: number): number {
  h ^= h >>> 16; h = Math.imul(h, 0x45d9f3b); h ^= h >>> 16;
  return h >>> 0;
}

export class PeerTable {
  capacity: number;
  size = 0;
  readonly idLength: number;

  addr: Uint8Array; // 16 bytes per slot
  port: Uint16Array;
  socket: Uint8Array; // which of the tracker's sockets the peer talks to
  dialect: Uint8Array; // see protocol/dialect.ts
  flags: Uint8Array; // VERIFIED | KEPT_ALIVE | AUTH
  nat: Uint8Array; // protocol/nat.ts: what the client reported (0: nothing)
  relayExpiry: Uint32Array; // unix seconds the session's last relay credential expires (0: none yet)
  ids: Uint8Array; // idLength ASCII bytes per slot
  readonly overrides = new Map<number, Override>();
  /** The local candidates a session reported (protocol/local-candidates.ts): sparse, as overrides. */
  readonly local = new Map<number, readonly string[]>();

  private byAddr: Int32Array;
  private byId: Int32Array;
  private freeSlots: Int32Array;
  private freeTop = 0;
  private readonly onGrow: (capacity: number) => void;

  constructor(idLength: number, capacity = 1024, onGrow: (capacity: number) => void = () => {}) {
    this.idLength = idLength;
    this.capacity = capacity;
    this.onGrow = onGrow;
    this.addr = new Uint8Array(capacity * ADDR_BYTES);
    this.port = new Uint16Array(capacity);
    this.socket = new Uint8Array(capacity);
    this.dialect = new Uint8Array(capacity);
    this.flags = new Uint8Array(capacity);
    this.nat = new Uint8Array(capacity);
    this.relayExpiry = new Uint32Array(capacity);
    this.ids = new Uint8Array(capacity * idLength);
    this.byAddr = new Int32Array(capacity * 2);
    this.byId = new Int32Array(capacity * 2);
    this.freeSlots = new Int32Array(capacity);
    for (let i = 0; i < capacity; i++) this.freeSlots[i] = capacity - 1 - i;
    this.freeTop = capacity;
  }

  private addrHash(key: Uint8Array, off: number, port: number): number {
    let h = 0x811c9dc5;
    for (let i = 0; i < ADDR_BYTES; i++) h = fnv(h, key[off + i]!);
    return mix(fnv(fnv(h, port & 0xff), port >>> 8));
  }

  private idHashOfSlot(slot: number): number {
    let h = 0x811c9dc5;
    const o = slot * this.idLength;
    for (let i = 0; i < this.idLength; i++) h = fnv(h, this.ids[o + i]!);
    return mix(h);
  }

  private idHashOfString(id: string): number {
    let h = 0x811c9dc5;
    for (let i = 0; i < id.length; i++) h = fnv(h, id.charCodeAt(i) & 0xff);
    return mix(h);
  }

  /** The slot of the session at this address (16 bytes at key[off]) and port, or -1. */
  findByAddress(key: Uint8Array, off: number, port: number): number {
    const mask = this.byAddr.length - 1;
    for (let i = this.addrHash(key, off, port) & mask; ; i = (i + 1) & mask) {
      const cell = this.byAddr[i]!;
      if (cell === EMPTY) return -1;
      const slot = cell - 1;
      if (this.port[slot] === port && this.sameAddress(slot, key, off)) return slot;
    }
  }

  private sameAddress(slot: number, key: Uint8Array, off: number): boolean {
    const a = this.addr, o = slot * ADDR_BYTES;
    for (let i = ADDR_BYTES - 1; i >= 0; i--) if (a[o + i] !== key[off + i]) return false;
    return true;
  }

  /** The slot whose shareId is `id`, or -1. */
  findByShareId(id: string): number {
    if (id.length !== this.idLength) return -1;
    const mask = this.byId.length - 1;
    for (let i = this.idHashOfString(id) & mask; ; i = (i + 1) & mask) {
      const cell = this.byId[i]!;
      if (cell === EMPTY) return -1;
      if (this.shareIdEquals(cell - 1, id)) return cell - 1;
    }
  }

  /** Whether `id` is this slot's shareId (no string is made). */
  shareIdEquals(slot: number, id: string): boolean {
    const o = slot * this.idLength;
    for (let i = 0; i < this.idLength; i++) if (this.ids[o + i] !== id.charCodeAt(i)) return false;
    return true;
  }

  /** Adds a session; the address must not be in the table yet. */
  insert(key: Uint8Array, off: number, port: number, socket: number, shareId: string): number {
    if (this.freeTop === 0) this.grow();
    const slot = this.freeSlots[--this.freeTop]!;
    this.addr.set(key.subarray(off, off + ADDR_BYTES), slot * ADDR_BYTES);
    this.port[slot] = port;
    this.socket[slot] = socket;
    this.dialect[slot] = 0;
    this.flags[slot] = 0;
    this.nat[slot] = 0;
    this.relayExpiry[slot] = 0;
    this.writeShareId(slot, shareId);
    indexPut(this.byAddr, this.addrHash(key, off, port), slot);
    indexPut(this.byId, this.idHashOfSlot(slot), slot);
    this.size++;
    return slot;
  }

  /** Gives a live session a new shareId; the old one stops resolving at once. */
  replaceShareId(slot: number, shareId: string): void {
    indexErase(this.byId, slot, (s) => this.idHashOfSlot(s));
    this.writeShareId(slot, shareId);
    indexPut(this.byId, this.idHashOfSlot(slot), slot);
  }

  remove(slot: number): void {
    indexErase(this.byAddr, slot, (s) => this.addrHash(this.addr, s * ADDR_BYTES, this.port[s]!));
    indexErase(this.byId, slot, (s) => this.idHashOfSlot(s));
    this.overrides.delete(slot);
    this.local.delete(slot);
    this.freeSlots[this.freeTop++] = slot;
    this.size--;
  }

  shareId(slot: number): string {
    const o = slot * this.idLength;
    return String.fromCharCode.apply(null, this.ids.subarray(o, o + this.idLength) as unknown as number[]);
  }

  private writeShareId(slot: number, id: string): void {
    const o = slot * this.idLength;
    for (let i = 0; i < this.idLength; i++) this.ids[o + i] = id.charCodeAt(i);
  }

  private grow(): void {
    const old = this.capacity;
    const cap = old * 2;
    const grown = <T extends Uint8Array | Uint16Array | Uint32Array>(a: T, n: number): T => {
      const b = new (a.constructor as new (n: number) => T)(n);
      b.set(a);
      return b;
    };
    this.addr = grown(this.addr, cap * ADDR_BYTES);
    this.port = grown(this.port, cap);
    this.socket = grown(this.socket, cap);
    this.dialect = grown(this.dialect, cap);
    this.flags = grown(this.flags, cap);
    this.nat = grown(this.nat, cap);
    this.relayExpiry = grown(this.relayExpiry, cap);
    this.ids = grown(this.ids, cap * this.idLength);
    this.freeSlots = new Int32Array(cap);
    for (let i = 0; i < old; i++) this.freeSlots[i] = cap - 1 - i; // all old slots are in use
    this.freeTop = old;
    this.capacity = cap;
    // Rebuild both indexes at the new size (every old slot is live: the free list was empty).
    this.byAddr = new Int32Array(cap * 2);
    this.byId = new Int32Array(cap * 2);
    for (let s = 0; s < old; s++) {
      indexPut(this.byAddr, this.addrHash(this.addr, s * ADDR_BYTES, this.port[s]!), s);
      indexPut(this.byId, this.idHashOfSlot(s), s);
    }
    this.onGrow(cap);
  }

  /** Approximate bytes held by this table (for the bench and metrics). */
  get bytes(): number {
    return this.addr.byteLength + this.port.byteLength + this.socket.byteLength + this.dialect.byteLength + this.flags.byteLength + this.nat.byteLength + this.relayExpiry.byteLength +
      this.ids.byteLength + this.byAddr.byteLength + this.byId.byteLength + this.freeSlots.byteLength;
  }
}
