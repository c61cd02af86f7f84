// The order in which sessions that proved nothing give way to a new announce when
// the shard's table is full (issue 23: forged announces must not crowd out real
// clients).
//
// Two intrusive FIFO lists over peer-table slots, like the expiry wheel's (next/prev
// typed arrays indexed by slot: 8 bytes a slot, no object per session):
//   NEVER_KEPT_ALIVE  sessions that announced and sent no keep-alive since: anyone can
//                     make one with a forged source address. They give way first.
//   NOT_PROVEN        sessions that kept alive but never proved they receive at their
//                     address (no VERIFIED, no token used). They give way next.
// A proven session is on neither list, so it never gives way.
//
// Every session of a list has the same ttl (announceTtl, ttl), and a session goes to
// its list's tail each time it is refreshed, so the head is the one that expires
// soonest: least recently heard of. In NOT_PROVEN that ordering matters: an attacker
// who keeps forged sessions alive must refresh every one of them more often than the
// real unproven clients (the desktop client: an alive every 2 s) to make them go first.
//
// Flags can change without the list being told (keep-alive.ts sets VERIFIED after
// the refresh; another handler may mark a session proven): the caller checks the head
// and drops a stale one (amortised O(1): a slot leaves a list at most once per time
// it joined it).

export const NEVER_KEPT_ALIVE = 0;
export const NOT_PROVEN = 1;

const END = -1;
/** next/prev of a slot that is on no list. */
const OFF = -2;

export class GiveWayQueues {
  private next: Int32Array;
  private prev: Int32Array;
  private readonly heads = new Int32Array([END, END]);
  private readonly tails = new Int32Array([END, END]);

  constructor(capacity: number) {
    this.next = new Int32Array(capacity).fill(OFF);
    this.prev = new Int32Array(capacity).fill(OFF);
  }

  grow(capacity: number): void {
    const grow = (a: Int32Array): Int32Array => { const b = new Int32Array(capacity).fill(OFF); b.set(a); return b; };
    this.next = grow(this.next);
    this.prev = grow(this.prev);
  }

  /** The session that gives way first in `list`, or -1. */
  head(list: number): number { return this.heads[list]!; }

  /** Whether the slot is on a list. */
  has(slot: number): boolean { return this.prev[slot] !== OFF; }

  /** Puts the slot at the tail of `list` (last to give way), off any list it was on. */
  push(slot: number, list: number): void {
    if (this.tails[list] === slot) return; // refreshed again: already last (the common case of a pulse)
    if (this.prev[slot] !== OFF) this.unlink(slot);
    const tail = this.tails[list]!;
    this.prev[slot] = tail;
    this.next[slot] = END;
    if (tail === END) this.heads[list] = slot; else this.next[tail] = slot;
    this.tails[list] = slot;
  }

  /** Takes the slot off its list, if it is on one. */
  remove(slot: number): void {
    if (this.prev[slot] !== OFF) this.unlink(slot);
  }

  private unlink(slot: number): void {
    const n = this.next[slot]!, p = this.prev[slot]!;
    // a slot at an end of a list is that list's head or tail: no list number is kept per slot
    if (p === END) this.heads[this.heads[0] === slot ? 0 : 1] = n; else this.next[p] = n;
    if (n === END) this.tails[this.tails[0] === slot ? 0 : 1] = p; else this.prev[n] = p;
    this.next[slot] = OFF;
    this.prev[slot] = OFF;
  }

  get bytes(): number { return this.next.byteLength + this.prev.byteLength; }
}
