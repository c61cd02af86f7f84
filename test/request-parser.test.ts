// Unit: parsing and validating one request datagram.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRequest } from '../src/protocol/request.js';

const limits = { shareIdLength: 12, maxMultiaddr: 32 };
const parse = (s: string | Uint8Array) => { const b = typeof s === 'string' ? Buffer.from(s) : s; return parseRequest(b, 0, b.length, limits); };

test('the exact bytes clients send take the fast path and parse like JSON does', () => {
  assert.deepEqual(parse('{"action":"pulse"}'), parse('{ "action": "pulse" }'));
  assert.deepEqual(parse('{"action":"alive"}'), { action: 'alive' });
  assert.deepEqual(parse('{"action":"announce"}'), { action: 'announce', desktopId: false, nat: 0, wantsToken: false });
  assert.deepEqual(parse('{"action":"announce"}'), parse('{ "action": "announce" }'));
});

test('an announce with an "id" field (the desktop client\'s v0.1.2) says so; no other field does', () => {
  assert.deepEqual(parse('{"id":"0123abcd","action":"announce"}'), { action: 'announce', desktopId: true, nat: 0, wantsToken: false });
  assert.deepEqual(parse('{"action":"announce","pad":"xxxx"}'), { action: 'announce', desktopId: false, nat: 0, wantsToken: false });
});

test('parses a request inside a larger buffer at an offset', () => {
  const b = Buffer.from('xx{"action":"alive"}yy');
  assert.deepEqual(parseRequest(b, 2, b.length - 4, limits), { action: 'alive' });
});

test('pulse flags accept booleans and the strings "true"/"false"', () => {
  assert.deepEqual(parse('{"action":"pulse","override":"true","port":"80"}'), { action: 'pulse', override: true, ip: null, port: 80, multiaddr: null, regenerate: false, proof: null, nat: 0, token: null, challenge: null });
  assert.equal((parse('{"action":"pulse","shareId":"true"}') as { regenerate: boolean }).regenerate, true);
  assert.equal((parse('{"action":"pulse","override":false,"ip":"x"}') as { override: boolean }).override, false);
});

test('pulse shareId: a string of the id length is a proof of receipt, not a regeneration', () => {
  assert.deepEqual(parse('{"action":"pulse","shareId":"abcdefghijkl"}'), { action: 'pulse', override: false, ip: null, port: 0, multiaddr: null, regenerate: false, proof: 'abcdefghijkl', nat: 0, token: null, challenge: null });
  assert.equal((parse('{"action":"pulse","shareId":"abc"}') as { code: string }).code, 'INVALID_FIELD');
});

test('ip is canonicalized; IPv4-mapped becomes IPv4', () => {
  assert.equal((parse('{"action":"pulse","override":true,"ip":"::FFFF:1.2.3.4"}') as { ip: string }).ip, '1.2.3.4');
  assert.equal((parse('{"action":"pulse","override":true,"ip":"2001:0db8:0000:0000:0000:0000:0000:0001"}') as { ip: string }).ip, '2001:db8::1');
});

test('every rejection carries its code', () => {
  const cases: [string, string][] = [
    ['nope', 'NOT_JSON'], ['1', 'NOT_AN_OBJECT'], ['[]', 'NOT_AN_OBJECT'], ['{}', 'MISSING_ACTION'],
    ['{"action":null}', 'INVALID_FIELD'], ['{"action":"x"}', 'UNKNOWN_ACTION'],
    ['{"action":"push","shareId":null}', 'INVALID_FIELD'],
    ['{"action":"push","shareId":"' + 'a'.repeat(13) + '"}', 'FIELD_TOO_LONG'],
    ['{"action":"pulse","override":true,"multiaddr":"' + 'a'.repeat(33) + '"}', 'FIELD_TOO_LONG'],
    ['{"action":"pulse","override":true,"port":"080000"}', 'INVALID_PORT'],
    ['{"action":"pulse","override":true,"ip":"1.2.3"}', 'INVALID_IP'],
    ['{"action":"pulse","override":true,"ip":"01.2.3.4"}', 'INVALID_IP'],
    ['{"action":"pulse","override":true,"ip":"1::2::3"}', 'INVALID_IP'],
  ];
  for (const [text, code] of cases) {
    const r = parse(text);
    assert.equal(r.action, 'invalid', text);
    assert.equal((r as { code: string }).code, code, text);
  }
});

test('invalid UTF-8 is NOT_JSON, not a replacement-character string', () => {
  assert.equal((parse(new Uint8Array([0x7b, 0x22, 0x61, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d])) as { code: string }).code, 'NOT_JSON');
});

test('nat on announce and pulse: one of the four values, or a clear error', () => {
  assert.deepEqual(parse('{"action":"announce","nat":"address-and-port-dependent"}'), { action: 'announce', desktopId: false, nat: 4, wantsToken: false });
  assert.deepEqual(parse('{"action":"announce","nat":"unknown"}'), { action: 'announce', desktopId: false, nat: 1, wantsToken: false });
  assert.equal((parse('{"action":"pulse","nat":"endpoint-independent"}') as { nat: number }).nat, 2);
  assert.equal((parse('{"action":"pulse","override":true,"port":9,"nat":"address-dependent"}') as { nat: number }).nat, 3);
  assert.equal((parse('{"action":"pulse","nat":null}') as { nat: number }).nat, 0);
  for (const bad of ['"symmetric"', '3', 'true', '"Endpoint-Independent"']) {
    for (const action of ['announce', 'pulse']) {
      const r = parse(`{"action":"${action}","nat":${bad}}`) as { action: string; code: string; message: string };
      assert.equal(r.action, 'invalid', bad);
      assert.equal(r.code, 'INVALID_FIELD');
      assert.match(r.message, /"nat" must be one of unknown, endpoint-independent, address-dependent, address-and-port-dependent/);
    }
  }
});
