// Parsing and validation of one request datagram. Pure: bytes in, a typed
// request or an error out; never throws. Both dialects share these requests:
// they differ only in the keep-alive verb (pulse / alive) and in the replies
// (see dialect.ts).
import { canonicalIp, formatPeerAddr } from './address.js';
import type { ErrorCode } from './errors.js';
import { parseLocalField } from './local-candidates.js';
import { NAT_FIELD_ERROR, NAT_NOT_REPORTED, natCode } from './nat.js';

export interface AnnounceRequest {
  readonly action: 'announce';
  /** The message has an "id" field: only the desktop client's v0.1.2 sends one (see dialect.ts). */
  readonly desktopId: boolean;
  /** The `nat` field (protocol/nat.ts natCode), or NAT_NOT_REPORTED. */
  readonly nat: number;
  /** The `local` field (local-candidates.ts), canonical; [] clears; absent: unchanged. */
  readonly local?: readonly string[];
}
export interface AliveRequest { readonly action: 'alive' }
export interface PulseRequest {
  readonly action: 'pulse';
  readonly override: boolean;
  readonly ip: string | null; // canonical text
  readonly port: number; // 0 = not given
  readonly multiaddr: string | null;
  readonly regenerate: boolean;
  /** The session's own shareId, sent back as proof that it receives at its address. */
  readonly proof: string | null;
  /** The `nat` field (protocol/nat.ts natCode), or NAT_NOT_REPORTED. */
  readonly nat: number;
  /** The `local` field (local-candidates.ts), canonical; [] clears; absent: unchanged. */
  readonly local?: readonly string[];
}
export interface PushRequest {
  readonly action: 'push';
  readonly shareId: string;
  /** A relayed address ("ip:port", canonical) the requester allocated for this pair (the README's "Relay"), or null. */
  readonly relay: string | null;
}
export interface RelayRequest { readonly action: 'relay' }
export interface InvalidRequest { readonly action: 'invalid'; readonly code: ErrorCode; readonly message?: string }

export type Request = AnnounceRequest | AliveRequest | PulseRequest | PushRequest | RelayRequest | InvalidRequest;

export interface ParseLimits {
  readonly shareIdLength: number;
  readonly maxMultiaddr: number;
}

const ANNOUNCE: AnnounceRequest = Object.freeze({ action: 'announce', desktopId: false, nat: NAT_NOT_REPORTED });
const DESKTOP_ANNOUNCE: AnnounceRequest = Object.freeze({ action: 'announce', desktopId: true, nat: NAT_NOT_REPORTED });
const ALIVE: AliveRequest = Object.freeze({ action: 'alive' });
const RELAY: RelayRequest = Object.freeze({ action: 'relay' });
const PLAIN_PULSE: PulseRequest = Object.freeze({ action: 'pulse', override: false, ip: null, port: 0, multiaddr: null, regenerate: false, proof: null, nat: NAT_NOT_REPORTED });

// The exact bytes real clients send for the hot verbs; matched before JSON.parse
// so a keep-alive costs a byte comparison, not an object allocation.
const FAST: readonly [Uint8Array, Request][] = [
  [Buffer.from('{"action":"pulse"}'), PLAIN_PULSE],
  [Buffer.from('{"action":"alive"}'), ALIVE],
  [Buffer.from('{"action":"announce"}'), ANNOUNCE],
];

const utf8 = new TextDecoder('utf-8', { fatal: true });

function invalid(code: ErrorCode, message?: string): InvalidRequest {
  return message === undefined ? { action: 'invalid', code } : { action: 'invalid', code, message };
}

function bytesEqual(a: Uint8Array, off: number, len: number, b: Uint8Array): boolean {
  if (len !== b.length) return false;
  for (let i = 0; i < len; i++) if (a[off + i] !== b[i]) return false;
  return true;
}

/** true / false, also as the strings "true" / "false" (the seed README's own replies use strings). */
function flag(v: unknown): boolean | null {
  if (v === undefined || v === null) return false;
  if (typeof v === 'boolean') return v;
  if (v === 'true') return true;
  if (v === 'false') return false;
  return null;
}

export function parseRequest(buf: Uint8Array, off: number, len: number, limits: ParseLimits): Request {
  for (const [bytes, req] of FAST) if (bytesEqual(buf, off, len, bytes)) return req;

  let msg: unknown;
  try {
    msg = JSON.parse(utf8.decode(buf.subarray(off, off + len)));
  } catch {
    return invalid('NOT_JSON');
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) return invalid('NOT_AN_OBJECT');
  const m = msg as Record<string, unknown>;
  const action = m.action;
  if (action === undefined) return invalid('MISSING_ACTION');
  if (typeof action !== 'string') return invalid('INVALID_FIELD', '"action" must be a string');
  switch (action) {
    case 'announce': return withLocal(m, parseAnnounce(m));
    case 'alive': return ALIVE;
    case 'pulse': return withLocal(m, parsePulse(m, limits));
    case 'push': return parsePush(m, limits);
    case 'relay': return RELAY;
    default: return invalid('UNKNOWN_ACTION');
  }
}

