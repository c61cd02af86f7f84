// The byte layout of the batches that cross between the main thread and a shard.
// Both sides read and write these records, and nothing else does.
//
// Hot-path batches are flat binary, not msgpackr: a record is a memcpy of the
// datagram behind a 6-byte header, with no object or string made per datagram.
// msgpackr carries the structured, low-rate traffic (push forwards between
// shards, snapshots).
//
// Request batch (main -> shard), one record per datagram, in arrival order:
//   u8 socket | u16 port | u16 bucket | u8 addrLen | addr (latin1 text) | u16 len | payload
// (the bucket is routing.ts's addressBucket, computed once on the main thread: in JS
// on the dgram path, in C on the native path, src/io/native/udp.c)
// Reply batch (shard -> main):
//   u8 REPLY  | u16 request index in its batch        | u16 len | payload
//   u8 SEND_TO| u8 socket | u16 port | u8 addrLen | addr | u16 len | payload
// `socket` is the index of a bound socket (io/datagram-io.ts DatagramIo.addresses):
// the one a request came in on; the one a SEND_TO leaves from. A REPLY leaves from
// its request's socket.
// Multi-byte integers are big-endian.

import type { SipKey } from '../auth/siphash.js';
import { TAG_CHARS, TAG_END, TAG_MEMBER, writeTag } from '../auth/tag.js';

export const REPLY = 0;
export const SEND_TO = 1;

/** Room for the largest record header: kind/socket + socket + port + bucket + addrLen + 64 address bytes + len. */
export const MAX_RECORD_HEADER = 1 + 1 + 2 + 2 + 1 + 64 + 2;

/** The largest request record header: socket + port + bucket + addrLen + 64 address bytes + len. */
export const MAX_REQUEST_HEADER = 1 + 2 + 2 + 1 + 64 + 2;

/** The longest payload a record's u16 length can say. */
export const MAX_RECORD_PAYLOAD = 0xffff;

/**
 * A reply record longer than its length field can say. Written on, its length
 * would wrap and the reader would take the rest of the payload for records (the
 * bytes of whatever the payload echoes, a request's, could name any address), so
 * end() cancels the record and throws this instead; the shard counts it
 * (drop reason reply_too_long) and goes on.
 */
export class RecordTooLong extends Error {
  constructor(readonly bytes: number) {
    super(`a reply record of ${bytes} bytes: a record holds at most ${MAX_RECORD_PAYLOAD}`);
    this.name = 'RecordTooLong';
  }
}

/** A Buffer with its own ArrayBuffer (never a pooled slice), so it can be transferred. */
export function transferableBuffer(size: number): Buffer {
  return Buffer.allocUnsafeSlow(size);
}

/**
 * Builds a reply batch. A shard reuses one writer; take() copies the bytes out
 * into a fresh, exactly sized buffer that is transferred to the main thread,
 * which sends from it (so it must not be reused after). Exactly sized, so that a
 * trickle of tiny batches does not churn 64 KiB buffers through the GC.
 */
export class ReplyWriter {
  private buf: Buffer;
  private pos = 0;
  /** Where the record begun last starts, and where its length goes (-1: none open). */
  private recordAt = 0;
  private lenAt = -1;

  constructor(initial = 64 * 1024) {
    this.buf = transferableBuffer(initial);
  }

  private ensure(extra: number): void {
    if (this.pos + extra <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + extra) size *= 2;
    const b = transferableBuffer(size);
    this.buf.copy(b, 0, 0, this.pos);
    this.buf = b;
  }

  toRequest(index: number): void {
    this.ensure(5);
    const b = this.buf;
    this.recordAt = this.pos;
    b[this.pos] = REPLY;
    b[this.pos + 1] = index >>> 8; b[this.pos + 2] = index & 0xff;
    this.pos += 3;
    this.openPayload();
  }

  toAddress(socket: number, address: string, port: number): void {
    this.ensure(MAX_RECORD_HEADER);
    const b = this.buf;
    this.recordAt = this.pos;
    b[this.pos] = SEND_TO;
    b[this.pos + 1] = socket;
    b[this.pos + 2] = port >>> 8; b[this.pos + 3] = port & 0xff;
    const n = b.write(address, this.pos + 5, 64, 'latin1');
    b[this.pos + 4] = n;
    this.pos += 5 + n;
    this.openPayload();
  }

