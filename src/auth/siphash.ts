// SipHash-2-4 (Aumasson and Bernstein, 2012), with 64-bit and 128-bit outputs, over
// 32-bit halves: JavaScript has no unsigned 64-bit arithmetic that does not
// allocate (BigInt does). It is on the hot path (a token pulse checks one, and tags
// its reply with another), so the whole hash is one function whose state is eight
// int32 locals: the optimizing compiler keeps them in registers. (State in module
// variables, as this file first had it, made every uint32 above 2^31 a heap number:
// 20x slower, measured, and garbage on every round.) Outputs are written
// little-endian, as the reference does.

/** A 16-byte key as the four little-endian 32-bit words k0 (lo, hi), k1 (lo, hi). */
export type SipKey = Uint32Array;

/** The key in key[at, at+16), as words; into `w` when given (no allocation). */
export function sipKey(key: Uint8Array, at = 0, w: SipKey = new Uint32Array(4)): SipKey {
  if (key.length < at + 16) throw new Error('a SipHash key is 16 bytes');
  for (let i = 0; i < 4; i++) {
    const b = at + i * 4;
    w[i] = (key[b]! | (key[b + 1]! << 8) | (key[b + 2]! << 16) | (key[b + 3]! << 24)) >>> 0;
  }
  return w;
}

/**
 * SipHash-2-4 of msg[off, off+len) into out[at]: 8 bytes, or 16 when `wide`. One
 * loop over the steps: each message word (the last one holds the tail bytes and
 * the length), then one finalization (two when wide, each writing 8 bytes of output).
 * Every value is kept int32 (`| 0`, `^`). A 64-bit add carries the top bit of
 * (a & b) | ((a | b) & ~sum) of the low halves: no unsigned compare, which would
 * take V8 to floating point (25 % slower, measured).
 */
function sip(k: SipKey, msg: Uint8Array, off: number, len: number, out: Uint8Array, at: number, wide: boolean): void {
  const k0l = k[0]! | 0, k0h = k[1]! | 0, k1l = k[2]! | 0, k1h = k[3]! | 0;
  let v0h = k0h ^ 0x736f6d65, v0l = k0l ^ 0x70736575;
  let v1h = k1h ^ 0x646f7261, v1l = k1l ^ 0x6e646f6d ^ (wide ? 0xee : 0);
  let v2h = k0h ^ 0x6c796765, v2l = k0l ^ 0x6e657261;
  let v3h = k1h ^ 0x74656462, v3l = k1l ^ 0x79746573;
  const words = (len >>> 3) + 1, steps = words + (wide ? 2 : 1), end = off + len;
  let ml = 0, mh = 0, i = off, rounds = 2;
  for (let step = 0; step < steps; step++) {
    if (step < words - 1) {
      ml = msg[i]! | (msg[i + 1]! << 8) | (msg[i + 2]! << 16) | (msg[i + 3]! << 24);
      mh = msg[i + 4]! | (msg[i + 5]! << 8) | (msg[i + 6]! << 16) | (msg[i + 7]! << 24);
      i += 8;
    } else if (step === words - 1) {
      ml = 0; mh = (len & 0xff) << 24;
      for (let j = 0; i < end; i++, j++) {
        if (j < 4) ml |= msg[i]! << (8 * j);
        else mh |= msg[i]! << (8 * (j - 4));
      }
    } else if (step === words) {
      v2l ^= wide ? 0xee : 0xff;
      rounds = 4;
    } else {
      const lo = v0l ^ v1l ^ v2l ^ v3l, hi = v0h ^ v1h ^ v2h ^ v3h;
      out[at] = lo; out[at + 1] = lo >>> 8; out[at + 2] = lo >>> 16; out[at + 3] = lo >>> 24;
      out[at + 4] = hi; out[at + 5] = hi >>> 8; out[at + 6] = hi >>> 16; out[at + 7] = hi >>> 24;
      at += 8;
      v1l ^= 0xdd;
    }
    if (step < words) { v3h ^= mh; v3l ^= ml; }
    for (let r = 0; r < rounds; r++) {
      let lo = (v0l + v1l) | 0; v0h = (v0h + v1h + (((v0l & v1l) | ((v0l | v1l) & ~lo)) >>> 31)) | 0; v0l = lo;
      let hi = (v1h << 13) | (v1l >>> 19); lo = (v1l << 13) | (v1h >>> 19);
      v1h = hi ^ v0h; v1l = lo ^ v0l;
      let t = v0h; v0h = v0l; v0l = t;
      lo = (v2l + v3l) | 0; v2h = (v2h + v3h + (((v2l & v3l) | ((v2l | v3l) & ~lo)) >>> 31)) | 0; v2l = lo;
      hi = (v3h << 16) | (v3l >>> 16); lo = (v3l << 16) | (v3h >>> 16);
      v3h = hi ^ v2h; v3l = lo ^ v2l;
      lo = (v0l + v3l) | 0; v0h = (v0h + v3h + (((v0l & v3l) | ((v0l | v3l) & ~lo)) >>> 31)) | 0; v0l = lo;
      hi = (v3h << 21) | (v3l >>> 11); lo = (v3l << 21) | (v3h >>> 11);
      v3h = hi ^ v0h; v3l = lo ^ v0l;
      lo = (v2l + v1l) | 0; v2h = (v2h + v1h + (((v2l & v1l) | ((v2l | v1l) & ~lo)) >>> 31)) | 0; v2l = lo;
      hi = (v1h << 17) | (v1l >>> 15); lo = (v1l << 17) | (v1h >>> 15);
      v1h = hi ^ v2h; v1l = lo ^ v2l;
      t = v2h; v2h = v2l; v2l = t;
    }
    if (step < words) { v0h ^= mh; v0l ^= ml; }
  }
  const lo = v0l ^ v1l ^ v2l ^ v3l, hi = v0h ^ v1h ^ v2h ^ v3h;
  out[at] = lo; out[at + 1] = lo >>> 8; out[at + 2] = lo >>> 16; out[at + 3] = lo >>> 24;
  out[at + 4] = hi; out[at + 5] = hi >>> 8; out[at + 6] = hi >>> 16; out[at + 7] = hi >>> 24;
}

export function siphash64(key: SipKey, msg: Uint8Array, off: number, len: number, out: Uint8Array, at = 0): void {
  sip(key, msg, off, len, out, at, false);
}
export function siphash128(key: SipKey, msg: Uint8Array, off: number, len: number, out: Uint8Array, at = 0): void {
  sip(key, msg, off, len, out, at, true);
}
