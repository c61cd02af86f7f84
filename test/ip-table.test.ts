// Unit: per-IP state (token buckets, reply credit, session count, idle eviction), on a fake clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IpTable, type IpLimits } from '../src/shard/ip-table.js';

function ip(n: number): Uint8Array {
  const k = new Uint8Array(16);
  k[10] = 0xff; k[11] = 0xff; k[12] = 10; k[13] = (n >> 16) & 255; k[14] = (n >> 8) & 255; k[15] = n & 255;
  return k;
}
const limits: IpLimits = { rate: 10, burst: 5, relayRate: 4, relayBurst: 16, pushRate: 1, pushBurst: 2, maxCredit: 1000, capacity: 100_000, idleMs: 60_000, tickMs: 1000 };

test('the request bucket allows the burst, then refills at the rate', () => {
  let now = 0;
  const t = new IpTable(limits, () => now);
  const s = t.touch(ip(1), 0);
  let allowed = 0;
  for (let i = 0; i < 20; i++) if (t.admit(s, 10)) allowed++;
  assert.equal(allowed, 5);
  now += 500; // 0.5 s at 10/s: 5 more
  allowed = 0;
  for (let i = 0; i < 20; i++) if (t.admit(s, 10)) allowed++;
  assert.equal(allowed, 5);
});

test('credit is 3x the bytes received, capped, and spent only when there is enough', () => {
  const t = new IpTable(limits, () => 0);
  const s = t.touch(ip(2), 0);
  t.admit(s, 20);
  assert.equal(t.spend(s, 61), false);
  assert.equal(t.spend(s, 60), true);
  assert.equal(t.spend(s, 1), false);
  for (let i = 0; i < 4; i++) t.admit(s, 300);
  assert.equal(t.credit[s], 1000, 'capped at maxCredit');
  // but never below one request's own 3x: a large request pays for its own reply
  t.admit(s, 1000);
  assert.equal(t.credit[s], 3000, 'one 1000-byte request: 3000 of credit, past maxCredit');
  t.admit(s, 20);
  assert.equal(t.credit[s], 1000, 'banked again only up to maxCredit');
});

test('the push bucket is separate from the request bucket', () => {
  const t = new IpTable(limits, () => 0);
  const s = t.touch(ip(3), 0);
  assert.equal(t.takePushToken(s), true);
  assert.equal(t.takePushToken(s), true);
  assert.equal(t.takePushToken(s), false);
  assert.equal(t.admit(s, 1), true);
});

test('idle entries without sessions are evicted; entries with sessions are kept', () => {
  let now = 0;
  const t = new IpTable(limits, () => now);
  const idle = t.touch(ip(4), 0);
  const busy = t.touch(ip(5), 0);
  t.sessions[busy] = 1;
  t.admit(idle, 100);
  now = 59_000; t.evictIdle(1e9);
  assert.equal(t.size, 2);
  now = 62_000; t.evictIdle(1e9);
  assert.equal(t.size, 1);
  assert.equal(t.slotOf(ip(4), 0), -1);
  assert.equal(t.slotOf(ip(5), 0), busy);
  const again = t.touch(ip(4), 0);
  assert.equal(t.credit[again], 0, 'a returning IP starts with no credit');
});

test('at capacity new IPs are not tracked; the table grows below it', () => {
  const t = new IpTable({ ...limits, capacity: 3000 }, () => 0);
  for (let n = 0; n < 3000; n++) assert.ok(t.touch(ip(n), 0) >= 0);
  assert.equal(t.touch(ip(5000), 0), -1);
  for (let n = 0; n < 3000; n += 97) assert.ok(t.slotOf(ip(n), 0) >= 0, `ip ${n} still found after growth`);
});

/** The 16 bytes of an IPv6 address given as 8 groups. */
function v6(...groups: number[]): Uint8Array {
  const k = new Uint8Array(16);
  groups.forEach((g, i) => { k[2 * i] = g >> 8; k[2 * i + 1] = g & 255; });
  return k;
}

test('an IPv6 client is counted by its /64: every address of one /64 shares one entry (budgets and sessions); IPv4 stays per address', () => {
  const t = new IpTable(limits, () => 0);
  const a = t.touch(v6(0x2001, 0xdb8, 1, 2, 0, 0, 0, 1), 0);
  const b = t.touch(v6(0x2001, 0xdb8, 1, 2, 0xdead, 0xbeef, 7, 9), 0);
  assert.equal(b, a, 'two addresses of 2001:db8:1:2::/64: one entry');
  assert.equal(t.size, 1);
  assert.equal(t.isIpv6Prefix(a), true);
  t.sessions[a] = 3;
  assert.equal(t.sessions[t.slotOf(v6(0x2001, 0xdb8, 1, 2, 1, 1, 1, 1), 0)], 3, 'its session count, found from any address in it');
  // the request bucket is the /64's: 5 requests from five addresses spend it
  for (let i = 0; i < 5; i++) assert.equal(t.admit(t.touch(v6(0x2001, 0xdb8, 1, 2, 0, 0, 0, 100 + i), 0), 10), true);
  assert.equal(t.admit(t.touch(v6(0x2001, 0xdb8, 1, 2, 0, 0, 0, 200), 0), 10), false);
  // another /64 (one bit apart in the prefix) is another entry
  const c = t.touch(v6(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1), 0);
  assert.notEqual(c, a);
  // IPv4 (IPv4-mapped) is per address, though ::ffff:0:0/96 lies in ::/64; ::1 is in ::/64 and keyed so
  const v4a = t.touch(ip(1), 0), v4b = t.touch(ip(2), 0);
  assert.notEqual(v4a, v4b);
  assert.equal(t.isIpv6Prefix(v4a), false);
  const loop = t.touch(v6(0, 0, 0, 0, 0, 0, 0, 1), 0);
  assert.notEqual(loop, v4a);
  assert.equal(t.touch(v6(0, 0, 0, 0, 0, 0, 0, 2), 0), loop);
  assert.equal(t.size, 5);
});
