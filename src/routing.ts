// How addresses, shareIds and shards map to each other.
//
// A session lives in exactly one shard, and two requests must find it:
//   - pulse/alive/announce carry no shareId, only the UDP source address;
//   - push carries only the target's shareId.
// So both keys map to the same *bucket*: bucket = hash(source IP) mod 4096, and
// every shareId minted for a session starts with its bucket written as two
// characters of the alphabet. shard = bucket mod shardCount. Buckets do not depend
// on the shard count, so a snapshot restored into a tracker with another shard
// count still finds each session by address and by shareId.
//
// The hash covers the IP, not the port: every session and every per-IP limit of
// one IP (amplification credit, rate limits, session cap) lives in one shard. For
// IPv6 it covers the /64 alone: one host may hold a whole /64, and its per-/64
// limits (shard/ip-table.ts) must live in one shard too, or a /64 spread over N
// shards would get N times each.
import { parseIp } from './protocol/address.js';

/** URL-safe, 64 characters: 6 bits per character. */
export const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_';
export const BUCKET_BITS = 12;
export const BUCKETS = 1 << BUCKET_BITS; // = 64 * 64, two alphabet characters

const CHAR_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) CHAR_VALUE[ALPHABET.charCodeAt(i)] = i;

/** Value 0..63 of an alphabet character code, or -1. */
export function alphabetValue(code: number): number {
  return code < 128 ? CHAR_VALUE[code]! : -1;
}

const V4_MAPPED_PREFIX = '::ffff:';

const FNV_OFFSET = 0x811c9dc5, FNV_PRIME = 0x01000193;

/** Fold the high bits in: the low 12 bits of FNV alone are weakly mixed. */
function fold(h: number): number {
  return (h ^ (h >>> 16)) & (BUCKETS - 1);
}

/** The bucket of an IPv6 address's /64: FNV-1a over its first 8 bytes (addr[at, at+8)). */
export function prefixBucket(addr: Uint8Array, at: number): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < 8; i++) h = Math.imul(h ^ addr[at + i]!, FNV_PRIME);
  return fold(h);
}

// scratch for an IPv6 text's bytes (dgram path): no allocation per datagram
const text = new Uint8Array(64);
const bytes = new Uint8Array(16);

/**
 * The bucket of an address as the socket reports it. IPv4: FNV-1a over its text;
 * an IPv4-mapped IPv6 address ("::ffff:1.2.3.4", as a dual-stack socket reports
 * IPv4 clients) hashes like the plain IPv4 text, so the bucket does not depend on
 * how the socket was bound. IPv6: prefixBucket of its /64 (a zone index is not part
 * of it). Hot path: no allocation, a few dozen integer operations (IPv6: a parse).
 */
export function addressBucket(address: string): number {
  let start = 0;
  if (address.length > 7 && address.charCodeAt(0) === 58 /* : */ && address.startsWith(V4_MAPPED_PREFIX) && address.includes('.', 7)) {
    start = 7;
  } else if (address.includes(':') && address.length <= text.length) {
    for (let i = 0; i < address.length; i++) text[i] = address.charCodeAt(i) & 0xff;
    if (parseIp(text, 0, address.length, bytes, 0) === 6) return prefixBucket(bytes, 0);
  }
  let h = FNV_OFFSET;
  for (let i = start; i < address.length; i++) {
    const c = address.charCodeAt(i);
    if (c === 37 /* % */) break; // a zone index is not part of the address
    h = Math.imul(h ^ c, FNV_PRIME);
  }
  return fold(h);
}

export function shardOfBucket(bucket: number, shards: number): number {
  return bucket % shards;
}

/** The two leading shareId characters for a bucket. */
export function bucketPrefix(bucket: number): string {
  return ALPHABET[bucket >>> 6]! + ALPHABET[bucket & 63]!;
}

/** The bucket a shareId routes to, or -1 if its first two characters are not in the alphabet. */
export function bucketOfShareId(shareId: string): number {
  if (shareId.length < 2) return -1;
  const hi = alphabetValue(shareId.charCodeAt(0));
  const lo = alphabetValue(shareId.charCodeAt(1));
  return hi < 0 || lo < 0 ? -1 : (hi << 6) | lo;
}
