// Token requests (docs/security.md): a pulse, push or relay that carries its
// session's token is the session's, whatever its source address says. This file
// decides, for such a request, which session it is for and whether it is
// authenticated; and where a token session is, and how it moves (issue 24):
//   1. the token's shareId routes to a shard: another one gets the request, raw,
//      and handles it as if it had arrived there (Shard.forwardRequest);
//   2. the token's MAC is checked (TOKEN_INVALID, untagged: the tracker can prove
//      nothing to a holder of a wrong token); from here on every reply is tagged;
//   3. the session must be live (NO_SESSION, tagged); with other instances on one
//      directory, one that is not here may be at another: claims.ts;
//   4. from the session's own address the request is authenticated: its replies are
//      exempt from the 3x budget. From another address it is answered within that
//      budget with what the tracker sees ("observed") and a path challenge, and
//      nothing changes; with the right challenge for that very address the session
//      moves there (it proved it receives there), and the request is served.
import { ADDR_BYTES, formatIp, isV4Mapped } from '../protocol/address.js';
import { DOCUMENTED, PULSE_NO_SESSION } from '../protocol/dialect.js';
import { ERROR_CODES } from '../protocol/errors.js';
import type { Authenticated, TokenField } from '../protocol/request.js';
import { alphabetValue, shardOfBucket } from '../routing.js';
import type { ReplyWriter } from '../wire/frame.js';
import { TAG_CHARS } from '../auth/tag.js';
import type { ShardContext } from './context.js';
import { AUTH, VERIFIED } from './peer-table.js';
import { sessionLimitOf } from './room.js';

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');
const OBSERVED = bytes('","observed":"');
const CHALLENGE = bytes('","challenge":"');
const PULSE_MOVE_PREFIX = bytes('{"action":"pulseReceived","data":{"status":"0","overriden":"false","shareId":"');
const MOVE_ERROR_PREFIX = bytes(`{"action":"error","data":{"code":"CHALLENGE_REQUIRED","message":"${ERROR_CODES.CHALLENGE_REQUIRED}`);
const END_DATA = bytes('"}}');

/** Longest observed text: "[" + IPv6 (45) + "]:" + 5 digits. */
const MAX_OBSERVED = 53;

/**
 * The session a token request is for, authenticated, or -1: the request has been
 * answered (or forwarded) here, and its handler has nothing to do. `forwarded`:
 * it came from another shard (it is never forwarded twice).
 */
export function authenticate(s: ShardContext, action: 'pulse' | 'push' | 'relay', req: Authenticated, forwarded: boolean): number {
  const r = s.requester, t = s.sessions.table, idLen = t.idLength;
  const tok = req.token as TokenField;
  const bucket = (alphabetValue(tok.chars[tok.at]!) << 6) | alphabetValue(tok.chars[tok.at + 1]!);
  const shard = shardOfBucket(bucket, s.opts.shards);
  if (shard !== s.opts.index && !forwarded) {
    s.forwardRequest(shard);
    s.counters.tokenForwarded++;
    return -1;
  }
  if (!s.key.verifyChars(tok.chars, tok.at, tok.length, idLen)) {
    r.error('TOKEN_INVALID');
    return -1;
  }
  r.dialect = DOCUMENTED;
  r.tagWith(s.key.verifiedTagKey()); // the secret verifyChars just computed: not hashed again
  const slot = t.findByShareIdBytes(tok.chars, tok.at);
  if (slot < 0) {
    // with other instances, the session may be at one of them: it follows its client here (claims.ts)
    if (s.claimAnswer === null && s.pointers.enabled) { claimHere(s, action, req, tok); return -1; }
    s.counters.unknownSession(action);
    const answer = s.claimAnswer;
    if (answer !== null && answer !== 'none') r.error(answer);
    else if (action === 'pulse') r.send(PULSE_NO_SESSION);
    else r.error('NO_SESSION');
    return -1;
  }
  if (t.isAt(slot, r.key, 0, r.port)) {
    // it got its token at this address, so it receives here
    t.flags[slot]! |= AUTH | VERIFIED;
    r.exempt = true;
    return slot;
  }
  if (req.challenge !== null && s.key.checkChallengeOfBytes(t.ids, slot * idLen, idLen, r.key, 0, r.port, req.challenge)) {
    s.sessions.moveTo(slot, r.key, r.port, s.socket);
    t.flags[slot]! |= AUTH;
    s.pointers.write(slot);
    s.counters.moved++;
    r.exempt = true;
    return slot;
  }
  askForChallenge(s, action, t.ids, slot * idLen);
  return -1;
}

