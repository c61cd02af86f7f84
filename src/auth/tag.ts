// The format a token client and the tracker share (docs/security.md): a token is
// `<shareId>.<secret>`, the secret 16 bytes as 22 base64url characters; every
// tracker message to a token session ends with `,"tag":"<11 characters>"}`, the
// tag being SipHash-2-4-64, keyed with the secret, of the message's bytes before
// `,"tag":"`. The client checks tags with the secret it holds; the tracker
// recomputes the secret from the shareId (session-key.ts), so neither keeps state.
import { sipKey, siphash64, type SipKey } from './siphash.js';

export const SECRET_BYTES = 16;
export const SECRET_CHARS = 22;
export const TAG_CHARS = 11;
/** What precedes the tag: the tag is always the message's last member. */
export const TAG_MEMBER = Buffer.from(',"tag":"', 'latin1');
/** What follows the tag's characters. */
export const TAG_END = Buffer.from('"}', 'latin1');

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const CODES = Uint8Array.from(ALPHABET, (c) => c.charCodeAt(0));
const VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) VALUE[CODES[i]!] = i;

/** base64url (no padding) of src[off, off+n) as ASCII into dst[at]; returns the characters written. */
export function encodeInto(src: Uint8Array, off: number, n: number, dst: Uint8Array, at: number): number {
  let o = at, i = off;
  const end = off + n;
  for (; i + 3 <= end; i += 3) {
    const v = (src[i]! << 16) | (src[i + 1]! << 8) | src[i + 2]!;
    dst[o++] = CODES[v >>> 18]!; dst[o++] = CODES[(v >>> 12) & 63]!; dst[o++] = CODES[(v >>> 6) & 63]!; dst[o++] = CODES[v & 63]!;
  }
  if (end - i === 1) {
    const v = src[i]! << 16;
    dst[o++] = CODES[v >>> 18]!; dst[o++] = CODES[(v >>> 12) & 63]!;
  } else if (end - i === 2) {
    const v = (src[i]! << 16) | (src[i + 1]! << 8);
    dst[o++] = CODES[v >>> 18]!; dst[o++] = CODES[(v >>> 12) & 63]!; dst[o++] = CODES[(v >>> 6) & 63]!;
  }
  return o - at;
}

/** The base64url text of bytes. */
export function encode(bytes: Uint8Array): string {
  const out = new Uint8Array(Math.ceil((bytes.length * 4) / 3));
  return Buffer.from(out.buffer, 0, encodeInto(bytes, 0, bytes.length, out, 0)).toString('latin1');
}

/** The 16 secret bytes of a token's 22 characters starting at text[from], or null if they are not base64url. */
export function decodeSecret(text: string, from: number): Uint8Array | null {
  if (text.length - from !== SECRET_CHARS) return null;
  const out = new Uint8Array(SECRET_BYTES);
  let acc = 0, bits = 0, o = 0;
  for (let i = from; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const v = c < 128 ? VALUE[c]! : -1;
    if (v < 0) return null;
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) { bits -= 8; out[o++] = (acc >>> bits) & 0xff; }
  }
  // 22 characters carry 132 bits: the last 4 must be zero, as encodeInto writes them
  return (acc & ((1 << bits) - 1)) === 0 ? out : null;
}

/** Whether dst[at, at+n) holds exactly the ASCII of text[from, from+n). */
export function asciiEquals(dst: Uint8Array, at: number, text: string, from: number, n: number): boolean {
  if (text.length < from + n) return false;
  for (let i = 0; i < n; i++) if (dst[at + i] !== text.charCodeAt(from + i)) return false;
  return true;
}

const mac = new Uint8Array(8);

/** The tag of msg[off, off+len) under a session's secret, as 11 ASCII characters into dst[at]. */
export function writeTag(secret: SipKey, msg: Uint8Array, off: number, len: number, dst: Uint8Array, at: number): void {
  siphash64(secret, msg, off, len, mac, 0);
  encodeInto(mac, 0, 8, dst, at);
}

/** The secret of a token as a SipHash key, or null if the token is not `<shareId>.<22 characters>`. */
export function secretOfToken(token: string): SipKey | null {
  const dot = token.length - SECRET_CHARS - 1;
  if (dot < 1 || token.charCodeAt(dot) !== 46 /* . */) return null;
  const secret = decodeSecret(token, dot + 1);
  return secret === null ? null : sipKey(secret);
}

const expected = new Uint8Array(TAG_CHARS);

/** Whether a datagram ends with a tag that `secret` made of the bytes before it. */
export function verifyTagged(datagram: Uint8Array, secret: SipKey): boolean {
  const n = datagram.length;
  const tagAt = n - TAG_END.length - TAG_CHARS;
  const memberAt = tagAt - TAG_MEMBER.length;
  if (memberAt < 1 || datagram[n - 2] !== TAG_END[0] || datagram[n - 1] !== TAG_END[1]) return false;
  for (let i = 0; i < TAG_MEMBER.length; i++) if (datagram[memberAt + i] !== TAG_MEMBER[i]) return false;
  writeTag(secret, datagram, 0, memberAt, expected, 0);
  let diff = 0;
  for (let i = 0; i < TAG_CHARS; i++) diff |= expected[i]! ^ datagram[tagAt + i]!;
  return diff === 0;
}
