// Unit: the struct-of-arrays peer table and its two hash indexes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PeerTable } from '../src/shard/peer-table.js';

function key(n: number): Uint8Array {
  const k = new Uint8Array(16);
  k[10] = 0xff; k[11] = 0xff;
  k[12] = 10; k[13] = (n >>> 16) & 255; k[14] = (n >>> 8) & 255; k[15] = n & 255;
  return k;
}
const id = (n: number): string => ('id' + n.toString(36)).padEnd(12, '_');

test('insert, find by address+port and by shareId, remove', () => {
  const t = new PeerTable(12, 4);
  const a = t.insert(key(1), 0, 1000, 0, id(1));
  const b = t.insert(key(1), 0, 1001, 0, id(2)); // same ip, other port
  assert.equal(t.findByAddress(key(1), 0, 1000), a);
  assert.equal(t.findByAddress(key(1), 0, 1001), b);
  assert.equal(t.findByAddress(key(2), 0, 1000), -1);
  assert.equal(t.findByShareId(id(2)), b);
  assert.equal(t.shareId(a), id(1));
  t.remove(a);
  assert.equal(t.findByAddress(key(1), 0, 1000), -1);
  assert.equal(t.findByShareId(id(1)), -1);
  assert.equal(t.findByAddress(key(1), 0, 1001), b);
  assert.equal(t.size, 1);
});

test('grows past its capacity and keeps every entry findable', () => {
  let grownTo = 0;
  const t = new PeerTable(12, 4, (cap) => { grownTo = cap; });
  const slots = Array.from({ length: 5000 }, (_, n) => t.insert(key(n), 0, 2000, 0, id(n)));
  assert.ok(grownTo >= 5000);
  for (let n = 0; n < 5000; n++) {
    assert.equal(t.findByAddress(key(n), 0, 2000), slots[n]);
    assert.equal(t.findByShareId(id(n)), slots[n]);
  }
});

test('random inserts and removes agree with a Map (backward-shift deletion keeps chains intact)', () => {
  const t = new PeerTable(12, 16);
  const model = new Map<number, number>();
  let seed = 7;
  const rnd = (): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed; };
  for (let step = 0; step < 20000; step++) {
    const n = rnd() % 3000;
    if (model.has(n) && rnd() % 2 === 0) { t.remove(model.get(n)!); model.delete(n); }
    else if (!model.has(n)) model.set(n, t.insert(key(n), 0, 3000, 0, id(n)));
  }
  assert.equal(t.size, model.size);
  for (let n = 0; n < 3000; n++) {
    const want = model.has(n) ? model.get(n) : -1;
    assert.equal(t.findByAddress(key(n), 0, 3000), want, `address ${n}`);
    assert.equal(t.findByShareId(id(n)), want, `id ${n}`);
  }
});

test('replaceShareId retires the old id at once', () => {
  const t = new PeerTable(12, 4);
  const s = t.insert(key(1), 0, 1, 0, id(1));
  t.replaceShareId(s, id(99));
  assert.equal(t.findByShareId(id(1)), -1);
  assert.equal(t.findByShareId(id(99)), s);
  assert.equal(t.findByShareId('short'), -1);
});

test('costs well under 150 bytes per peer at 100 k peers', () => {
  const t = new PeerTable(12, 1024);
  for (let n = 0; n < 100_000; n++) t.insert(key(n), 0, 5, 0, id(n));
  const perPeer = t.bytes / t.size;
  assert.ok(perPeer < 150, `${perPeer.toFixed(1)} B/peer`);
});