  /** Like toAddress, with the address text taken from bytes (a request record's, in its batch): no string is made. */
  toAddressBytes(socket: number, src: Uint8Array, at: number, len: number, port: number): void {
    this.ensure(MAX_RECORD_HEADER);
    const b = this.buf;
    this.recordAt = this.pos;
    b[this.pos] = SEND_TO;
    b[this.pos + 1] = socket;
    b[this.pos + 2] = port >>> 8; b[this.pos + 3] = port & 0xff;
    b[this.pos + 4] = len;
    for (let i = 0; i < len; i++) b[this.pos + 5 + i] = src[at + i]!;
    this.pos += 5 + len;
    this.openPayload();
  }

  private openPayload(): void {
    this.lenAt = this.pos;
    this.pos += 2;
  }

  bytes(src: Uint8Array, off = 0, len = src.length - off): void {
    this.ensure(len);
    const b = this.buf;
    if (off === 0 && len === src.length && len > 16) {
      b.set(src, this.pos); // a whole constant piece: memcpy
      this.pos += len;
      return;
    }
    let p = this.pos;
    // A short piece of a larger array (a shareId in the table): a loop beats making a subarray view.
    for (let i = off, end = off + len; i < end; i++) b[p++] = src[i]!;
    this.pos = p;
  }

  /**
   * Room for `n` payload bytes written in place: returns the buffer to write them
   * into at `position`, then call skip(n). The buffer is only valid until the next call.
   */
  room(n: number): Buffer {
    this.ensure(n);
    return this.buf;
  }

  skip(n: number): void {
    this.pos += n;
  }

  text(s: string): void {
    this.ensure(s.length * 3);
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }

  /** Closes the record begun last; one longer than MAX_RECORD_PAYLOAD is cancelled and thrown (RecordTooLong). */
  end(): void {
    const len = this.pos - this.lenAt - 2;
    if (len > MAX_RECORD_PAYLOAD) {
      this.cancel(this.recordAt);
      throw new RecordTooLong(len);
    }
    this.buf[this.lenAt] = len >>> 8; this.buf[this.lenAt + 1] = len & 0xff;
    this.lenAt = -1;
  }

  /**
   * Ends the record begun last as a tagged message (auth/tag.ts): its payload, a
   * JSON object, loses its closing `}`, the tag of the bytes before `,"tag":"` is
   * computed with `key`, and `,"tag":"<tag>"}` ends it.
   */
  endTagged(key: SipKey): void {
    const start = this.lenAt + 2;
    if (this.pos <= start || this.buf[this.pos - 1] !== 0x7d /* } */) throw new Error('a tagged message is a JSON object');
    this.pos--;
    const bodyLen = this.pos - start;
    this.ensure(TAG_MEMBER.length + TAG_CHARS + TAG_END.length);
    const b = this.buf;
    // byte loops, not set(): these pieces are 8 and 2 bytes, on every tagged reply
    let p = this.pos;
    for (let i = 0; i < TAG_MEMBER.length; i++) b[p++] = TAG_MEMBER[i]!;
    writeTag(key, b, start, bodyLen, b, p);
    p += TAG_CHARS;
    for (let i = 0; i < TAG_END.length; i++) b[p++] = TAG_END[i]!;
    this.pos = p;
    this.end();
  }

  /** Abandons the record begun last (e.g. when a guard decides not to answer). */
  cancel(start: number): void {
    this.pos = start;
    this.lenAt = -1;
  }

  get position(): number { return this.pos; }

  /** The reply batch written since the last take (its .buffer is its own, to transfer), or null. */
  take(): Uint8Array | null {
    if (this.pos === 0) return null;
    const out = transferableBuffer(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    this.pos = 0;
    return out;
  }
}

/**
 * The payloads of a reply batch's records, in order, without where they were to go:
 * what a shard wrote for a requester of another instance, which sends them itself
 * (directory/remote-pushes.ts).
 */
export function replyPayloads(batch: Uint8Array | null): Uint8Array[] {
  const out: Uint8Array[] = [];
  if (batch === null) return out;
  let o = 0;
  while (o < batch.length) {
    const at = batch[o] === REPLY ? o + 3 : o + 5 + batch[o + 4]!;
    const len = (batch[at]! << 8) | batch[at + 1]!;
    out.push(batch.slice(at + 2, at + 2 + len));
    o = at + 2 + len;
  }
  return out;
}
