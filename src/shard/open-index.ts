// The open-addressing index both shard tables use: an Int32Array of slot + 1
// (0 = empty), linear probing, load kept at or under 1/2 by the owner. Lookups
// stay in each table, since they compare that table's own keys.

export const EMPTY = 0;

export function indexPut(index: Int32Array, hash: number, slot: number): void {
  const mask = index.length - 1;
  let i = hash & mask;
  while (index[i] !== EMPTY) i = (i + 1) & mask;
  index[i] = slot + 1;
}

/** Backward-shift deletion: keeps every probe chain intact without tombstones. */
export function indexErase(index: Int32Array, slot: number, hashOf: (slot: number) => number): void {
  const mask = index.length - 1;
  let i = hashOf(slot) & mask;
  while (index[i] !== slot + 1) {
    if (index[i] === EMPTY) throw new Error(`index corrupt: slot ${slot} not indexed`);
    i = (i + 1) & mask;
  }
  for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
    const cell = index[j]!;
    if (cell === EMPTY) break;
    const home = hashOf(cell - 1) & mask;
    // move cell j into the hole at i unless its home lies cyclically in (i, j]
    const inRange = i <= j ? home > i && home <= j : home > i || home <= j;
    if (!inRange) { index[i] = cell; i = j; }
  }
  index[i] = EMPTY;
}
