// Session tokens and tags (src/auth/): SipHash-2-4 against the reference vectors,
// and the token, tag and path-challenge formats of docs/security.md.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SessionKey } from '../src/auth/session-key.js';
import { sipKey, siphash128, siphash64 } from '../src/auth/siphash.js';
import { TAG_CHARS, decodeSecret, encode, secretOfToken, verifyTagged } from '../src/auth/tag.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('SipHash-2-4 gives the reference implementation\'s vectors (key 00..0f, message 00..n-1, every length 0..63)', () => {
  const key = sipKey(Uint8Array.from({ length: 16 }, (_, i) => i));
  // vectors.h of the reference implementation (64-bit output, message lengths 0..63), as bytes
  const v64 = [
    '310e0edd47db6f72', 'fd67dc93c539f874', '5a4fa9d909806c0d', '2d7efbd796666785',
    'b7877127e09427cf', '8da699cd64557618', 'cee3fe586e46c9cb', '37d1018bf50002ab',
    '6224939a79f5f593', 'b0e4a90bdf82009e', 'f3b9dd94c5bb5d7a', 'a7ad6b22462fb3f4',
    'fbe50e86bc8f1e75', '903d84c02756ea14', 'eef27a8e90ca23f7', 'e545be4961ca29a1',
    'db9bc2577fcc2a3f', '9447be2cf5e99a69', '9cd38d96f0b3c14b', 'bd6179a71dc96dbb',
    '98eea21af25cd6be', 'c7673b2eb0cbf2d0', '883ea3e395675393', 'c8ce5ccd8c030ca8',
    '94af49f6c650adb8', 'eab8858ade92e1bc', 'f315bb5bb835d817', 'adcf6b0763612e2f',
    'a5c91da7acaa4dde', '716595876650a2a6', '28ef495c53a387ad', '42c341d8fa92d832',
    'ce7cf2722f512771', 'e37859f94623f3a7', '381205bb1ab0e012', 'ae97a10fd434e015',
    'b4a31508beff4d31', '81396229f0907902', '4d0cf49ee5d4dcca', '5c73336a76d8bf9a',
    'd0a704536ba93e0e', '925958fcd6420cad', 'a915c29bc8067318', '952b79f3bc0aa6d4',
    'f21df2e41d4535f9', '87577519048f53a9', '10a56cf5dfcd9adb', 'eb75095ccd986cd0',
    '51a9cb9ecba312e6', '96afadfc2ce666c7', '72fe52975a4364ee', '5a1645b276d592a1',
    'b274cb8ebf87870a', '6f9bb4203de7b381', 'eaecb2a30b22a87f', '9924a43cc1315724',
    'bd838d3aafbf8db7', '0b1a2a3265d51aea', '135079a3231ce660', '932b2846e4d70666',
    'e1915f5cb1eca46c', 'f325965ca16d629f', '575ff28e60381be5', '724506eb4c328a95',
  ];
  const v128: Record<number, string> = {
    0: 'a3817f04ba25a8e66df67214c7550293', 1: 'da87c1d86b99af44347659119b22fc45', 2: '8177228da4a45dc7fca38bdef60affe4',
    7: 'a1f1ebbed8dbc153c0b84aa61ff08239', 8: '3b62a9ba6258f5610f83e264f31497b4',
  };
  v64.forEach((want, n) => {
    const out = new Uint8Array(8);
    siphash64(key, Uint8Array.from({ length: n }, (_, i) => i), 0, n, out);
    assert.equal(hex(out), want, `64-bit, ${n} bytes`);
    // the same bytes at an offset inside a larger Buffer (a reply batch's tag), output at an offset
    const inside = Buffer.alloc(n + 10, 0xaa), at = Buffer.alloc(12, 0xaa);
    for (let i = 0; i < n; i++) inside[5 + i] = i;
    siphash64(key, inside, 5, n, at, 3);
    assert.equal(hex(at.subarray(3, 11)), want, `64-bit, ${n} bytes at offset 5`);
  });
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
