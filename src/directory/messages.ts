// The messages tracker instances send each other over Redis pub/sub, and the one
// way a message from Redis becomes a typed value: decode() checks every field
// (kind, types, ranges, lengths, address families, shareIds, names) and returns
// either the message or why it was dropped. It never throws. Redis is shared
// infrastructure: one bad client of it, or one bug in another instance, costs one
// message (counted as sobani_directory_invalid_total), never an instance.
//
//   push    requester's instance -> owner's: the push, without any address to
//           send to. The owner writes the requester's replies (within `grant`)
//           and answers with them.
//   result  owner's instance -> requester's: only the reply payloads. The
//           requester's instance sends them to where IT recorded the push came
//           from, and only for a request it has pending with that owner
//           (remote-pushes.ts): a message never names where a datagram goes.
//   claim   a token session's new instance -> its owner's: the client moved here
//           (it holds the token and proved it receives here); `proof` is a MAC
//           under the session key the instances share, over the claim and when it
//           was made (`at`): each is taken once, while it is fresh (remote-claims.ts).
//   handover owner's -> claimer's: the session's state (it ended at the owner), or
//           null (the owner does not hold it); taken only for a claim pending there.
import { randomBytes } from 'node:crypto';
import { DIRECTORY_MAC_BYTES, type SessionKey } from '../auth/session-key.js';
import { Packr, Unpackr } from 'msgpackr';
import { canonicalIp } from '../protocol/address.js';
import { DOCUMENTED, LEGACY, UNKNOWN, type PeerView } from '../protocol/dialect.js';
import { NAT_TYPES } from '../protocol/nat.js';
import { isLocalList } from '../protocol/local-candidates.js';
import { canonicalEndpoint } from '../protocol/request.js';
import { alphabetValue } from '../routing.js';
import { MAX_PUSH_GRANT } from '../shard/requester.js';
import type { SessionState } from '../wire/messages.js';
import { TAG_CHARS } from '../auth/tag.js';

/** A push as it crosses instances: what the owner needs to answer it, and no address to answer to. */
export interface RemotePush {
  /** the target's shareId */
  target: string;
  /** the requester's dialect (protocol/dialect.ts) */
  dialect: number;
  /** what the target is told of the requester */
  requester: PeerView;
  /** reply budget in wire bytes (-1: verified, no limit); the requester's instance enforces it again */
  grant: number;
  /** the requester's replies go to an IPv6 address (their IP + UDP header cost) */
  v6: boolean;
  /** a relayed address the requester allocated for this pair, canonical ip:port */
  relay?: string;
  /** the most one reply may cost, in wire bytes (absent: the grant) */
  cap?: number;
}

export type DirectoryMessage =
  | { k: 'push'; from: string; req: string; f: RemotePush }
  | { k: 'result'; from: string; req: string; replies: Uint8Array[] }
  | { k: 'claim'; from: string; req: string; shareId: string; at: number; proof: string }
  | { k: 'handover'; from: string; req: string; state: SessionState | null };

/**
 * Why a message was dropped (the `reason` label of sobani_directory_invalid_total):
 *   too_large   longer than MAX_MESSAGE_BYTES, not even decoded
 *   undecodable not one MessagePack value
 *   bad_kind    not a map with k = push, result, claim or handover
 *   bad_field   a field missing, of the wrong type, out of range, too long, not canonical
 *   unmatched_result (remote-pushes.ts) a result for no request this instance has pending
 *               with that instance: late (after PEER_UNREACHABLE), answered already, or forged
 *   over_budget (remote-pushes.ts) a result's replies past the grant the request carried
 *               (the ones that fit are sent)
 *   bad_proof   with a shared key file, a message without the key's MAC; and
 *               (remote-claims.ts) a claim whose proof is not the session key's
 *   replayed    (remote-claims.ts) a claim made more than CLAIM_WINDOW_MS ago (or
 *               ahead), or one taken already
 */
export type InvalidReason = 'too_large' | 'undecodable' | 'bad_kind' | 'bad_field' | 'unmatched_result' | 'over_budget' | 'bad_proof' | 'replayed';

export interface Invalid { invalid: InvalidReason; field?: string }

export interface MessageLimits {
  /** every instance on one directory mints shareIds of this length */
  shareIdLength: number;
  maxMultiaddr: number;
}

/** Far above any real message (a push is < 2 KiB, a result at most MAX_REPLIES x MAX_REPLY_BYTES). */
export const MAX_MESSAGE_BYTES = 64 * 1024;
/** A push answers its requester with at most two replies (documented and legacy form); room to spare. */
export const MAX_REPLIES = 4;
/** A pushReceived with the longest multiaddr, JSON-escaped, fits. */
export const MAX_REPLY_BYTES = 8192;
/** "[" + the longest IPv6 text + "]:65535" */
const MAX_ENDPOINT_TEXT = 72;

