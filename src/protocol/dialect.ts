// Every difference between the two dialects lives in this file.
//
//   documented (seed README): announce -> announceReceived, pulse -> pulseReceived,
//                             push -> pushReceived
//   legacy (sobani desktop):  announce -> announced, alive -> alived | expired,
//                             push -> pushed
//   both:                     income to the push target, error replies
//
// `{"action":"announce"}` is the same bytes in both, so a session's dialect is
// learned from its keep-alive verb, or earlier from the desktop client's v0.1.2,
// the only client that puts an "id" field in its announce. Until it is known, a reply whose form differs
// is sent in the documented form first, and in the legacy form too when the
// requester's reply budget allows (the desktop client resends until it gets its
// own form, and ignores actions it does not know). The desktop client splits
// "peeraddr" on ':', so it is never shown an IPv6 address.
//
// A reply is given as its forms, fullest first (ReplyForms): the shard sends the
// first one the requester's budget affords, and drops (counting) when none fits.
// Every form carries every field the seed README marks required.
import type { AnnounceReply } from '../config.js';
import { formatPeerAddr } from './address.js';
import { ERROR_CODES, errorJson, type ErrorCode } from './errors.js';
import { NAT_NOT_REPORTED, natName } from './nat.js';
import type { AnnounceRequest } from './request.js';

export const UNKNOWN = 0;
export const DOCUMENTED = 1;
export const LEGACY = 2;
export type Dialect = typeof UNKNOWN | typeof DOCUMENTED | typeof LEGACY;

export const DIALECT_NAMES = ['unknown', 'documented', 'legacy'] as const;

export function dialectOfKeepAlive(action: 'pulse' | 'alive'): Dialect {
  return action === 'alive' ? LEGACY : DOCUMENTED;
}

/**
 * What an announce tells of its sender's dialect. The desktop client's v0.1.2 puts
 * an 8-hex "id" in its announce and alive, so its announce marks it legacy at once: its
 * push, often sent before its first alive, then gets `pushed` first (it ignores
 * `pushReceived`, and the budget may not fit both).
 */
export function dialectOfAnnounce(req: AnnounceRequest): Dialect {
  // `nat` and `local` exist only in the documented dialect
  return req.desktopId ? LEGACY : req.nat !== NAT_NOT_REPORTED || req.local !== undefined ? DOCUMENTED : UNKNOWN;
}

const bytes = (s: string): Uint8Array => Buffer.from(s, 'utf8');

/** A reply's forms, fullest first; each is complete as the seed README defines it. */
export type ReplyForms = readonly (string | Uint8Array)[];

// ---- keep-alive (hot path: constant bytes around the shareId, no allocation)
// The full pulseReceived adds the session's shareId (needed after regeneration).
export const PULSE_OK_PREFIX = bytes('{"action":"pulseReceived","data":{"status":"0","overriden":"false","shareId":"');
export const PULSE_OVERRIDDEN_PREFIX = bytes('{"action":"pulseReceived","data":{"status":"0","overriden":"true","shareId":"');
export const PULSE_OK_SUFFIX = bytes('"}}');
/**
 * pulseReceived exactly as the seed README defines it, without the shareId: sent
 * when the full reply does not fit the budget of a client that has not proved it
 * receives (never with the default 12-character shareIds: see the README).
 */
export const PULSE_OK_SEED = bytes('{"action":"pulseReceived","data":{"status":"0","overriden":"false"}}');
export const PULSE_OVERRIDDEN_SEED = bytes('{"action":"pulseReceived","data":{"status":"0","overriden":"true"}}');
export const ALIVED = bytes('{"action":"alived"}');
/** pulse from an address with no live session: announce again. */
export const PULSE_NO_SESSION = bytes('{"action":"pulseReceived","data":{"status":"1","overriden":"false"}}');
export const EXPIRED = bytes('{"action":"expired"}');

/** The reply to a keep-alive from an address with no live session. */
export function keepAliveNoSession(action: 'pulse' | 'alive'): Uint8Array {
  return action === 'alive' ? EXPIRED : PULSE_NO_SESSION;
}

// ---- announce: while the session's dialect is unknown, by default the documented
// form goes first and the legacy form follows when the budget allows.
export function announceReplies(mode: AnnounceReply, dialect: number, shareId: string): ReplyForms[] {
  const documented = `{"action":"announceReceived","data":{"shareId":"${shareId}"}}`;
  const legacy = `{"action":"announced","data":{"shareId":"${shareId}"}}`;
  if (mode === 'documented' || (mode === 'both' && dialect === DOCUMENTED)) return [[documented]];
  if (mode === 'legacy' || (mode === 'both' && dialect === LEGACY)) return [[legacy]];
  return [[documented], [legacy]];
}

// ---- push from an address with no live session: the sender's dialect is unknown,
// so it is told in both forms; nothing else is revealed and nobody is notified.
export const PUSH_NO_SESSION: readonly ReplyForms[] = [[bytes(errorJson('NO_SESSION'))], [EXPIRED]];

