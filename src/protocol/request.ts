// Parsing and validation of one request datagram. Pure: bytes in, a typed
// request or an error out; never throws. Both dialects share these requests:
// they differ only in the keep-alive verb (pulse / alive) and in the replies
// (see dialect.ts).
import { canonicalIp, formatPeerAddr } from './address.js';
import type { ErrorCode } from './errors.js';
import { parseLocalField } from './local-candidates.js';
import { NAT_FIELD_ERROR, NAT_NOT_REPORTED, natCode } from './nat.js';
import { alphabetValue } from '../routing.js';
import { SECRET_CHARS, TAG_CHARS } from '../auth/tag.js';

/**
 * A session token as a request carried it: its characters at chars[at, at + length)
 * (`<shareId>.<22 base64url characters>`, checked for form only: the MAC is the
 * shard's to check). On the fast path `chars` is the datagram itself: no string is made.
 */
export interface TokenField { chars: Uint8Array; at: number; length: number }

/** What a token-bearing request may carry besides its own fields (docs/security.md). */
export interface Authenticated {
  /** The session token, or null: the request locates its session by source address. */
  readonly token: TokenField | null;
  /** The path challenge the tracker sent to this source address (a move, docs/security.md), or null. */
  readonly challenge: string | null;
}

export interface AnnounceRequest {
  readonly action: 'announce';
  /** The message has an "id" field: only the desktop client's v0.1.2 sends one (see dialect.ts). */
  readonly desktopId: boolean;
  /** The `nat` field (protocol/nat.ts natCode), or NAT_NOT_REPORTED. */
  readonly nat: number;
  /** The `local` field (local-candidates.ts), canonical; [] clears; absent: unchanged. */
  readonly local?: readonly string[];
  /** `"token":true`: the client asks for a session token (documented dialect). */
  readonly wantsToken: boolean;
}
export interface AliveRequest {
  readonly action: 'alive';
  /** The desktop client's v0.1.2 "id" (8 hex characters) as a number; absent from later builds' alive. */
  readonly id?: number;
}
export interface PulseRequest extends Authenticated {
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
export interface PushRequest extends Authenticated {
  readonly action: 'push';
  readonly shareId: string;
  /** A relayed address ("ip:port", canonical) the requester allocated for this pair (the README's "Relay"), or null. */
  readonly relay: string | null;
}
export interface RelayRequest extends Authenticated { readonly action: 'relay' }
export interface InvalidRequest { readonly action: 'invalid'; readonly code: ErrorCode; readonly message?: string }

export type Request = AnnounceRequest | AliveRequest | PulseRequest | PushRequest | RelayRequest | InvalidRequest;

export interface ParseLimits {
  readonly shareIdLength: number;
  readonly maxMultiaddr: number;
}

const ANNOUNCE: AnnounceRequest = Object.freeze({ action: 'announce', desktopId: false, nat: NAT_NOT_REPORTED, wantsToken: false });
const DESKTOP_ANNOUNCE: AnnounceRequest = Object.freeze({ action: 'announce', desktopId: true, nat: NAT_NOT_REPORTED, wantsToken: false });
const ALIVE: AliveRequest = Object.freeze({ action: 'alive' });
/** The desktop client's v0.1.2 alive, `{"id":"<8 hex>","action":"alive"}`: one object, refilled per request (hot path). */
const DESKTOP_ALIVE: { action: 'alive'; id: number } = { action: 'alive', id: 0 };
const DESKTOP_ALIVE_HEAD = Buffer.from('{"id":"'), DESKTOP_ALIVE_TAIL = Buffer.from('","action":"alive"}');
const DESKTOP_ALIVE_LENGTH = DESKTOP_ALIVE_HEAD.length + 8 + DESKTOP_ALIVE_TAIL.length;

function hexValue(c: number): number {
  return c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
}

/** The 8 hex characters at buf[at] as a number, or -1. */
function hexId(buf: Uint8Array, at: number): number {
  let v = 0;
  for (let i = 0; i < 8; i++) {
    const d = hexValue(buf[at + i]!);
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

/** The desktop v0.1.2 alive's exact bytes, or null. */
function desktopAlive(buf: Uint8Array, off: number, len: number): AliveRequest | null {
  if (len !== DESKTOP_ALIVE_LENGTH) return null;
  for (let i = 0; i < DESKTOP_ALIVE_HEAD.length; i++) if (buf[off + i] !== DESKTOP_ALIVE_HEAD[i]) return null;
  const tail = off + DESKTOP_ALIVE_HEAD.length + 8;
  for (let i = 0; i < DESKTOP_ALIVE_TAIL.length; i++) if (buf[tail + i] !== DESKTOP_ALIVE_TAIL[i]) return null;
  const id = hexId(buf, off + DESKTOP_ALIVE_HEAD.length);
  if (id < 0) return null;
  DESKTOP_ALIVE.id = id;
  return DESKTOP_ALIVE;
}

/** An alive parsed as JSON: with its "id" when it is 8 hex characters (any other id is ignored, as before). */
function parseAlive(m: Record<string, unknown>): AliveRequest {
  if (typeof m.id !== 'string' || m.id.length !== 8) return ALIVE;
  const id = hexId(Buffer.from(m.id, 'latin1'), 0);
  return id < 0 ? ALIVE : { action: 'alive', id };
}
const RELAY: RelayRequest = Object.freeze({ action: 'relay', token: null, challenge: null });
const PLAIN_PULSE: PulseRequest = Object.freeze({
  action: 'pulse', override: false, ip: null, port: 0, multiaddr: null, regenerate: false, proof: null, nat: NAT_NOT_REPORTED, token: null, challenge: null,
});

// `{"action":"pulse","token":"<token>"}`, the token client's keep-alive: matched by
// its constant prefix and suffix, its token read in place into the one mutable
// request below (valid until the next parse; the shard handles a request before
// it parses the next), so it costs no object and no string either.
const TOKEN_PULSE_PREFIX = Buffer.from('{"action":"pulse","token":"');
const TOKEN_PULSE_SUFFIX = Buffer.from('"}');
const tokenInPlace: TokenField = { chars: new Uint8Array(0), at: 0, length: 0 };
const TOKEN_PULSE: PulseRequest = { ...PLAIN_PULSE, token: tokenInPlace };

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

/** Whether chars[at, at+n) is a token in form: shareId characters, '.', 22 base64url characters. */
function tokenInForm(chars: Uint8Array, at: number, n: number, idLength: number): boolean {
  if (n !== idLength + 1 + SECRET_CHARS || chars[at + idLength] !== 46 /* . */) return false;
  for (let i = 0; i < idLength; i++) if (alphabetValue(chars[at + i]!) < 0) return false;
  // the shareId alphabet is base64url's own characters, in another order
  for (let i = idLength + 1; i < n; i++) if (alphabetValue(chars[at + i]!) < 0) return false;
  return true;
}

const TOKEN_FORM = '"token" must be the token the announce reply gave (shareId, ".", 22 characters)';

/** The token field of a parsed message: null when absent, undefined when not in form. */
function tokenOf(m: Record<string, unknown>, limits: ParseLimits): TokenField | null | undefined {
  const t = m.token;
  if (t === undefined || t === null) return null;
  if (typeof t !== 'string' || t.length !== limits.shareIdLength + 1 + SECRET_CHARS) return undefined;
  const chars = Buffer.from(t, 'latin1');
  return tokenInForm(chars, 0, chars.length, limits.shareIdLength) ? { chars, at: 0, length: chars.length } : undefined;
}

/** The challenge field: null when absent, undefined when not 11 base64url characters. */
function challengeOf(m: Record<string, unknown>): string | null | undefined {
  const c = m.challenge;
  if (c === undefined || c === null) return null;
  if (typeof c !== 'string' || c.length !== TAG_CHARS) return undefined;
  for (let i = 0; i < c.length; i++) if (alphabetValue(c.charCodeAt(i)) < 0) return undefined;
  return c;
}

const CHALLENGE_FORM = '"challenge" must be the 11 characters of the challenge the tracker sent';

export function parseRequest(buf: Uint8Array, off: number, len: number, limits: ParseLimits): Request {
  for (const [bytes, req] of FAST) if (bytesEqual(buf, off, len, bytes)) return req;
  const alive = desktopAlive(buf, off, len);
  if (alive !== null) return alive;
  const tokenLen = limits.shareIdLength + 1 + SECRET_CHARS;
  if (len === TOKEN_PULSE_PREFIX.length + tokenLen + TOKEN_PULSE_SUFFIX.length &&
    bytesEqual(buf, off, TOKEN_PULSE_PREFIX.length, TOKEN_PULSE_PREFIX) &&
    bytesEqual(buf, off + len - TOKEN_PULSE_SUFFIX.length, TOKEN_PULSE_SUFFIX.length, TOKEN_PULSE_SUFFIX)) {
    const at = off + TOKEN_PULSE_PREFIX.length;
    if (!tokenInForm(buf, at, tokenLen, limits.shareIdLength)) return invalid('INVALID_FIELD', TOKEN_FORM);
    tokenInPlace.chars = buf; tokenInPlace.at = at; tokenInPlace.length = tokenLen;
    return TOKEN_PULSE;
  }

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
    case 'alive': return parseAlive(m);
    case 'pulse': return withLocal(m, parsePulse(m, limits));
    case 'push': return parsePush(m, limits);
    case 'relay': {
      const token = tokenOf(m, limits), challenge = challengeOf(m);
      if (token === undefined) return invalid('INVALID_FIELD', TOKEN_FORM);
      if (challenge === undefined) return invalid('INVALID_FIELD', CHALLENGE_FORM);
      return token === null && challenge === null ? RELAY : { action: 'relay', token, challenge };
    }
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
  const wantsToken = m.token === undefined || m.token === null ? false : m.token;
  if (typeof wantsToken !== 'boolean') {
    return invalid('INVALID_FIELD', 'in announce, "token" must be true (to get a session token) or false; later requests carry the token itself');
  }
  if (nat === NAT_NOT_REPORTED && !wantsToken) return m.id !== undefined ? DESKTOP_ANNOUNCE : ANNOUNCE;
  return { action: 'announce', desktopId: m.id !== undefined, nat, wantsToken };
}

function parsePulse(m: Record<string, unknown>, limits: ParseLimits): Request {
  const nat = natOf(m);
  if (nat < 0) return invalid('INVALID_FIELD', NAT_FIELD_ERROR);
  const token = tokenOf(m, limits), challenge = challengeOf(m);
  if (token === undefined) return invalid('INVALID_FIELD', TOKEN_FORM);
  if (challenge === undefined) return invalid('INVALID_FIELD', CHALLENGE_FORM);
  const override = flag(m.override);
  if (override === null) return invalid('INVALID_FIELD', '"override" must be true or false');
  // shareId: true mints a new id; the session's own id (a string of the id's
  // length) proves the client got it, i.e. that it receives at its address.
  const proof = typeof m.shareId === 'string' && m.shareId.length === limits.shareIdLength ? m.shareId : null;
  const regenerate = proof === null ? flag(m.shareId) : false;
  if (regenerate === null) {
    return invalid('INVALID_FIELD', 'in pulse, "shareId" must be true or false (true mints a new shareId), or your own shareId');
  }
  if (!override) {
    return regenerate || proof !== null || nat !== NAT_NOT_REPORTED || token !== null || challenge !== null
      ? { ...PLAIN_PULSE, regenerate, proof, nat, token, challenge } : PLAIN_PULSE;
  }

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
  return { action: 'pulse', override: true, ip, port, multiaddr, regenerate, proof, nat, token, challenge };
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
  const token = tokenOf(m, limits), challenge = challengeOf(m);
  if (token === undefined) return invalid('INVALID_FIELD', TOKEN_FORM);
  if (challenge === undefined) return invalid('INVALID_FIELD', CHALLENGE_FORM);
  if (m.relay === undefined || m.relay === null) return { action: 'push', shareId: id, relay: null, token, challenge };
  const relay = typeof m.relay === 'string' && m.relay.length <= 72 ? canonicalEndpoint(m.relay) : null;
  if (relay === null) return invalid('INVALID_FIELD', '"relay" must be the relayed address as "ip:port" (or "[ipv6]:port")');
  return { action: 'push', shareId: id, relay, token, challenge };
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