/** An instance id as config's `instanceId` allows it. */
const INSTANCE_ID = /^[A-Za-z0-9._-]{1,64}$/;
/** A request id as mintReqId makes it: 96 random bits, base64url. */
const REQ_ID = /^[A-Za-z0-9_-]{16}$/;
/** A claim's proof: a 64-bit MAC as base64url (session-key.ts claimProof). */
const PROOF = new RegExp(`^[A-Za-z0-9_-]{${TAG_CHARS}}$`);

/** A request id nobody can guess (a result must name one this instance has pending). */
export function mintReqId(): string {
  return randomBytes(12).toString('base64url');
}

class BadField extends Error {
  constructor(readonly field: string) { super(field); }
}

function bad(field: string): never {
  throw new BadField(field);
}

type Fields = Record<string, unknown>;

/** A map as msgpackr decodes it (a plain object): never an array, a Buffer, a Date or an extension. */
function isPlain(v: unknown): v is Fields {
  return typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype;
}

function own(o: Fields, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(o, key) ? o[key] : undefined;
}

function int(o: Fields, key: string, min: number, max: number, path: string): number {
  const v = own(o, key);
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) bad(path + key);
  return v;
}

function bool(o: Fields, key: string, path: string): boolean {
  const v = own(o, key);
  if (typeof v !== 'boolean') bad(path + key);
  return v;
}

function name(o: Fields, key: string, pattern: RegExp): string {
  const v = own(o, key);
  if (typeof v !== 'string' || !pattern.test(v)) bad(key);
  return v;
}

/** "ip:port" exactly as the tracker writes it (canonical IP, port 1-65535), or bad. */
function endpoint(v: unknown, field: string): string {
  if (typeof v !== 'string' || v.length > MAX_ENDPOINT_TEXT || canonicalEndpoint(v) !== v) bad(field);
  return v;
}

export class DirectoryMessages {
  private readonly packr = new Packr({ useRecords: false });
  private readonly unpackr = new Unpackr({ useRecords: false });
  private readonly mac = new Uint8Array(DIRECTORY_MAC_BYTES);

  /**
   * `key`: the session key the instances share (--session-key-file): every message
   * then ends with its MAC (SipHash-2-4-64 under a subkey of K), and one without
   * the right MAC is dropped before it is decoded (bad_proof). Without it (each
   * instance's key is its own) messages are checked but not authenticated.
   */
  constructor(private readonly limits: MessageLimits, private readonly key: SessionKey | null = null) {}

  /** The bytes to publish; a copy (pack() returns a view into msgpackr's own buffer), with its MAC when the key is shared. */
  encode(m: DirectoryMessage): Uint8Array {
    const packed = this.packr.pack(m);
    if (this.key === null) return Uint8Array.prototype.slice.call(packed);
    const out = new Uint8Array(packed.length + DIRECTORY_MAC_BYTES);
    out.set(packed, 0);
    this.key.directoryMac(out, packed.length, out, packed.length);
    return out;
  }

  /** A message from Redis, its MAC (when the key is shared) and every field checked; never throws. */
  decode(raw: Uint8Array): DirectoryMessage | Invalid {
    if (raw.length > MAX_MESSAGE_BYTES) return { invalid: 'too_large' };
    let body = raw;
    if (this.key !== null) {
      const n = raw.length - DIRECTORY_MAC_BYTES;
      if (n < 1) return { invalid: 'bad_proof' };
      this.key.directoryMac(raw, n, this.mac, 0);
      let diff = 0;
      for (let i = 0; i < DIRECTORY_MAC_BYTES; i++) diff |= this.mac[i]! ^ raw[n + i]!;
      if (diff !== 0) return { invalid: 'bad_proof' };
      body = raw.subarray(0, n);
    }
    let m: unknown;
    try { m = this.unpackr.unpack(body); } catch { return { invalid: 'undecodable' }; }
    if (!isPlain(m)) return { invalid: 'bad_kind' };
    const k = own(m, 'k');
    if (k !== 'push' && k !== 'result' && k !== 'claim' && k !== 'handover') return { invalid: 'bad_kind' };
    try {
      const from = name(m, 'from', INSTANCE_ID);
      const req = name(m, 'req', REQ_ID);
      switch (k) {
        case 'push': return { k, from, req, f: this.push(own(m, 'f')) };
        case 'result': return { k, from, req, replies: replies(own(m, 'replies')) };
        case 'claim': return { k, from, req, shareId: this.shareId(own(m, 'shareId'), 'shareId'), at: int(m, 'at', 0, Number.MAX_SAFE_INTEGER, ''), proof: name(m, 'proof', PROOF) };
        case 'handover': return { k, from, req, state: own(m, 'state') === null ? null : this.state(own(m, 'state')) };
      }
    } catch (err) {
      // anything else a check could throw is a bad field too: the instance goes on
      return { invalid: 'bad_field', field: err instanceof BadField ? err.field : 'unknown' };
    }
  }

