// The tracker's STUN Binding server, as bytes: what a request asks for, and the
// response written in place. RFC 8489 (Binding, FINGERPRINT, errors 400 and 420)
// and RFC 5780 (NAT behaviour discovery: CHANGE-REQUEST, RESPONSE-PORT, PADDING,
// RESPONSE-ORIGIN, OTHER-ADDRESS). The shard decides whether and where to send
// (shard.ts: the reply budget, the socket); this file has no sockets and no clocks,
// and it allocates nothing per request.
import {
  ATTR, CHANGE_IP, CHANGE_PORT, CLASS_ERROR, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS, HEADER_BYTES, MAGIC_COOKIE, METHOD,
  addressValueBytes, classOf, fingerprint, hasValidHeader, messageType, methodOf, typeOf, writeAddressValue,
} from './codec.js';

export const BINDING_SUCCESS = messageType(METHOD.BINDING, CLASS_SUCCESS);

/**
 * What a STUN message is, for the server:
 *   binding             a Binding request to answer
 *   indication          a Binding indication (a keep-alive): no response
 *   bad-request         a request with a valid header that cannot be served: 400
 *   unknown-attributes  a request with comprehension-required attributes this server does not know: 420
 *   not-a-request       a response or error response, or a non-Binding indication: dropped
 *   malformed           no valid header: dropped
 *   bad-fingerprint     a FINGERPRINT that does not match: dropped (RFC 8489 7.3)
 */
export type StunVerdict = 'binding' | 'indication' | 'bad-request' | 'unknown-attributes' | 'not-a-request' | 'malformed' | 'bad-fingerprint';

/** UNKNOWN-ATTRIBUTES lists at most this many (the rest are still refused). */
const MAX_UNKNOWN = 8;

/** A request as read; one instance is reused for every request. */
export class BindingRequest {
  verdict: StunVerdict = 'malformed';
  /** Why a bad-request is refused (the reason phrase). */
  reason = '';
  /** The request ends with a FINGERPRINT, so the response does too. */
  fingerprint = false;
  /** CHANGE-REQUEST flags (CHANGE_IP | CHANGE_PORT), 0 if absent. */
  change = 0;
  /** RESPONSE-PORT, 0 if absent. */
  responsePort = 0;
  /**
   * Bytes of the request's PADDING value, 0 if absent. The response carries as
   * many (RFC 5780 7.6: a client pads to test fragmentation), within the budget.
   */
  padding = 0;
  readonly unknown = new Uint16Array(MAX_UNKNOWN);
  unknownCount = 0;
}

/**
 * Comprehension-required attributes a Binding server understands. Authentication
 * attributes are read and ignored (this server asks for none, as STUN servers for
 * NAT discovery do); CHANGE-REQUEST only where a second address exists.
 */
function understood(type: number, discovery: boolean): boolean {
  switch (type) {
    case ATTR.MAPPED_ADDRESS: case ATTR.XOR_MAPPED_ADDRESS: case ATTR.USERNAME: case ATTR.MESSAGE_INTEGRITY:
    case ATTR.MESSAGE_INTEGRITY_SHA256: case ATTR.USERHASH: case ATTR.REALM: case ATTR.NONCE: case ATTR.PASSWORD_ALGORITHM:
    case ATTR.ERROR_CODE: case ATTR.UNKNOWN_ATTRIBUTES: case ATTR.PADDING: case ATTR.RESPONSE_PORT:
      return true;
    case ATTR.CHANGE_REQUEST:
      return discovery;
    default:
      return type >= 0x8000; // comprehension-optional: ignored
  }
}

/**
 * Reads the STUN message at buf[at, at + len) into `req`. `discovery`: this server
 * has a second address (RFC 5780), so CHANGE-REQUEST can be honoured.
 */
