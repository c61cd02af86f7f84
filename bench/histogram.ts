// A small log-bucketed latency histogram in the spirit of HdrHistogram.
//
// Values are non-negative integers (the load generator records nanoseconds).
// Values below 2^(SUB_BITS+1) get a bucket each; above that, every power of two
// is split into 2^SUB_BITS equal sub-buckets, so a bucket is never wider than
// 1/128 of its lower bound. Reporting a bucket's midpoint keeps every
// percentile within ~0.4 % of the exact value, in constant memory, and two
// histograms merge by adding their counts (one per worker thread).

const SUB_BITS = 7;
const SUB = 1 << SUB_BITS; // 128 sub-buckets per power of two
const LINEAR = SUB * 2; // values 0..255 are exact
const MAX_EXP = 48; // 2^48 ns is ~3 days: more than any bench will see

/** Number of counters needed to cover 0 .. 2^MAX_EXP. */
export const BUCKETS = LINEAR + (MAX_EXP - SUB_BITS) * SUB;

function indexOf(value: number): number {
  if (value < LINEAR) return value;
  // Position of the highest set bit; Math.log2 is exact for powers of two,
  // and the correction below covers rounding just under one.
  let msb = Math.floor(Math.log2(value));
  if (2 ** msb > value) msb -= 1;
  else if (2 ** (msb + 1) <= value) msb += 1;
  const shift = msb - SUB_BITS;
  const mantissa = Math.floor(value / 2 ** shift); // in [SUB, 2*SUB)
  const index = LINEAR + (shift - 1) * SUB + (mantissa - SUB);
  return index < BUCKETS ? index : BUCKETS - 1;
}

function lowerBound(index: number): number {
  if (index < LINEAR) return index;
  const shift = Math.floor((index - LINEAR) / SUB) + 1;
  const mantissa = ((index - LINEAR) % SUB) + SUB;
  return mantissa * 2 ** shift;
}

function width(index: number): number {
  if (index < LINEAR) return 1;
  return 2 ** (Math.floor((index - LINEAR) / SUB) + 1);
}

export class Histogram {
  readonly counts: Float64Array;
  count = 0;
  min = Infinity;
  max = 0;
  private sum = 0;

  constructor(counts?: Float64Array) {
    this.counts = new Float64Array(BUCKETS);
    if (counts) this.add(counts);
  }

  record(value: number): void {
    const v = value > 0 ? Math.round(value) : 0;
    this.counts[indexOf(v)]! += 1;
    this.count += 1;
    this.sum += v;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
  }

  /** Adds another histogram's counters (e.g. one posted by a worker thread). */
  add(counts: Float64Array): void {
    for (let i = 0; i < BUCKETS; i++) {
      const c = counts[i]!;
      if (c === 0) continue;
      this.counts[i]! += c;
      this.count += c;
      const lo = lowerBound(i);
      const mid = lo + (width(i) - 1) / 2;
      this.sum += c * mid;
      if (lo < this.min) this.min = lo;
      if (lo + width(i) - 1 > this.max) this.max = lo + width(i) - 1;
    }
  }

  mean(): number {
    return this.count === 0 ? NaN : this.sum / this.count;
  }

  /** Value at percentile p (0..100): the midpoint of the bucket holding it. */
  percentile(p: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) {
        const mid = lowerBound(i) + (width(i) - 1) / 2;
        return Math.min(Math.max(mid, this.min), this.max);
      }
    }
    return this.max;
  }
}
