// Unit: the hashed timing wheel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ExpiryWheel } from '../src/shard/expiry-wheel.js';

function run(w: ExpiryWheel, now: number, budget = 1e9): number[] {
  const out: number[] = [];
  w.advance(now, budget, (s) => out.push(s));
  return out.sort((a, b) => a - b);
}

test('expires exactly at the scheduled tick, not before', () => {
  const w = new ExpiryWheel(10, 8);
  w.schedule(1, 5);
  w.schedule(2, 7);
  assert.deepEqual(run(w, 4), []);
  assert.deepEqual(run(w, 5), [1]);
  assert.deepEqual(run(w, 6), []);
  assert.deepEqual(run(w, 7), [2]);
  assert.equal(w.size, 0);
});

test('a peer refreshed just before expiry survives, and expires at its new tick', () => {
  const w = new ExpiryWheel(10, 8);
  w.schedule(3, 10);
  assert.deepEqual(run(w, 9), []);
  w.schedule(3, 19); // pulse at tick 9
  assert.deepEqual(run(w, 10), []);
  assert.deepEqual(run(w, 18), []);
  assert.deepEqual(run(w, 19), [3]);
});

test('wrap-around: ticks far beyond the wheel size land in reused buckets correctly', () => {
  const w = new ExpiryWheel(10, 64); // 16 buckets
  assert.equal(w.buckets, 16);
  let now = 0;
  for (let round = 0; round < 40; round++) { // 40 revolutions, slots reused every time
    for (let s = 0; s < 10; s++) w.schedule(s, now + 1 + s);
    for (let t = 1; t <= 10; t++) assert.deepEqual(run(w, now + t), [t - 1], `round ${round} tick ${t}`);
    now += 10;
  }
  assert.equal(w.size, 0);
});

test('an entry scheduled past one revolution is skipped until its tick (tolerated, not lost)', () => {
  const w = new ExpiryWheel(10, 8); // 16 buckets
  w.schedule(1, 20); // same bucket as tick 4
  assert.deepEqual(run(w, 4), []);
  assert.deepEqual(run(w, 19), []);
  assert.deepEqual(run(w, 20), [1]);
});

test('remove() unlinks from any position in a bucket list', () => {
  const w = new ExpiryWheel(10, 8);
  for (const s of [1, 2, 3, 4]) w.schedule(s, 5); // one bucket, list 4 3 2 1
  w.remove(3); w.remove(4); w.remove(1);
  w.remove(1); // removing twice is harmless
  assert.equal(w.size, 1);
  assert.deepEqual(run(w, 5), [2]);
});

test('a budget spreads a mass expiry over several calls without losing any', () => {
  const w = new ExpiryWheel(10, 10_000);
  for (let s = 0; s < 10_000; s++) w.schedule(s, 3);
  const seen = new Set<number>();
  let calls = 1;
  while (!w.advance(3, 1000, (s) => seen.add(s))) calls++;
  assert.equal(calls, 10, '10 calls of 1000 for 10 000 entries');
  assert.equal(seen.size, 10_000);
  assert.equal(w.size, 0);
});

test('after a stall longer than a revolution everything overdue expires in one pass', () => {
  const w = new ExpiryWheel(10, 8);
  w.schedule(1, 3); w.schedule(2, 12);
  assert.deepEqual(run(w, 1000), [1, 2]);
});

test('scheduling in the past expires at the next advance; grow() keeps entries', () => {
  const w = new ExpiryWheel(10, 2);
  run(w, 50);
  w.schedule(0, 10);
  w.grow(4);
  w.schedule(3, 52);
  assert.deepEqual(run(w, 50), [0]);
  assert.deepEqual(run(w, 52), [3]);
});