/** A valid token for a session no shard here holds, with other instances on the directory: challenge the path, then claim it (claims.ts). */
function claimHere(s: ShardContext, action: 'pulse' | 'push' | 'relay', req: Authenticated, tok: TokenField): void {
  const r = s.requester, idLen = s.sessions.table.idLength;
  if (req.challenge === null || !s.key.checkChallengeOfBytes(tok.chars, tok.at, idLen, r.key, 0, r.port, req.challenge)) {
    askForChallenge(s, action, tok.chars, tok.at);
    return;
  }
  const limit = sessionLimitOf(s);
  if (limit !== null) { r.error(limit); return; }
  // a claim costs Redis what a push to another instance does: it takes a push token (pushRate)
  if (r.ipSlot >= 0 && !s.ips.takePushToken(r.ipSlot)) { s.counters.drop('push_rate_limited'); return; }
  s.claim(Buffer.from(tok.chars.buffer, tok.chars.byteOffset + tok.at, idLen).toString('latin1'));
}

/**
 * The reply to a token request from an address its session is not at (or, with
 * other instances, for a session not here: claims.ts): what the tracker sees there,
 * and the challenge that moves it there. The shareId is ids[at, at + idLength).
 */
function askForChallenge(s: ShardContext, action: 'pulse' | 'push' | 'relay', ids: Uint8Array, at: number): void {
  const r = s.requester, idLen = s.sessions.table.idLength;
  const prefix = action === 'pulse' ? PULSE_MOVE_PREFIX : MOVE_ERROR_PREFIX;
  const idBytes = action === 'pulse' ? idLen : 0;
  const size = prefix.length + idBytes + OBSERVED.length + observedLength(r.key, r.port) + CHALLENGE.length + TAG_CHARS + END_DATA.length;
  if (!r.allow(size)) { s.counters.drop('amplification'); return; }
  const w = r.begin();
  w.bytes(prefix);
  if (idBytes > 0) w.bytes(ids, at, idLen);
  writeObserved(w, r.key, r.port);
  w.bytes(CHALLENGE);
  const room = w.room(TAG_CHARS);
  s.key.challengeOfBytes(ids, at, idLen, r.key, 0, r.port, room, w.position);
  w.skip(TAG_CHARS);
  w.bytes(END_DATA);
  r.end();
  if (action !== 'pulse') s.counters.error('CHALLENGE_REQUIRED');
}

/**
 * The reply to a token announce (documented form only), tagged with the new
 * session's secret: its shareId, its token and, when the budget allows (the 3x of an
 * unauthenticated announce), what the tracker sees.
 */
export function tokenAnnounceReply(s: ShardContext, slot: number): void {
  const r = s.requester, t = s.sessions.table;
  const shareId = t.shareId(slot);
  const token = s.key.tokenOf(shareId);
  r.tagWith(s.key.tagKeyOf(shareId));
  const head = `{"action":"announceReceived","data":{"shareId":"${shareId}","token":"${token}`;
  const withObserved = head.length + OBSERVED.length + observedLength(r.key, r.port) + END_DATA.length;
  if (r.allow(withObserved)) {
    const w = r.begin();
    w.text(head);
    writeObserved(w, r.key, r.port);
    w.bytes(END_DATA);
    r.end();
    return;
  }
  r.send(head + '"}}');
}

function decimalLength(n: number): number {
  return n >= 10000 ? 5 : n >= 1000 ? 4 : n >= 100 ? 3 : n >= 10 ? 2 : 1;
}

/** Characters of the observed address "ip:port" ("[ipv6]:port"). */
export function observedLength(key: Uint8Array, port: number): number {
  if (!isV4Mapped(key, 0)) return formatIp(key, 0).length + 3 + decimalLength(port);
  let n = 3 + 1 + decimalLength(port);
  for (let i = 12; i < 16; i++) n += decimalLength(key[i]!);
  return n;
}

/** Writes `","observed":"ip:port` (IPv4: digit by digit, no string made). */
export function writeObserved(w: ReplyWriter, key: Uint8Array, port: number): void {
  w.bytes(OBSERVED);
  const b = w.room(MAX_OBSERVED);
  let p = w.position;
  if (isV4Mapped(key, 0)) {
    for (let i = 12; i < ADDR_BYTES; i++) {
      if (i > 12) b[p++] = 46; // .
      p = digits(b, p, key[i]!);
    }
  } else {
    b[p++] = 91; // [
    p += b.write(formatIp(key, 0), p, 'latin1');
    b[p++] = 93; // ]
  }
  b[p++] = 58; // :
  p = digits(b, p, port);
  w.skip(p - w.position);
}

function digits(b: Uint8Array, p: number, n: number): number {
  const len = decimalLength(n);
  // `(n / 10) | 0` keeps n an integer (Math.floor made it a double, and `%` a float modulo: 3 % of a token pulse)
  for (let i = len - 1; i >= 0; i--) { b[p + i] = 48 + (n % 10); n = (n / 10) | 0; }
  return p + len;
}