export function readRequest(buf: Uint8Array, at: number, len: number, discovery: boolean, req: BindingRequest): StunVerdict {
  req.reason = ''; req.fingerprint = false; req.change = 0; req.responsePort = 0; req.padding = 0; req.unknownCount = 0;
  if (!hasValidHeader(buf, at, len)) return (req.verdict = 'malformed');
  const type = typeOf(buf, at);
  const cls = classOf(type);
  const isRequest = cls === CLASS_REQUEST;
  let badLength = false, zeroPort = false;
  const end = at + len;
  for (let o = at + HEADER_BYTES; o < end;) {
    if (o + 4 > end) return (req.verdict = isRequest ? badRequest(req, 'truncated attribute') : 'malformed');
    const t = (buf[o]! << 8) | buf[o + 1]!;
    const n = (buf[o + 2]! << 8) | buf[o + 3]!;
    const v = o + 4;
    if (v + n > end) return (req.verdict = isRequest ? badRequest(req, 'attribute longer than the message') : 'malformed');
    if (t === ATTR.FINGERPRINT) {
      if (n !== 4 || v + 4 !== end) return (req.verdict = isRequest ? badRequest(req, 'FINGERPRINT is not last') : 'malformed');
      const want = fingerprint(buf, at, o);
      const got = ((buf[v]! << 24) | (buf[v + 1]! << 16) | (buf[v + 2]! << 8) | buf[v + 3]!) >>> 0;
      if (got !== want) return (req.verdict = 'bad-fingerprint');
      req.fingerprint = true;
    } else if (t === ATTR.CHANGE_REQUEST) {
      if (n !== 4) badLength = true;
      else req.change = buf[v + 3]! & (CHANGE_IP | CHANGE_PORT);
    } else if (t === ATTR.RESPONSE_PORT) {
      if (n !== 4) badLength = true;
      else zeroPort = (req.responsePort = (buf[v]! << 8) | buf[v + 1]!) === 0;
    } else if (t === ATTR.PADDING) {
      req.padding = n;
    }
    if (!understood(t, discovery)) {
      if (req.unknownCount < MAX_UNKNOWN) req.unknown[req.unknownCount] = t;
      req.unknownCount++;
    }
    o = v + n + ((4 - (n & 3)) & 3);
  }
  if (cls === CLASS_SUCCESS || cls === CLASS_ERROR) return (req.verdict = 'not-a-request');
  if (cls === CLASS_INDICATION) return (req.verdict = methodOf(type) === METHOD.BINDING ? 'indication' : 'not-a-request');
  if (methodOf(type) !== METHOD.BINDING) return (req.verdict = badRequest(req, 'only Binding is served here'));
  if (req.unknownCount > 0) return (req.verdict = 'unknown-attributes');
  if (badLength) return (req.verdict = badRequest(req, 'CHANGE-REQUEST and RESPONSE-PORT take 4 bytes'));
  if (zeroPort) return (req.verdict = badRequest(req, 'RESPONSE-PORT 0'));
  return (req.verdict = 'binding');
}

function badRequest(req: BindingRequest, reason: string): 'bad-request' {
  req.reason = reason;
  return 'bad-request';
}

/** A transport address as the shard holds it: 16 bytes (IPv4 as IPv4-mapped) at addr[at], and a port. */
export interface AddressRef { addr: Uint8Array; at: number; port: number; family: 4 | 6 }

/** RFC 5780 attributes of a response: where it leaves from, and the other address (both or neither). */
export interface Discovery { origin: AddressRef; other: AddressRef }

/** Bytes of a Binding success response (payload only). */
export function successBytes(family: 4 | 6, discovery: Discovery | null, padding: number, withFingerprint: boolean): number {
  const address = 4 + addressValueBytes(family);
  let n = HEADER_BYTES + 2 * address; // XOR-MAPPED-ADDRESS, MAPPED-ADDRESS
  if (discovery !== null) n += 4 + addressValueBytes(discovery.origin.family) + 4 + addressValueBytes(discovery.other.family);
  if (padding > 0) n += 4 + padTo4(padding);
  if (withFingerprint) n += 8;
  return n;
}

const padTo4 = (n: number): number => (n + 3) & ~3;

/** The largest UDP payload by IP family: 65,535 less the IPv4 (20) and UDP (8) headers; IPv6's payload length counts the UDP header alone. */
export const MAX_UDP_PAYLOAD = { 4: 65_507, 6: 65_527 } as const;

/**
 * The PADDING a success response carries for a request that asked for `requested`
 * bytes: as many, or fewer (whole 4-byte words) so that the whole response is at
 * most `limit` bytes; 0 if not even 4 fit. RFC 5780 7.6 asks for padding to test
 * fragmentation, and a response that cannot leave tests nothing.
 */
export function paddingWithin(limit: number, family: 4 | 6, discovery: Discovery | null, requested: number, withFingerprint: boolean): number {
  if (requested <= 0) return 0;
  const room = limit - successBytes(family, discovery, 0, withFingerprint) - 4; // 4: PADDING's own header
  return room < 4 ? 0 : Math.min(requested, room & ~3);
}

function header(out: Uint8Array, o: number, type: number, bodyLen: number, req: Uint8Array, reqAt: number): void {
  out[o] = type >>> 8; out[o + 1] = type & 0xff;
  out[o + 2] = bodyLen >>> 8; out[o + 3] = bodyLen & 0xff;
  out[o + 4] = MAGIC_COOKIE >>> 24; out[o + 5] = (MAGIC_COOKIE >>> 16) & 0xff; out[o + 6] = (MAGIC_COOKIE >>> 8) & 0xff; out[o + 7] = MAGIC_COOKIE & 0xff;
  for (let i = 8; i < HEADER_BYTES; i++) out[o + i] = req[reqAt + i]!; // the transaction id, echoed
}

