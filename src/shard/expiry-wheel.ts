// A hashed timing wheel over peer-table slots.
//
// Every live slot sits in exactly one bucket's doubly linked list (intrusive:
// next/prev are typed arrays indexed by slot, so there is no object per peer and
// no timer per peer). schedule() is O(1): unlink, link at the head of the bucket
// for its expiry tick. advance() visits only the buckets whose tick has come, and
// the wheel has more buckets than ticks in one ttl, so every entry found in a
// visited bucket is due: expiry work is proportional to what expires. Entries
// scheduled further out than one revolution are tolerated (they are skipped until
// their tick), which only happens if a caller schedules beyond the sized horizon.

const NONE = -1;
/** due[] value of a slot that is not on the wheel. Ticks stay far below it (2^32 ticks of 10 ms is 497 days). */
const UNSCHEDULED = 0xffffffff;

export class ExpiryWheel {
  private readonly mask: number;
  private readonly heads: Int32Array;
  private next: Int32Array;
  private prev: Int32Array;
  private due: Uint32Array; // expiry tick per slot, or UNSCHEDULED (4 bytes a slot: memory counts at millions)
  private cursor: number; // next tick to process
  private linked = 0;

  /** horizonTicks: the furthest ahead any entry will be scheduled. */
  constructor(horizonTicks: number, capacity: number, startTick = 0) {
    let size = 16;
    while (size <= horizonTicks + 1) size *= 2;
    this.mask = size - 1;
    this.heads = new Int32Array(size).fill(NONE);
    this.next = new Int32Array(capacity).fill(NONE);
    this.prev = new Int32Array(capacity).fill(NONE);
    this.due = new Uint32Array(capacity).fill(UNSCHEDULED);
    this.cursor = startTick;
  }

  get size(): number { return this.linked; }
  get buckets(): number { return this.mask + 1; }

  grow(capacity: number): void {
    const grow32 = (a: Int32Array): Int32Array => { const b = new Int32Array(capacity).fill(NONE); b.set(a); return b; };
    this.next = grow32(this.next);
    this.prev = grow32(this.prev);
    const due = new Uint32Array(capacity).fill(UNSCHEDULED);
    due.set(this.due);
    this.due = due;
  }

  isScheduled(slot: number): boolean { return this.due[slot] !== UNSCHEDULED; }

  /** The tick the slot expires at (only meaningful when isScheduled). */
  dueTick(slot: number): number { return this.due[slot]!; }

  /** (Re)schedules slot to expire at `tick`. A tick already past expires at the next advance(). */
  schedule(slot: number, tick: number): void {
    const at = tick < this.cursor ? this.cursor : tick;
    if (this.due[slot] === at) return; // already there: many requests land in one tick
    if (this.due[slot] !== UNSCHEDULED) this.unlink(slot);
    this.due[slot] = at;
    const b = at & this.mask;
    const head = this.heads[b]!;
    this.next[slot] = head;
    this.prev[slot] = NONE;
    if (head !== NONE) this.prev[head] = slot;
    this.heads[b] = slot;
    this.linked++;
  }

  remove(slot: number): void {
    if (this.due[slot] !== UNSCHEDULED) this.unlink(slot);
  }

  private unlink(slot: number): void {
    const n = this.next[slot]!, p = this.prev[slot]!;
    if (p !== NONE) this.next[p] = n;
    else this.heads[this.due[slot]! & this.mask] = n;
    if (n !== NONE) this.prev[n] = p;
    this.next[slot] = NONE;
    this.prev[slot] = NONE;
    this.due[slot] = UNSCHEDULED;
    this.linked--;
  }

  /**
   * Expires everything due at or before `now`, calling onExpire(slot) after the
   * slot is unlinked. Stops after `budget` expiries so a mass expiry is spread
   * over several turns of the event loop; returns true when it caught up.
   */
  advance(now: number, budget: number, onExpire: (slot: number) => void): boolean {
    // After a stall longer than a revolution, one pass over every bucket suffices.
    if (now - this.cursor > this.mask) this.cursor = now - this.mask;
    while (this.cursor <= now) {
      const b = this.cursor & this.mask;
      let slot = this.heads[b]!;
      while (slot !== NONE) {
        const after = this.next[slot]!;
        if (this.due[slot]! <= now) {
          if (budget-- <= 0) return false;
          this.unlink(slot);
          onExpire(slot);
        }
        slot = after;
      }
      if (this.cursor === now) break; // entries scheduled at `now` later this tick are caught next time
      this.cursor++;
    }
    return true;
  }
}
