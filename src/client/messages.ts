/**
 * Everything the client knows about the wire: what each dialect sends, and
 * how any tracker reply (of either dialect) is read into one typed union.
 * The rest of the client never looks at an `action` string.
 */

import { NAT_TYPES, type NatType } from '../protocol/nat.js';

export type Dialect = 'documented' | 'legacy';
export type { NatType };

/** Options of a documented-dialect `pulse`. */
export interface PulseOptions {
  /** Ask the tracker to store `ip` / `port` / `multiaddr` instead of what it observed. */
  override?: boolean;
  ip?: string;
  port?: number | string;
  multiaddr?: string;
  /** Ask the tracker to mint a new shareId for this session. */
  regenerateShareId?: boolean;
}

const ANNOUNCE = Buffer.from('{"action":"announce"}');
// The tracker answers a source that has not yet shown it receives at its address
// with at most 3x the bytes it sent. Padding the announce (unknown fields are
// ignored), as QUIC pads its first packet, makes room for both announce forms.
const PADDED_ANNOUNCE = Buffer.from(JSON.stringify({ action: 'announce', pad: 'x'.repeat(18) }));
const ALIVE = Buffer.from('{"action":"alive"}');
const PULSE = Buffer.from('{"action":"pulse"}');

/**
 * The legacy client's exact bytes, or the padded documented form; with `nat` (the
 * documented dialect only), the NAT type is reported from the first datagram on;
 * with `token`, the documented announce asks for a session token (docs/security.md).
 */
export function announceRequest(dialect: Dialect, nat?: NatType, token = false): Buffer {
  if (dialect === 'legacy') return ANNOUNCE;
  if (!token) return nat === undefined ? PADDED_ANNOUNCE : Buffer.from(JSON.stringify({ action: 'announce', nat, pad: 'x'.repeat(18) }));
  // the token reply (shareId, token, observed, tag) is ~150 bytes: the padding keeps it within 3x
  return Buffer.from(JSON.stringify(nat === undefined ? { action: 'announce', token: true, pad: 'x'.repeat(18) } : { action: 'announce', token: true, nat, pad: 'x'.repeat(18) }));
}

/**
 * The automatic documented keep-alive: a pulse carrying our own shareId, which
 * proves to the tracker that we receive at our address (so it never trims its
 * replies to us, nor holds back income), and our NAT type when we know it. A token
 * session sends its token instead (it names the shareId, and proves more), and
 * answers a path challenge with it (`challenge`, spec "Paths").
 */
export function provingPulse(shareId: string, nat?: NatType, token?: string, challenge?: string): Buffer {
  const msg: Record<string, unknown> = token === undefined ? { action: 'pulse', shareId } : { action: 'pulse', token };
  if (nat !== undefined) msg.nat = nat;
  if (challenge !== undefined) msg.challenge = challenge;
  return Buffer.from(JSON.stringify(msg));
}

/** The keep-alive of each dialect: `pulse` (documented) or `alive` (legacy). */
export function keepAliveRequest(dialect: Dialect, opts: PulseOptions = {}, token?: string): Buffer {
  const wantsExtras = opts.override === true || opts.regenerateShareId === true;
  if (dialect === 'legacy') {
    if (wantsExtras) throw new TypeError('override and shareId regeneration exist only in the documented dialect');
    return ALIVE;
  }
  if (!wantsExtras && token === undefined) return PULSE;
  const msg: Record<string, unknown> = { action: 'pulse' };
  if (token !== undefined) msg.token = token;
  if (opts.override === true) {
    msg.override = true;
    if (opts.ip !== undefined) msg.ip = opts.ip;
    if (opts.port !== undefined) msg.port = String(opts.port);
    if (opts.multiaddr !== undefined) msg.multiaddr = opts.multiaddr;
  }
  if (opts.regenerateShareId === true) msg.shareId = true;
  return Buffer.from(JSON.stringify(msg));
}

/** A push; with `relay`, the relayed address we allocated for this pair (the target is told in income). */
export function pushRequest(shareId: string, relay?: string, token?: string): Buffer {
  const msg: Record<string, unknown> = { action: 'push', shareId };
  if (relay !== undefined) msg.relay = relay;
  if (token !== undefined) msg.token = token;
  return Buffer.from(JSON.stringify(msg));
}

export const RELAY_REQUEST = Buffer.from('{"action":"relay"}');

/** A relay request; a token session sends its token. */
export function relayRequest(token?: string): Buffer {
  return token === undefined ? RELAY_REQUEST : Buffer.from(JSON.stringify({ action: 'relay', token }));
}

/** The error a token client acts on only when no tagged reply came for a whole session timeout (it is never tagged). */
export const TOKEN_INVALID = 'TOKEN_INVALID';

/** The error codes that answer a relay request (errors carry no request id). */
export const RELAY_ERRORS: ReadonlySet<string> = new Set(['RELAY_NOT_CONFIGURED', 'PROOF_REQUIRED', 'RELAY_RATE_LIMITED']);

