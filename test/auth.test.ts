// Session tokens and tags (src/auth/): SipHash-2-4 against the reference vectors,
// and the token, tag and path-challenge formats of docs/security.md.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SessionKey } from '../src/auth/session-key.js';
import { sipKey, siphash128, siphash64 } from '../src/auth/siphash.js';
import { TAG_CHARS, decodeSecret, encode, secretOfToken, verifyTagged } from '../src/auth/tag.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('SipHash-2-4 gives the reference implementation\'s vectors (key 00..0f, message 00..n-1)', () => {
  const key = sipKey(Uint8Array.from({ length: 16 }, (_, i) => i));
  // vectors.h of the reference implementation, outputs as bytes
  const v64: Record<number, string> = { 0: '310e0edd47db6f72', 1: 'fd67dc93c539f874', 15: 'e545be4961ca29a1', 63: '724506eb4c328a95' };
  const v128: Record<number, string> = { 0: 'a3817f04ba25a8e66df67214c7550293', 1: 'da87c1d86b99af44347659119b22fc45' };
  for (const [n, want] of Object.entries(v64)) {
    const out = new Uint8Array(8);
    siphash64(key, Uint8Array.from({ length: Number(n) }, (_, i) => i), 0, Number(n), out);
    assert.equal(hex(out), want, `64-bit, ${n} bytes`);
  }
  for (const [n, want] of Object.entries(v128)) {
    const out = new Uint8Array(16);
    siphash128(key, Uint8Array.from({ length: Number(n) }, (_, i) => i), 0, Number(n), out);
    assert.equal(hex(out), want, `128-bit, ${n} bytes`);
  }
});

test('a token is <shareId>.<22 characters>; only the key that made it verifies it, and any change breaks it', () => {
  const a = new SessionKey(), b = new SessionKey();
  const token = a.tokenOf('AB0123456789');
  assert.match(token, /^AB0123456789\.[A-Za-z0-9_-]{22}$/);
  assert.equal(a.tokenOf('AB0123456789'), token, 'recomputed, not stored');
  assert.equal(a.verify(token, 12), true);
  assert.equal(b.verify(token, 12), false, 'another key');
  assert.equal(a.verify(token, 11), false, 'another shareId length');
  assert.equal(a.verify('AB0123456780' + token.slice(12), 12), false, 'another shareId');
  for (let i = 13; i < token.length; i++) {
    const c = token[i] === 'A' ? 'B' : 'A';
    assert.equal(a.verify(token.slice(0, i) + c + token.slice(i + 1), 12), false, `character ${i} changed`);
  }
});

test('a tracker message tagged for a session verifies with the token\'s secret, and not when a byte or the secret differs', () => {
  const k = new SessionKey();
  const token = k.tokenOf('AB0123456789');
  const body = Buffer.from('{"action":"income","data":{"peeraddr":"1.2.3.4:5"}');
  const tag = new Uint8Array(TAG_CHARS);
  k.tag('AB0123456789', body, 0, body.length, tag, 0);
  const msg = Buffer.concat([body, Buffer.from(',"tag":"'), tag, Buffer.from('"}')]);
  assert.doesNotThrow(() => JSON.parse(msg.toString()));
  const secret = secretOfToken(token)!;
  assert.equal(verifyTagged(msg, secret), true);
  const tampered = Buffer.from(msg);
  tampered[40] ^= 1;
  assert.equal(verifyTagged(tampered, secret), false);
  assert.equal(verifyTagged(msg, secretOfToken(new SessionKey().tokenOf('AB0123456789'))!), false);
  assert.equal(verifyTagged(body, secret), false, 'untagged');
});

test('a path challenge is bound to the session, the address and the port', () => {
  const k = new SessionKey();
  const addr = new Uint8Array(16); addr[10] = 0xff; addr[11] = 0xff; addr[12] = 127; addr[15] = 1;
  const c = new Uint8Array(TAG_CHARS);
  k.challenge('AB0123456789', addr, 0, 4000, c, 0);
  const text = Buffer.from(c).toString('latin1');
  assert.equal(k.checkChallenge('AB0123456789', addr, 0, 4000, text), true);
  assert.equal(k.checkChallenge('AB0123456789', addr, 0, 4001, text), false);
  assert.equal(k.checkChallenge('AB0123456780', addr, 0, 4000, text), false);
  addr[15] = 2;
  assert.equal(k.checkChallenge('AB0123456789', addr, 0, 4000, text), false);
});

test('secrets round-trip through base64url; malformed ones are refused', () => {
  const bytes = Uint8Array.from({ length: 16 }, (_, i) => i * 17);
  assert.equal(hex(decodeSecret(encode(bytes), 0)!), hex(bytes));
  assert.equal(decodeSecret('A'.repeat(21), 0), null);
  assert.equal(decodeSecret('A'.repeat(21) + '*', 0), null);
  assert.equal(decodeSecret('A'.repeat(21) + 'B', 0), null, 'the last 4 bits must be zero');
  assert.equal(secretOfToken('no-dot-here-at-all-xxxxxxxxxxxxxxx'), null);
  assert.equal(SessionKey.fromFileContents(Buffer.from('0123456789abcdef\n')).key.length, 16);
  assert.throws(() => SessionKey.fromFileContents(Buffer.from('short')));
});
