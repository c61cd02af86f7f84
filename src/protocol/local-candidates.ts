// Local candidates (documented dialect): the addresses a client's session socket
// has on its own host's interfaces, `"local":["10.0.1.2:41000","[2001:db8::5]:41000"]`
// on announce and pulse. Two peers behind one NAT that does not hairpin can only
// meet on these. The tracker keeps them for the session and shows them to the
// paired peer alone (dialect.ts, pushPlan).
//
// A candidate is a claim nobody proved: a client may name any address. So each
// is an IP literal and a port, canonical, of a kind a peer on the same network
// could send to (not loopback, not unspecified, not multicast, not link-local
// IPv6, which needs a zone no other host shares), and a session keeps a few only.
// Pure: values in, a canonical list or an error out.
import { ADDR_BYTES, formatIp, formatPeerAddr, isV4Mapped, parseIp } from './address.js';
import type { ErrorCode } from './errors.js';

/** Most local candidates a session keeps. */
export const MAX_LOCAL = 4;
/** Longest candidate text: "[" + the longest IPv6 literal (45) + "]:" + 5 digits. */
const MAX_CANDIDATE_LENGTH = 53;

export interface LocalFieldError { readonly code: ErrorCode; readonly message: string }

const scratch = new Uint8Array(ADDR_BYTES);
const text = new Uint8Array(MAX_CANDIDATE_LENGTH);

/** Why this address is no local candidate, or null when it may be one (16 bytes in `scratch`). */
function unusable(b: Uint8Array): string | null {
  if (isV4Mapped(b, 0)) {
    const a = b[12]!;
    if (a === 127) return 'a loopback address';
    if (a === 0) return 'an unspecified ("this network") address';
    if (a >= 224) return 'a multicast or broadcast address';
    return null;
  }
  let zero = true;
  for (let i = 0; i < 15; i++) if (b[i] !== 0) { zero = false; break; }
  if (zero && (b[15] === 0 || b[15] === 1)) return b[15] === 1 ? 'a loopback address' : 'an unspecified address';
  if (b[0] === 0xff) return 'a multicast address';
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return 'a link-local IPv6 address (it needs a zone, which another host does not share)';
  return null;
}

/** One candidate: canonical "ip:port" / "[v6]:port", or why it is not one. */
export function canonicalCandidate(value: unknown): string | { reason: string } {
  if (typeof value !== 'string') return { reason: 'is not a string' };
  if (value.length > MAX_CANDIDATE_LENGTH) return { reason: `is longer than ${MAX_CANDIDATE_LENGTH} characters` };
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(value);
  if (m === null) return { reason: 'is not "ip:port" (or "[ipv6]:port") with an IP literal' };
  const ip = m[1] ?? m[2]!;
  for (let i = 0; i < ip.length; i++) text[i] = ip.charCodeAt(i);
  const family = parseIp(text, 0, ip.length, scratch, 0);
  if (family === 0) return { reason: 'is not "ip:port" (or "[ipv6]:port") with an IP literal' };
  if (m[1] !== undefined && family === 4 && !ip.includes(':')) return { reason: 'puts an IPv4 address in brackets' };
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return { reason: 'has a port outside 1-65535' };
  const why = unusable(scratch);
  if (why !== null) return { reason: `is ${why}` };
  return formatPeerAddr(formatIp(scratch, 0), port);
}

/**
 * The `local` field of an announce or pulse: its candidates, canonical, in the
 * order sent (`[]` clears the session's), or the error to answer with.
 */
export function parseLocalField(value: unknown): string[] | LocalFieldError {
  if (!Array.isArray(value)) return { code: 'INVALID_FIELD', message: '"local" must be an array of "ip:port" strings (your socket\'s addresses on your own network), or [] to clear them' };
  if (value.length > MAX_LOCAL) return { code: 'FIELD_TOO_LONG', message: `"local" holds at most ${MAX_LOCAL} addresses; it has ${value.length}` };
  const list: string[] = [];
  for (let i = 0; i < value.length; i++) {
    const c = canonicalCandidate(value[i]);
    if (typeof c !== 'string') {
      return { code: c.reason.startsWith('is longer') ? 'FIELD_TOO_LONG' : 'INVALID_FIELD', message: `"local"[${i}] ${c.reason}` };
    }
    if (list.includes(c)) return { code: 'INVALID_FIELD', message: `"local"[${i}] repeats ${c}` };
    list.push(c);
  }
  return list;
}

/**
 * Whether `value` is a list this tracker itself would keep (from another instance,
 * or a snapshot): at most MAX_LOCAL distinct canonical candidates, at least one.
 */
export function isLocalList(value: unknown): value is string[] {
  if (!Array.isArray(value) || value.length === 0) return false;
  const parsed = parseLocalField(value);
  return Array.isArray(parsed) && parsed.every((c, i) => c === value[i]);
}
