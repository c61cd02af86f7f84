// A reply record's payload length is a u16 (src/wire/frame.ts): the writer refuses a
// longer record rather than wrap its length, which would make the rest of its payload
// read as records (see stun-response-bounds.test.ts for what that once sent).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_RECORD_PAYLOAD, RecordTooLong, ReplyWriter } from '../src/wire/frame.js';

test('ReplyWriter refuses a record longer than its u16 length: end() throws RecordTooLong and the record is gone; what came before it stays', () => {
  const w = new ReplyWriter(1024);
  w.toRequest(0);
  w.text('before');
  w.end();
  const kept = w.position;
  w.toAddress(0, '::1', 6379);
  w.bytes(Buffer.alloc(MAX_RECORD_PAYLOAD + 1));
  assert.throws(() => w.end(), RecordTooLong);
  assert.equal(w.position, kept, 'the record is cancelled');
  w.toRequest(1);
  w.bytes(Buffer.alloc(MAX_RECORD_PAYLOAD, 7)); // the longest a record holds
  w.end();
  const out = Buffer.from(w.take()!);
  assert.equal(out.length, 5 + 6 + 5 + MAX_RECORD_PAYLOAD);
  assert.deepEqual([out[0], out.readUInt16BE(1), out.readUInt16BE(3), out.toString('latin1', 5, 11)], [0, 0, 6, 'before']);
  assert.deepEqual([out[11], out.readUInt16BE(12), out.readUInt16BE(14)], [0, 1, MAX_RECORD_PAYLOAD]);
});