function attrHeader(out: Uint8Array, o: number, type: number, len: number): number {
  out[o] = type >>> 8; out[o + 1] = type & 0xff; out[o + 2] = len >>> 8; out[o + 3] = len & 0xff;
  return o + 4;
}

function address(out: Uint8Array, o: number, type: number, a: AddressRef, xor: boolean, req: Uint8Array, reqAt: number): number {
  const v = attrHeader(out, o, type, addressValueBytes(a.family));
  return v + writeAddressValue(out, v, a.addr, a.at, a.port, xor, req, reqAt + 8);
}

function withFingerprint(out: Uint8Array, o: number, p: number): number {
  const v = attrHeader(out, p, ATTR.FINGERPRINT, 4);
  const f = fingerprint(out, o, p);
  out[v] = f >>> 24; out[v + 1] = (f >>> 16) & 0xff; out[v + 2] = (f >>> 8) & 0xff; out[v + 3] = f & 0xff;
  return v + 4;
}

/**
 * Writes the Binding success response to the request at req[reqAt] into out[o],
 * which has room for successBytes(...). Returns its length.
 */
export function writeSuccess(out: Uint8Array, o: number, request: Uint8Array, reqAt: number, r: BindingRequest,
  mapped: AddressRef, discovery: Discovery | null, padding: number): number {
  const total = successBytes(mapped.family, discovery, padding, r.fingerprint);
  header(out, o, BINDING_SUCCESS, total - HEADER_BYTES, request, reqAt);
  let p = o + HEADER_BYTES;
  p = address(out, p, ATTR.XOR_MAPPED_ADDRESS, mapped, true, request, reqAt);
  p = address(out, p, ATTR.MAPPED_ADDRESS, mapped, false, request, reqAt); // for RFC 3489-era clients
  if (discovery !== null) {
    p = address(out, p, ATTR.RESPONSE_ORIGIN, discovery.origin, false, request, reqAt);
    p = address(out, p, ATTR.OTHER_ADDRESS, discovery.other, false, request, reqAt);
  }
  if (padding > 0) {
    const v = attrHeader(out, p, ATTR.PADDING, padding);
    out.fill(0, v, v + padTo4(padding));
    p = v + padTo4(padding);
  }
  if (r.fingerprint) p = withFingerprint(out, o, p);
  return p - o;
}

/** Reason phrases of the errors this server sends. */
export const ERROR_REASONS = { 400: 'Bad Request', 420: 'Unknown Attribute' } as const;
export type StunErrorCode = keyof typeof ERROR_REASONS;

/** Bytes of an error response (payload only). */
export function errorBytes(code: StunErrorCode, r: BindingRequest): number {
  let n = HEADER_BYTES + 4 + 4 + padTo4(reasonOf(code, r).length);
  if (code === 420) n += 4 + padTo4(2 * Math.min(r.unknownCount, MAX_UNKNOWN));
  if (r.fingerprint) n += 8;
  return n;
}

function reasonOf(code: StunErrorCode, r: BindingRequest): string {
  return code === 400 && r.reason !== '' ? `${ERROR_REASONS[400]}: ${r.reason}` : ERROR_REASONS[code];
}

/** Writes an error response (400, or 420 with UNKNOWN-ATTRIBUTES) into out[o]. Returns its length. */
export function writeError(out: Uint8Array, o: number, request: Uint8Array, reqAt: number, r: BindingRequest, code: StunErrorCode): number {
  const total = errorBytes(code, r);
  // the request's method (a TURN Allocate sent here gets an Allocate error), error class
  header(out, o, messageType(methodOf(typeOf(request, reqAt)), CLASS_ERROR), total - HEADER_BYTES, request, reqAt);
  const reason = reasonOf(code, r);
  let v = attrHeader(out, o + HEADER_BYTES, ATTR.ERROR_CODE, 4 + reason.length);
  out[v] = 0; out[v + 1] = 0; out[v + 2] = Math.floor(code / 100); out[v + 3] = code % 100;
  for (let i = 0; i < reason.length; i++) out[v + 4 + i] = reason.charCodeAt(i); // ASCII phrases
  let p = v + 4 + reason.length;
  while ((p - o) & 3) out[p++] = 0;
  if (code === 420) {
    const n = Math.min(r.unknownCount, MAX_UNKNOWN);
    v = attrHeader(out, p, ATTR.UNKNOWN_ATTRIBUTES, 2 * n);
    for (let i = 0; i < n; i++) { out[v + 2 * i] = r.unknown[i]! >>> 8; out[v + 2 * i + 1] = r.unknown[i]! & 0xff; }
    p = v + 2 * n;
    while ((p - o) & 3) out[p++] = 0;
  }
  if (r.fingerprint) p = withFingerprint(out, o, p);
  return p - o;
}