/** What a peer is shown of another: its reported (possibly overridden) address. */
export interface PeerView {
  ip: string; // canonical text
  port: number;
  ipv6: boolean; // true when `ip` is not IPv4 (or IPv4-mapped)
  shareId: string;
  multiaddr: string | null;
  /** protocol/nat.ts: the NAT type the client reported, NAT_NOT_REPORTED if none (absent from older instances) */
  nat?: number;
  /** the client proved it receives at this very address (its shareId came back from it, and no override moved ip or port) */
  verified?: boolean;
  /** local-candidates.ts: the addresses the client reported on its own network (absent: none) */
  local?: readonly string[];
}

/**
 * What a client that reported its NAT (and so knows these fields) is told of its
 * peer: the peer's `nat`, when it reported one, and `peerVerified`. Punching
 * clients send many probes only to a peer that proved it receives where they aim
 * (src/client/punch.ts); a source address alone can be spoofed. Others see nothing new.
 */
function natFields(viewer: PeerView, peer: PeerView): string {
  if ((viewer.nat ?? NAT_NOT_REPORTED) === NAT_NOT_REPORTED) return '';
  const nat = natName(peer.nat ?? NAT_NOT_REPORTED);
  return `${nat === null ? '' : `,"nat":"${nat}"`},"peerVerified":${peer.verified === true}`;
}

/**
 * The peer's local candidates (local-candidates.ts), for a documented-dialect
 * viewer whose own session reported some: only the paired peer ever sees them,
 * and only a client whose own requests carried candidates of its own, so a reply
 * that shows them stays within what its requests cost it. Others see nothing new.
 */
function localField(viewerDialect: number, viewer: PeerView, peer: PeerView): string {
  if (viewerDialect !== DOCUMENTED || viewer.local === undefined || viewer.local.length === 0 || peer.local === undefined || peer.local.length === 0) return '';
  return `,"local":${JSON.stringify(peer.local)}`;
}

export interface PushPlan {
  /** replies to the requester, in order */
  toRequester: ReplyForms[];
  /** payload for the target, or null to notify nobody */
  toTarget: string | null;
}

function error(code: ErrorCode, message: string = ERROR_CODES[code]): PushPlan {
  return { toRequester: [[errorJson(code, message)]], toTarget: null };
}

/**
 * The replies to a push. `relay`: a relayed address the requester allocated for
 * this pair (only a proved requester may name one); the target is told in income,
 * unless it is a legacy client, which could not use it.
 */
export function pushPlan(requesterDialect: number, requester: PeerView, targetDialect: number, target: PeerView, relay: string | null = null): PushPlan {
  // A legacy client cannot read an IPv6 peeraddr; an unknown one might be legacy.
  if (requesterDialect === LEGACY && target.ipv6) return error('PEER_ADDRESS_UNSUPPORTED');
  if (targetDialect !== DOCUMENTED && requester.ipv6) {
    return error('PEER_ADDRESS_UNSUPPORTED', 'the peer may run a legacy client, which cannot read your IPv6 address');
  }
  const peeraddr = formatPeerAddr(target.ip, target.port);
  const aboutTarget = natFields(requester, target);
  const pushReceived = `{"action":"pushReceived","data":{"peeraddr":"${peeraddr}","peerShareId":"${target.shareId}"${aboutTarget}}}`;
  // multiaddr (an extension; up to maxMultiaddr characters) rides along when the budget
  // allows; without it the reply is still complete.
  const documented: ReplyForms = target.multiaddr === null ? [pushReceived]
    : [`{"action":"pushReceived","data":{"peeraddr":"${peeraddr}","peerShareId":"${target.shareId}","multiaddr":${JSON.stringify(target.multiaddr)}${aboutTarget}}}`, pushReceived];
  const withLocal = localForms(documented, localField(requesterDialect, requester, target));
  const legacy: ReplyForms = [`{"action":"pushed","data":{"peeraddr":"${peeraddr}","peerShareId":"${target.shareId}"}}`];
  const toRequester = requesterDialect === DOCUMENTED ? [withLocal]
    : requesterDialect === LEGACY ? [legacy]
    : target.ipv6 ? [documented] : [documented, legacy];
  const relayField = relay !== null && targetDialect !== LEGACY ? `,"relay":"${relay}"` : '';
  const toTarget = `{"action":"income","data":{"peeraddr":"${formatPeerAddr(requester.ip, requester.port)}","peerShareId":"${requester.shareId}"${natFields(target, requester)}${relayField}${localField(targetDialect, target, requester)}}}`;
  return { toRequester, toTarget };
}

/** A documented reply's forms with `local` added to each (fullest first), then without it: the budget drops it first. */
function localForms(forms: ReplyForms, local: string): ReplyForms {
  if (local === '') return forms;
  return [...forms.map((f) => `${(f as string).slice(0, -2)}${local}}}`), ...forms];
}

// ---- relay credentials (documented dialect only: the desktop client cannot relay)
export function relayReceived(urls: readonly string[], c: { username: string; credential: string; ttl: number }): string {
  return JSON.stringify({ action: 'relayReceived', data: { urls, username: c.username, credential: c.credential, ttl: c.ttl } });
}
