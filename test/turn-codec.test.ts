// What the TURN client adds to the STUN codec, checked without sockets: the
// long-term credential key against RFC 5769's published vector, and ChannelData
// framing (RFC 8656 12.4), whose padding coturn may or may not send over UDP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ATTR, MessageBuilder, attribute, checkIntegrity, decodeChannelData, decodeMessage, encodeChannelData, isChannelData,
  longTermKey, type StunMessage,
} from '../src/stun/codec.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// RFC 5769 2.4, "Sample Request with Long-Term Authentication": username
// "マトリックス", password "TheMatrIX" (after SASLprep), realm "example.org".
const LONG_TERM_REQUEST = hex(`
  00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
  00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
  00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
  00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
  00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66`);

test('the long-term key (MD5 of username:realm:password) verifies RFC 5769\'s long-term sample, and MessageBuilder rebuilds it byte for byte', () => {
  const m = decodeMessage(LONG_TERM_REQUEST) as StunMessage;
  assert.equal(typeof m, 'object');
  const key = longTermKey('マトリックス', 'example.org', 'TheMatrIX');
  assert.equal(checkIntegrity(m, key), true);
  assert.equal(checkIntegrity(m, longTermKey('マトリックス', 'example.org', 'TheMatrix')), false, 'one letter of the password');
  const rebuilt = new MessageBuilder(m.type, m.transactionId)
    .add(ATTR.USERNAME, attribute(m, ATTR.USERNAME)!)
    .add(ATTR.NONCE, attribute(m, ATTR.NONCE)!)
    .add(ATTR.REALM, attribute(m, ATTR.REALM)!)
    .build({ integrityKey: key });
  assert.deepEqual(rebuilt, LONG_TERM_REQUEST);
});

test('ChannelData: a 4-byte header (channel, length), sent unpadded; received with or without padding', () => {
  const framed = encodeChannelData(0x4001, Buffer.from('abcde'));
  assert.deepEqual(framed, Buffer.from([0x40, 0x01, 0x00, 0x05, ...Buffer.from('abcde')]));
  assert.deepEqual(decodeChannelData(framed), { channel: 0x4001, data: Buffer.from('abcde') });
  const padded = Buffer.concat([framed, Buffer.alloc(3)]);
  assert.deepEqual(decodeChannelData(padded), { channel: 0x4001, data: Buffer.from('abcde') }, 'padding ignored');
  assert.deepEqual(decodeChannelData(encodeChannelData(0x4fff, Buffer.alloc(0))), { channel: 0x4fff, data: Buffer.alloc(0) });
  assert.throws(() => encodeChannelData(0x3fff, Buffer.alloc(1)), RangeError);
  assert.throws(() => encodeChannelData(0x5000, Buffer.alloc(1)), RangeError);
});

test('ChannelData is told apart from STUN, from the tracker\'s JSON and from truncated frames', () => {
  assert.equal(isChannelData(LONG_TERM_REQUEST, 0, LONG_TERM_REQUEST.length), false, 'STUN begins with bits 00');
  const json = Buffer.from('{"action":"pulse"}');
  assert.equal(isChannelData(json, 0, json.length), false, '"{" is 0x7b: bits 01, but no channel number');
  assert.equal(decodeChannelData(Buffer.from([0x50, 0x00, 0x00, 0x00])), null, '0x5000-0x7fff are reserved');
  assert.equal(decodeChannelData(Buffer.from([0x40, 0x00, 0x00, 0x05, 1, 2, 3])), null, 'shorter than its length');
  assert.equal(decodeChannelData(Buffer.from([0x40, 0x00, 0x00])), null, 'shorter than the header');
});