  private push(f: unknown): RemotePush {
    if (!isPlain(f)) bad('f');
    const out: RemotePush = {
      target: this.shareId(own(f, 'target'), 'f.target'),
      dialect: int(f, 'dialect', Math.min(UNKNOWN, DOCUMENTED, LEGACY), Math.max(UNKNOWN, DOCUMENTED, LEGACY), 'f.'),
      requester: this.peer(own(f, 'requester')),
      grant: int(f, 'grant', -1, MAX_PUSH_GRANT, 'f.'),
      v6: bool(f, 'v6', 'f.'),
    };
    const relay = own(f, 'relay');
    if (relay !== undefined) out.relay = endpoint(relay, 'f.relay');
    if (own(f, 'cap') !== undefined) out.cap = int(f, 'cap', 0, 1 << 20, 'f.'); // applied within the grant (shard/forwards.ts)
    return out;
  }

  private peer(p: unknown): PeerView {
    if (!isPlain(p)) bad('f.requester');
    const path = 'f.requester.';
    const ip = own(p, 'ip');
    if (typeof ip !== 'string' || canonicalIp(ip) !== ip) bad(path + 'ip');
    const ipv6 = bool(p, 'ipv6', path);
    if (ipv6 !== ip.includes(':')) bad(path + 'ipv6');
    const view: PeerView = {
      ip, port: int(p, 'port', 1, 65535, path), ipv6,
      shareId: this.shareId(own(p, 'shareId'), path + 'shareId'),
      multiaddr: null,
    };
    const multiaddr = own(p, 'multiaddr');
    if (multiaddr !== null) {
      if (typeof multiaddr !== 'string' || multiaddr.length > this.limits.maxMultiaddr) bad(path + 'multiaddr');
      view.multiaddr = multiaddr;
    }
    if (own(p, 'nat') !== undefined) view.nat = int(p, 'nat', 0, NAT_TYPES.length, path);
    if (own(p, 'verified') !== undefined) view.verified = bool(p, 'verified', path);
    const local = own(p, 'local');
    if (local !== undefined) {
      // the same rules as the request field (count, canonical, no loopback or link-local, no repeats)
      if (!isLocalList(local)) bad(path + 'local');
      view.local = local;
    }
    return view;
  }

  private state(v: unknown): SessionState {
    if (!isPlain(v)) bad('state');
    const path = 'state.';
    const out: SessionState = { nat: int(v, 'nat', 0, NAT_TYPES.length, path), relayExpiry: int(v, 'relayExpiry', 0, 0xffffffff, path) };
    const o = own(v, 'override');
    if (o !== undefined) {
      if (!isPlain(o)) bad(path + 'override');
      const ip = own(o, 'ip'), multiaddr = own(o, 'multiaddr');
      if (ip !== null && (typeof ip !== 'string' || canonicalIp(ip) !== ip)) bad(path + 'override.ip');
      if (multiaddr !== null && (typeof multiaddr !== 'string' || multiaddr.length > this.limits.maxMultiaddr)) bad(path + 'override.multiaddr');
      out.override = { ip: ip as string | null, port: int(o, 'port', 0, 65535, path + 'override.'), multiaddr: multiaddr as string | null };
    }
    const local = own(v, 'local');
    if (local !== undefined) {
      if (!isLocalList(local)) bad(path + 'local');
      out.local = local;
    }
    return out;
  }

  private shareId(v: unknown, field: string): string {
    if (typeof v !== 'string' || v.length !== this.limits.shareIdLength) bad(field);
    for (let i = 0; i < v.length; i++) if (alphabetValue(v.charCodeAt(i)) < 0) bad(field);
    return v;
  }
}

function replies(v: unknown): Uint8Array[] {
  if (!Array.isArray(v) || v.length > MAX_REPLIES) bad('replies');
  return v.map((r) => {
    if (!(r instanceof Uint8Array) || r.length === 0 || r.length > MAX_REPLY_BYTES) bad('replies');
    return r;
  });
}