/** The `nat` field: its code, NAT_NOT_REPORTED when absent, -1 when not a known value. */
function natOf(m: Record<string, unknown>): number {
  return m.nat === undefined || m.nat === null ? NAT_NOT_REPORTED : natCode(m.nat);
}

function parseAnnounce(m: Record<string, unknown>): Request {
  const nat = natOf(m);
  if (nat < 0) return invalid('INVALID_FIELD', NAT_FIELD_ERROR);
  if (nat === NAT_NOT_REPORTED) return m.id !== undefined ? DESKTOP_ANNOUNCE : ANNOUNCE;
  return { action: 'announce', desktopId: m.id !== undefined, nat };
}

function parsePulse(m: Record<string, unknown>, limits: ParseLimits): Request {
  const nat = natOf(m);
  if (nat < 0) return invalid('INVALID_FIELD', NAT_FIELD_ERROR);
  const override = flag(m.override);
  if (override === null) return invalid('INVALID_FIELD', '"override" must be true or false');
  // shareId: true mints a new id; the session's own id (a string of the id's
  // length) proves the client got it, i.e. that it receives at its address.
  const proof = typeof m.shareId === 'string' && m.shareId.length === limits.shareIdLength ? m.shareId : null;
  const regenerate = proof === null ? flag(m.shareId) : false;
  if (regenerate === null) {
    return invalid('INVALID_FIELD', 'in pulse, "shareId" must be true or false (true mints a new shareId), or your own shareId');
  }
  if (!override) return regenerate || proof !== null || nat !== NAT_NOT_REPORTED ? { ...PLAIN_PULSE, regenerate, proof, nat } : PLAIN_PULSE;

  let ip: string | null = null;
  if (m.ip !== undefined && m.ip !== null) {
    if (typeof m.ip !== 'string') return invalid('INVALID_IP');
    if (m.ip.length > 64) return invalid('FIELD_TOO_LONG', '"ip" is longer than 64 characters');
    ip = canonicalIp(m.ip);
    if (ip === null) return invalid('INVALID_IP');
  }
  let port = 0;
  if (m.port !== undefined && m.port !== null) {
    const p = typeof m.port === 'number' ? m.port : typeof m.port === 'string' && /^\d{1,5}$/.test(m.port) ? Number(m.port) : NaN;
    if (!Number.isInteger(p) || p < 1 || p > 65535) return invalid('INVALID_PORT');
    port = p;
  }
  let multiaddr: string | null = null;
  if (m.multiaddr !== undefined && m.multiaddr !== null) {
    if (typeof m.multiaddr !== 'string') return invalid('INVALID_FIELD', '"multiaddr" must be a string');
    if (m.multiaddr.length > limits.maxMultiaddr) {
      return invalid('FIELD_TOO_LONG', `"multiaddr" is longer than ${limits.maxMultiaddr} characters`);
    }
    multiaddr = m.multiaddr;
  }
  return { action: 'pulse', override: true, ip, port, multiaddr, regenerate, proof, nat };
}

/** An announce or pulse with its `local` field (documented dialect), if it has one. */
function withLocal(m: Record<string, unknown>, req: Request): Request {
  if (m.local === undefined || m.local === null || req.action === 'invalid') return req;
  const local = parseLocalField(m.local);
  return Array.isArray(local) ? { ...req, local } as Request : invalid(local.code, local.message);
}

function parsePush(m: Record<string, unknown>, limits: ParseLimits): Request {
  const id = m.shareId;
  if (id === undefined || id === null) return invalid('INVALID_FIELD', 'push needs "shareId", the shareId of the peer to reach');
  if (typeof id !== 'string') return invalid('INVALID_FIELD', '"shareId" must be a string');
  if (id.length > limits.shareIdLength) return invalid('FIELD_TOO_LONG', `"shareId" is longer than ${limits.shareIdLength} characters`);
  if (m.relay === undefined || m.relay === null) return { action: 'push', shareId: id, relay: null };
  const relay = typeof m.relay === 'string' && m.relay.length <= 72 ? canonicalEndpoint(m.relay) : null;
  if (relay === null) return invalid('INVALID_FIELD', '"relay" must be the relayed address as "ip:port" (or "[ipv6]:port")');
  return { action: 'push', shareId: id, relay };
}

/** "1.2.3.4:5" or "[v6]:5" with an IP literal and a port 1-65535, canonical; else null. */
export function canonicalEndpoint(text: string): string | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(text);
  if (m === null) return null;
  const ip = canonicalIp(m[1] ?? m[2]!);
  const port = Number(m[3]);
  if (ip === null || port < 1 || port > 65535) return null;
  return formatPeerAddr(ip, port);
}
