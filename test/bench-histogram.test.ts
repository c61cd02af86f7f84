import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Histogram } from '../bench/histogram.js';

// Exact percentile with the same rank rule as the histogram (nearest rank).
function exact(sorted: number[], p: number): number {
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

// A deterministic PRNG so a failure is reproducible.
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function assertWithin(actual: number, expected: number, tolerance: number, what: string): void {
  const err = Math.abs(actual - expected) / Math.max(1, expected);
  assert.ok(err <= tolerance, `${what}: got ${actual}, want ${expected} (error ${(err * 100).toFixed(3)} %)`);
}

test('percentiles of a long-tailed latency sample are within 1 %', () => {
  const rand = rng(42);
  const h = new Histogram();
  const values: number[] = [];
  for (let i = 0; i < 200_000; i++) {
    // Log-normal-ish: 20 µs .. seconds, in nanoseconds.
    const v = Math.round(20_000 * Math.exp(rand() * 4 + (rand() < 0.01 ? 6 : 0)));
    values.push(v);
    h.record(v);
  }
  values.sort((a, b) => a - b);
  for (const p of [50, 90, 99, 99.9, 99.99]) {
    assertWithin(h.percentile(p), exact(values, p), 0.01, `p${p}`);
  }
  assert.equal(h.count, values.length);
  assert.equal(h.min, values[0]);
  assert.equal(h.max, values[values.length - 1]);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  assertWithin(h.mean(), mean, 1e-9, 'mean');
});

test('small values are exact', () => {
  const h = new Histogram();
  for (let v = 0; v < 256; v++) h.record(v);
  assert.equal(h.percentile(50), 127);
  assert.equal(h.percentile(100), 255);
  assert.equal(h.percentile(0), 0);
});

test('every bucket boundary stays within 1 % from 1 ns to an hour', () => {
  for (let v = 1; v < 3.6e12; v = Math.ceil(v * 1.37) + 1) {
    const h = new Histogram();
    h.record(v);
    h.record(v); // min/max clamp would hide bucket error for a single value
    const copy = new Histogram(h.counts); // merged copy has only bucket bounds
    assertWithin(copy.percentile(50), v, 0.01, `value ${v}`);
  }
});

test('merging per-thread histograms equals recording into one', () => {
  const rand = rng(7);
  const whole = new Histogram();
  const parts = [new Histogram(), new Histogram(), new Histogram()];
  for (let i = 0; i < 30_000; i++) {
    const v = Math.round(rand() * 5_000_000);
    whole.record(v);
    parts[i % 3]!.record(v);
  }
  const merged = new Histogram();
  for (const part of parts) merged.add(part.counts);
  assert.equal(merged.count, whole.count);
  for (const p of [50, 99, 99.9]) assert.equal(merged.percentile(p), whole.percentile(p));
});

test('an empty histogram reports NaN, not zero', () => {
  const h = new Histogram();
  assert.ok(Number.isNaN(h.percentile(99)));
  assert.ok(Number.isNaN(h.mean()));
});