/** A tracker reply, whichever dialect it came in. */
export type TrackerReply =
  /** `announceReceived` or `announced`. */
  | { kind: 'announced'; shareId: string; token?: string; observed?: string; raw: RawMessage }
  /** `pulseReceived`, `alived` (status "0") or a legacy `expired`/`expire` (status "1"). */
  | { kind: 'pulse'; status: '0' | '1'; overriden: boolean; shareId?: string; token?: string; observed?: string; challenge?: string; legacyExpired: boolean; raw: RawMessage }
  /** `pushReceived` or `pushed`; `nat` and `peerVerified` come to clients that reported their own nat. */
  | { kind: 'pushed'; peeraddr: string; peerShareId?: string; multiaddr?: string; nat?: NatType; peerVerified?: boolean; raw: RawMessage }
  | { kind: 'income'; peeraddr: string; peerShareId: string; nat?: NatType; peerVerified?: boolean; relay?: string; raw: RawMessage }
  /** `relayReceived`: TURN credentials for the tracker's relay(s). */
  | { kind: 'relay'; urls: string[]; username: string; credential: string; ttl: number; raw: RawMessage }
  | { kind: 'error'; code: string; message: string; shareId?: string; raw: RawMessage }
  /** Well-formed JSON with an action this client does not know: ignored, like the desktop client does. */
  | { kind: 'unknown'; raw: RawMessage };

export interface RawMessage {
  action: string;
  data?: unknown;
  [key: string]: unknown;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** The optional fields about a peer's NAT, as present in `data`. */
function aboutPeer(data: Record<string, unknown>): { nat?: NatType; peerVerified?: boolean } {
  const nat = NAT_TYPES.find((t) => t === data.nat);
  return {
    ...(nat !== undefined ? { nat } : {}),
    ...(typeof data.peerVerified === 'boolean' ? { peerVerified: data.peerVerified } : {}),
  };
}

/** What a token session's replies add: its token (announce, a regenerated shareId), where the tracker saw us, a path challenge. */
export function tokenFields(msg: RawMessage): { token?: string; observed?: string; challenge?: string } {
  const data = (typeof msg.data === 'object' && msg.data !== null ? msg.data : {}) as Record<string, unknown>;
  const token = str(data.token), observed = str(data.observed) ?? str(msg.observed), challenge = str(data.challenge) ?? str(msg.challenge);
  return { ...(token ? { token } : {}), ...(observed ? { observed } : {}), ...(challenge && /^[A-Za-z0-9_-]{11}$/.test(challenge) ? { challenge } : {}) };
}

/** Reads one datagram from the tracker; `undefined` if it is not a JSON object with an action. */
export function parseReply(buf: Buffer): TrackerReply | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(buf.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null || typeof (raw as RawMessage).action !== 'string') return undefined;
  const msg = raw as RawMessage;
  const data = (typeof msg.data === 'object' && msg.data !== null ? msg.data : {}) as Record<string, unknown>;
  switch (msg.action) {
    case 'announceReceived':
    case 'announced': {
      const shareId = str(data.shareId);
      return shareId ? { kind: 'announced', shareId, ...tokenFields(msg), raw: msg } : { kind: 'unknown', raw: msg };
    }
    case 'pulseReceived': {
      const shareId = str(data.shareId);
      return {
        kind: 'pulse',
        status: str(data.status) === '0' ? '0' : '1',
        overriden: str(data.overriden) === 'true' || data.overriden === true,
        ...(shareId ? { shareId } : {}),
        ...tokenFields(msg),
        legacyExpired: false,
        raw: msg,
      };
    }
    case 'alived':
      return { kind: 'pulse', status: '0', overriden: false, legacyExpired: false, raw: msg };
    case 'expired':
    case 'expire': // the Go tracker's spelling
      return { kind: 'pulse', status: '1', overriden: false, legacyExpired: true, raw: msg };
    case 'pushReceived':
    case 'pushed': {
      const peeraddr = str(data.peeraddr);
      if (!peeraddr) return { kind: 'unknown', raw: msg };
      const peerShareId = str(data.peerShareId);
      const multiaddr = str(data.multiaddr);
      return {
        kind: 'pushed',
        peeraddr,
        ...(peerShareId ? { peerShareId } : {}),
        ...(multiaddr ? { multiaddr } : {}),
        ...aboutPeer(data),
        raw: msg,
      };
    }
    case 'income': {
      const peeraddr = str(data.peeraddr);
      const peerShareId = str(data.peerShareId);
      const relay = str(data.relay);
      return peeraddr && peerShareId ? { kind: 'income', peeraddr, peerShareId, ...aboutPeer(data), ...(relay ? { relay } : {}), raw: msg } : { kind: 'unknown', raw: msg };
    }
    case 'relayReceived': {
      const urls = Array.isArray(data.urls) ? data.urls.filter((u): u is string => typeof u === 'string') : [];
      const username = str(data.username), credential = str(data.credential);
      const ttl = typeof data.ttl === 'number' ? data.ttl : NaN;
      return urls.length > 0 && username && credential && ttl >= 0 ? { kind: 'relay', urls, username, credential, ttl, raw: msg } : { kind: 'unknown', raw: msg };
    }
    case 'error': {
      const shareId = str(data.shareId);
      return {
        kind: 'error',
        code: str(data.code) ?? 'UNKNOWN',
        message: str(data.message) ?? '',
        ...(shareId ? { shareId } : {}),
        raw: msg,
      };
    }
    default:
      return { kind: 'unknown', raw: msg };
  }
}
