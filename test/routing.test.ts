// Unit: address -> bucket -> shard, and shareId -> the same bucket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BUCKETS, addressBucket, bucketOfShareId, bucketPrefix, shardOfBucket } from '../src/routing.js';
import { ShareIdMinter } from '../src/shard/share-id.js';

test('a shareId minted for an address routes to the address\'s shard, for any shard count', () => {
  const minter = new ShareIdMinter(12);
  for (let i = 0; i < 2000; i++) {
    const bucket = addressBucket(`192.0.${i >> 8}.${i % 256}`);
    const id = minter.mint(bucket, () => false);
    assert.equal(bucketOfShareId(id), bucket);
    for (const shards of [1, 2, 3, 7, 64]) assert.equal(shardOfBucket(bucketOfShareId(id), shards), shardOfBucket(bucket, shards));
  }
});

test('every bucket round-trips through its two-character prefix', () => {
  for (let b = 0; b < BUCKETS; b++) assert.equal(bucketOfShareId(bucketPrefix(b) + 'xxxxxxxxxx'), b);
  assert.equal(bucketOfShareId('!a'), -1);
  assert.equal(bucketOfShareId('a'), -1);
});

test('an IPv4-mapped address routes like the plain IPv4 address; ports and zones do not matter', () => {
  assert.equal(addressBucket('::ffff:203.0.113.9'), addressBucket('203.0.113.9'));
  assert.equal(addressBucket('fe80::1%eth0'), addressBucket('fe80::1'));
  assert.notEqual(addressBucket('203.0.113.9'), addressBucket('203.0.113.10'));
});

test('IPv6 routes by its /64: every address of one /64 (any text form) in one bucket, /64s spread evenly', () => {
  const b = addressBucket('2001:db8:64:1::1');
  for (const a of ['2001:db8:64:1::2', '2001:db8:64:1:ffff:ffff:ffff:ffff', '2001:0db8:0064:0001:0:0:0:abcd', '2001:DB8:64:1::9%eth0']) {
    assert.equal(addressBucket(a), b, a);
  }
  // the /64s themselves spread like IPv4 addresses
  for (const shards of [2, 3, 8]) {
    const counts = new Array<number>(shards).fill(0);
    for (let i = 0; i < 40_000; i++) counts[shardOfBucket(addressBucket(`2001:db8:${(i >> 8) & 255}:${i & 255}::1`), shards)]!++;
    for (const c of counts) assert.ok(Math.abs(c - 40_000 / shards) < 0.1 * 40_000 / shards, `${shards} shards: ${counts.join(',')}`);
  }
});

test('addresses spread evenly over shards (each within 10 % of fair)', () => {
  for (const shards of [2, 3, 8]) {
    const counts = new Array<number>(shards).fill(0);
    for (let i = 0; i < 40_000; i++) counts[shardOfBucket(addressBucket(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`), shards)]!++;
    for (const c of counts) assert.ok(Math.abs(c - 40_000 / shards) < 0.1 * 40_000 / shards, `${shards} shards: ${counts.join(',')}`);
  }
});

test('minted ids are unique and use only the URL-safe alphabet', () => {
  const minter = new ShareIdMinter(8);
  const seen = new Set<string>();
  for (let i = 0; i < 10_000; i++) {
    const id = minter.mint(5, (x) => seen.has(x));
    assert.match(id, /^[0-9A-Za-z_-]{8}$/);
    seen.add(id);
  }
  assert.equal(minter.bucketOf('05' + 'aaaaaa'), 5);
  assert.equal(minter.bucketOf('05' + 'aaaaa!'), -1);
  assert.equal(minter.bucketOf('05aaaaaaa'), -1);
});
