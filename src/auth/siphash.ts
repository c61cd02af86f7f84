// SipHash-2-4 (Aumasson and Bernstein, 2012), with 64-bit and 128-bit outputs, over
// 32-bit halves: JavaScript has no unsigned 64-bit arithmetic that does not
// allocate (BigInt does). The state lives in module variables, so a hash costs no
// allocation: it is called on the hot path (a token pulse checks one, and tags its
// reply with another). Outputs are written little-endian, as the reference does.

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

// v0..v3, each as a high and a low 32-bit half
let v0h = 0, v0l = 0, v1h = 0, v1l = 0, v2h = 0, v2l = 0, v3h = 0, v3l = 0;

function init(k: SipKey, wide: boolean): void {
  const k0l = k[0]!, k0h = k[1]!, k1l = k[2]!, k1h = k[3]!;
  v0h = (k0h ^ 0x736f6d65) >>> 0; v0l = (k0l ^ 0x70736575) >>> 0;
  v1h = (k1h ^ 0x646f7261) >>> 0; v1l = (k1l ^ 0x6e646f6d) >>> 0;
  v2h = (k0h ^ 0x6c796765) >>> 0; v2l = (k0l ^ 0x6e657261) >>> 0;
  v3h = (k1h ^ 0x74656462) >>> 0; v3l = (k1l ^ 0x79746573) >>> 0;
  if (wide) v1l = (v1l ^ 0xee) >>> 0;
}

function round(): void {
  let lo: number, hi: number, t: number;
  // v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
  lo = (v0l + v1l) >>> 0; v0h = (v0h + v1h + (lo < v0l ? 1 : 0)) >>> 0; v0l = lo;
  hi = ((v1h << 13) | (v1l >>> 19)) >>> 0; lo = ((v1l << 13) | (v1h >>> 19)) >>> 0;
  v1h = (hi ^ v0h) >>> 0; v1l = (lo ^ v0l) >>> 0;
  t = v0h; v0h = v0l; v0l = t;
  // v2 += v3; v3 = rotl(v3, 16); v3 ^= v2
  lo = (v2l + v3l) >>> 0; v2h = (v2h + v3h + (lo < v2l ? 1 : 0)) >>> 0; v2l = lo;
  hi = ((v3h << 16) | (v3l >>> 16)) >>> 0; lo = ((v3l << 16) | (v3h >>> 16)) >>> 0;
  v3h = (hi ^ v2h) >>> 0; v3l = (lo ^ v2l) >>> 0;
  // v0 += v3; v3 = rotl(v3, 21); v3 ^= v0
  lo = (v0l + v3l) >>> 0; v0h = (v0h + v3h + (lo < v0l ? 1 : 0)) >>> 0; v0l = lo;
  hi = ((v3h << 21) | (v3l >>> 11)) >>> 0; lo = ((v3l << 21) | (v3h >>> 11)) >>> 0;
  v3h = (hi ^ v0h) >>> 0; v3l = (lo ^ v0l) >>> 0;
  // v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
  lo = (v2l + v1l) >>> 0; v2h = (v2h + v1h + (lo < v2l ? 1 : 0)) >>> 0; v2l = lo;
  hi = ((v1h << 17) | (v1l >>> 15)) >>> 0; lo = ((v1l << 17) | (v1h >>> 15)) >>> 0;
  v1h = (hi ^ v2h) >>> 0; v1l = (lo ^ v2l) >>> 0;
  t = v2h; v2h = v2l; v2l = t;
}

function word(mh: number, ml: number): void {
  v3h = (v3h ^ mh) >>> 0; v3l = (v3l ^ ml) >>> 0;
  round(); round();
  v0h = (v0h ^ mh) >>> 0; v0l = (v0l ^ ml) >>> 0;
}

function compress(msg: Uint8Array, off: number, len: number): void {
  const end = off + len - (len & 7);
  let i = off;
  for (; i < end; i += 8) {
    const ml = (msg[i]! | (msg[i + 1]! << 8) | (msg[i + 2]! << 16) | (msg[i + 3]! << 24)) >>> 0;
    const mh = (msg[i + 4]! | (msg[i + 5]! << 8) | (msg[i + 6]! << 16) | (msg[i + 7]! << 24)) >>> 0;
    word(mh, ml);
  }
  // the last word: the remaining bytes, and the length's low byte at the top
  let ml = 0, mh = (len & 0xff) << 24;
  for (let j = 0; i < off + len; i++, j++) {
    if (j < 4) ml |= msg[i]! << (8 * j);
    else mh |= msg[i]! << (8 * (j - 4));
  }
  word(mh >>> 0, ml >>> 0);
}

function finish(xor: number, out: Uint8Array, at: number): void {
  v2l = (v2l ^ xor) >>> 0;
  round(); round(); round(); round();
  const lo = (v0l ^ v1l ^ v2l ^ v3l) >>> 0, hi = (v0h ^ v1h ^ v2h ^ v3h) >>> 0;
  out[at] = lo; out[at + 1] = lo >>> 8; out[at + 2] = lo >>> 16; out[at + 3] = lo >>> 24;
  out[at + 4] = hi; out[at + 5] = hi >>> 8; out[at + 6] = hi >>> 16; out[at + 7] = hi >>> 24;
}

/** SipHash-2-4 of msg[off, off+len) under `key`: 8 bytes into out[at]. */
export function siphash64(key: SipKey, msg: Uint8Array, off: number, len: number, out: Uint8Array, at = 0): void {
  init(key, false);
  compress(msg, off, len);
  finish(0xff, out, at);
}

/** SipHash-2-4 with its 128-bit output: 16 bytes into out[at]. */
export function siphash128(key: SipKey, msg: Uint8Array, off: number, len: number, out: Uint8Array, at = 0): void {
  init(key, true);
  compress(msg, off, len);
  finish(0xee, out, at);
  v1l = (v1l ^ 0xdd) >>> 0;
  round(); round(); round(); round();
  const lo = (v0l ^ v1l ^ v2l ^ v3l) >>> 0, hi = (v0h ^ v1h ^ v2h ^ v3h) >>> 0;
  out[at + 8] = lo; out[at + 9] = lo >>> 8; out[at + 10] = lo >>> 16; out[at + 11] = lo >>> 24;
  out[at + 12] = hi; out[at + 13] = hi >>> 8; out[at + 14] = hi >>> 16; out[at + 15] = hi >>> 24;
}
