// Unit: IP parsing into 16-byte keys and formatting back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { canonicalIp, formatPeerAddr } from '../src/protocol/address.js';

test('canonical forms agree with the RFC 5952 rules', () => {
  const cases: [string, string][] = [
    ['1.2.3.4', '1.2.3.4'], ['255.255.255.255', '255.255.255.255'], ['::', '::'], ['::1', '::1'],
    ['::ffff:10.0.0.1', '10.0.0.1'], ['2001:DB8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], ['fe80::1%eth0', 'fe80::1'],
    ['1:0:0:0:0:0:0:0', '1::'], ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'], ['::2:3:4:5:6:7:8', '0:2:3:4:5:6:7:8'],
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
  ];
  for (const [input, want] of cases) assert.equal(canonicalIp(input), want, input);
});

test('rejects what node:net rejects', () => {
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.04', ':::', '1:2:3:4:5:6:7:8:9', '12345::', 'g::1', '1::2::3', 'localhost', '1.2.3.4:80', ':1', '1:']) {
    assert.equal(canonicalIp(bad), null, bad);
    assert.equal(isIP(bad.replace(/%.*/, '')) === 0, true, `node agrees ${bad} is invalid`);
  }
});

test('peeraddr brackets IPv6 only', () => {
  assert.equal(formatPeerAddr('1.2.3.4', 5), '1.2.3.4:5');
  assert.equal(formatPeerAddr('::1', 5), '[::1]:5');
});
