// STUN messages (RFC 8489), the wire format the tracker's Binding server
// (stun/binding.ts) and the client's STUN and TURN code (src/client/) share.
// Bytes in, a typed view or a typed error out, and back; no sockets, no clocks.
//
//    0                   1                   2                   3
//   |0 0|  message type (14 bits)   |        message length         |
//   |                  magic cookie 0x2112A442                      |
//   |               transaction id (96 bits)                        |
//   | attributes: u16 type | u16 length | value, padded to 4 bytes  |
//
// The first two bits are zero and bytes 4-7 are the magic cookie, so a STUN
// message can never be mistaken for the tracker's JSON, which begins with '{'.
import { createHash, createHmac } from 'node:crypto';
import { ADDR_BYTES, formatIp, isV4Mapped, parseIp } from '../protocol/address.js';

export const MAGIC_COOKIE = 0x2112a442;
export const HEADER_BYTES = 20;
export const TRANSACTION_ID_BYTES = 12;
/** FINGERPRINT is the CRC-32 of the message before it, XORed with this ("STUN"). */
const FINGERPRINT_XOR = 0x5354554e;

// Message classes (the C1 C0 bits, in place) and methods.
export const CLASS_REQUEST = 0x0000;
export const CLASS_INDICATION = 0x0010;
export const CLASS_SUCCESS = 0x0100;
export const CLASS_ERROR = 0x0110;
const CLASS_MASK = 0x0110;

export const METHOD = {
  BINDING: 0x001,
  // TURN (RFC 8656)
  ALLOCATE: 0x003, REFRESH: 0x004, SEND: 0x006, DATA: 0x007, CREATE_PERMISSION: 0x008, CHANNEL_BIND: 0x009,
} as const;

/** The attribute types this project reads or writes. Types below 0x8000 are comprehension-required. */
export const ATTR = {
  MAPPED_ADDRESS: 0x0001,
  CHANGE_REQUEST: 0x0003,
  USERNAME: 0x0006,
  MESSAGE_INTEGRITY: 0x0008,
  ERROR_CODE: 0x0009,
  UNKNOWN_ATTRIBUTES: 0x000a,
  CHANNEL_NUMBER: 0x000c,
  LIFETIME: 0x000d,
  XOR_PEER_ADDRESS: 0x0012,
  DATA: 0x0013,
  REALM: 0x0014,
  NONCE: 0x0015,
  XOR_RELAYED_ADDRESS: 0x0016,
  REQUESTED_TRANSPORT: 0x0019,
  MESSAGE_INTEGRITY_SHA256: 0x001c,
  PASSWORD_ALGORITHM: 0x001d,
  USERHASH: 0x001e,
  XOR_MAPPED_ADDRESS: 0x0020,
  PADDING: 0x0026,
  RESPONSE_PORT: 0x0027,
  SOFTWARE: 0x8022,
  FINGERPRINT: 0x8028,
  RESPONSE_ORIGIN: 0x802b,
  OTHER_ADDRESS: 0x802c,
} as const;

/** CHANGE-REQUEST flags (RFC 5780 7.2). */
export const CHANGE_IP = 0x4;
export const CHANGE_PORT = 0x2;

export function messageType(method: number, cls: number): number {
  return (method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) | cls;
}

export function methodOf(type: number): number {
  return (type & 0x000f) | ((type & 0x00e0) >> 1) | ((type & 0x3e00) >> 2);
}

export function classOf(type: number): number {
  return type & CLASS_MASK;
}

/** A STUN message's header shape: first two bits zero and the magic cookie. Everything else is not STUN. */
export function looksLikeStun(buf: Uint8Array, at: number, len: number): boolean {
  return len >= HEADER_BYTES && (buf[at]! & 0xc0) === 0 &&
    buf[at + 4] === 0x21 && buf[at + 5] === 0x12 && buf[at + 6] === 0xa4 && buf[at + 7] === 0x42;
}

/**
 * A valid header: STUN's shape, a length that is a multiple of 4 and covers the
 * rest of the datagram exactly. A message without one is no STUN message at all.
 */
export function hasValidHeader(buf: Uint8Array, at: number, len: number): boolean {
  if (!looksLikeStun(buf, at, len)) return false;
  const bodyLen = (buf[at + 2]! << 8) | buf[at + 3]!;
  return (bodyLen & 3) === 0 && bodyLen === len - HEADER_BYTES;
}

export function typeOf(buf: Uint8Array, at: number): number {
  return (buf[at]! << 8) | buf[at + 1]!;
}

// ---- CRC-32 (IEEE 802.3), for FINGERPRINT

const CRC_TABLE = new Int32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  CRC_TABLE[n] = c;
}

export function crc32(buf: Uint8Array, start: number, end: number): number {
  let c = -1;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/** The FINGERPRINT value of the message bytes at [start, end) (header included, with its length already counting the FINGERPRINT). */
export function fingerprint(buf: Uint8Array, start: number, end: number): number {
  return (crc32(buf, start, end) ^ FINGERPRINT_XOR) >>> 0;
}

// ---- addresses

export const FAMILY_V4 = 0x01;
export const FAMILY_V6 = 0x02;

/** Value bytes of an address attribute: 8 for IPv4, 20 for IPv6. */
export function addressValueBytes(family: 4 | 6): number {
  return family === 4 ? 8 : 20;
}

/**
 * Writes an address attribute's value at out[o]: the 16-byte address at
 * addr[a] (IPv4 as IPv4-mapped, protocol/address.ts) and port, XORed with the
 * magic cookie and the transaction id at txid[t] when `xor` (XOR-MAPPED-ADDRESS
 * and the other XOR- attributes). Returns the bytes written.
 */
export function writeAddressValue(out: Uint8Array, o: number, addr: Uint8Array, a: number, port: number,
  xor: boolean, txid: Uint8Array, t: number): number {
  const v4 = isV4Mapped(addr, a);
  out[o] = 0;
  out[o + 1] = v4 ? FAMILY_V4 : FAMILY_V6;
  const p = xor ? port ^ (MAGIC_COOKIE >>> 16) : port;
  out[o + 2] = (p >>> 8) & 0xff; out[o + 3] = p & 0xff;
  if (v4) {
    for (let i = 0; i < 4; i++) out[o + 4 + i] = addr[a + 12 + i]! ^ (xor ? COOKIE_BYTES[i]! : 0);
    return 8;
  }
  for (let i = 0; i < 16; i++) out[o + 4 + i] = addr[a + i]! ^ (xor ? (i < 4 ? COOKIE_BYTES[i]! : txid[t + i - 4]!) : 0);
  return 20;
}

const COOKIE_BYTES = Uint8Array.of(0x21, 0x12, 0xa4, 0x42);

export interface TransportAddress { family: 4 | 6; address: string; port: number }

/** Reads an address attribute's value (XORed or not); null if malformed. */
export function readAddressValue(buf: Uint8Array, o: number, len: number, xor: boolean, txid: Uint8Array, t: number): TransportAddress | null {
  if (len < 8) return null;
  const family = buf[o + 1];
  const port = ((buf[o + 2]! << 8) | buf[o + 3]!) ^ (xor ? MAGIC_COOKIE >>> 16 : 0);
  const addr = new Uint8Array(ADDR_BYTES);
  if (family === FAMILY_V4 && len === 8) {
    addr[10] = 0xff; addr[11] = 0xff;
    for (let i = 0; i < 4; i++) addr[12 + i] = buf[o + 4 + i]! ^ (xor ? COOKIE_BYTES[i]! : 0);
    return { family: 4, address: formatIp(addr, 0), port };
  }
  if (family === FAMILY_V6 && len === 20) {
    for (let i = 0; i < 16; i++) addr[i] = buf[o + 4 + i]! ^ (xor ? (i < 4 ? COOKIE_BYTES[i]! : txid[t + i - 4]!) : 0);
    return { family: 6, address: formatIp(addr, 0), port };
  }
  return null;
}

// ---- whole messages, for clients (allocating; not the server's hot path)

export interface StunAttribute { type: number; value: Buffer }

export interface StunMessage {
  type: number;
  method: number;
  cls: number;
  transactionId: Buffer;
  attributes: StunAttribute[];
  /** The whole message, as received. */
  raw: Buffer;
}

/** Why bytes are not a usable STUN message. */
export type StunDecodeError = 'not-stun' | 'malformed' | 'bad-fingerprint';

/**
 * Decodes one message: header, attributes, and (when present) a FINGERPRINT that
 * must be the last attribute and correct. Never throws.
 *
 * What follows MESSAGE-INTEGRITY is left out of `attributes` but MESSAGE-INTEGRITY-
 * SHA256 and FINGERPRINT, and what follows MESSAGE-INTEGRITY-SHA256 but FINGERPRINT
 * (RFC 8489 14.5, 14.6): the integrity does not cover it, so anyone on the path
 * could have appended it (a second XOR-RELAYED-ADDRESS, say). It is still framed,
 * and a FINGERPRINT after it still checked.
 */
export function decodeMessage(raw: Buffer): StunMessage | StunDecodeError {
  if (!hasValidHeader(raw, 0, raw.length)) return 'not-stun';
  const type = typeOf(raw, 0);
  const attributes: StunAttribute[] = [];
  /** 0: no integrity yet; 1: after MESSAGE-INTEGRITY; 2: after MESSAGE-INTEGRITY-SHA256 */
  let sealed = 0;
  for (let o = HEADER_BYTES; o < raw.length;) {
    if (o + 4 > raw.length) return 'malformed';
    const at = raw.readUInt16BE(o), len = raw.readUInt16BE(o + 2);
    const end = o + 4 + len;
    if (end > raw.length) return 'malformed';
    if (at === ATTR.FINGERPRINT) {
      if (len !== 4 || end !== raw.length) return 'malformed';
      if (raw.readUInt32BE(o + 4) !== fingerprint(raw, 0, o)) return 'bad-fingerprint';
    }
    const covered = sealed === 0 || at === ATTR.FINGERPRINT || (sealed === 1 && at === ATTR.MESSAGE_INTEGRITY_SHA256);
    if (covered) attributes.push({ type: at, value: raw.subarray(o + 4, end) });
    if (covered && at === ATTR.MESSAGE_INTEGRITY) sealed = 1;
    else if (covered && at === ATTR.MESSAGE_INTEGRITY_SHA256) sealed = 2;
    o = end + ((4 - (len & 3)) & 3);
  }
  return { type, method: methodOf(type), cls: classOf(type), transactionId: raw.subarray(8, HEADER_BYTES), attributes, raw };
}

export function attribute(m: StunMessage, type: number): Buffer | undefined {
  return m.attributes.find((a) => a.type === type)?.value;
}

/** An address attribute of a message (XOR- types are decoded as such). */
export function addressAttribute(m: StunMessage, type: number): TransportAddress | null {
  const v = attribute(m, type);
  if (v === undefined) return null;
  const xor = type === ATTR.XOR_MAPPED_ADDRESS || type === ATTR.XOR_PEER_ADDRESS || type === ATTR.XOR_RELAYED_ADDRESS;
  return readAddressValue(v, 0, v.length, xor, m.transactionId, 0);
}

/** ERROR-CODE of an error response: its number and reason phrase. */
export function errorCode(m: StunMessage): { code: number; reason: string } | null {
  const v = attribute(m, ATTR.ERROR_CODE);
  if (v === undefined || v.length < 4) return null;
  return { code: (v[2]! & 0x7) * 100 + v[3]!, reason: v.toString('utf8', 4) };
}

/**
 * Builds a message attribute by attribute. MESSAGE-INTEGRITY (HMAC-SHA1 over the
 * message so far, its length counting the attribute) and FINGERPRINT go last, in
 * that order, as RFC 8489 14.5 and 14.7 lay down.
 */
export class MessageBuilder {
  private readonly parts: Buffer[] = [];
  private length = 0;

  constructor(readonly type: number, readonly transactionId: Buffer) {
    if (transactionId.length !== TRANSACTION_ID_BYTES) throw new RangeError('a transaction id is 12 bytes');
  }

  add(type: number, value: Uint8Array): this {
    const pad = (4 - (value.length & 3)) & 3;
    const a = Buffer.alloc(4 + value.length + pad);
    a.writeUInt16BE(type, 0);
    a.writeUInt16BE(value.length, 2);
    a.set(value, 4);
    this.parts.push(a);
    this.length += a.length;
    return this;
  }

  addUint32(type: number, v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    return this.add(type, b);
  }

  addString(type: number, s: string): this {
    return this.add(type, Buffer.from(s, 'utf8'));
  }

  /** An address attribute; XOR-ed for the XOR- types. */
  addAddress(type: number, ip: string, port: number): this {
    const text = Buffer.from(ip, 'latin1');
    const addr = new Uint8Array(ADDR_BYTES);
    const family = parseIp(text, 0, text.length, addr, 0);
    if (family === 0) throw new RangeError(`not an IP address: ${ip}`);
    const xor = type === ATTR.XOR_MAPPED_ADDRESS || type === ATTR.XOR_PEER_ADDRESS || type === ATTR.XOR_RELAYED_ADDRESS;
    const v = Buffer.alloc(addressValueBytes(family));
    writeAddressValue(v, 0, addr, 0, port, xor, this.transactionId, 0);
    return this.add(type, v);
  }

  private header(extra: number): Buffer {
    const h = Buffer.alloc(HEADER_BYTES);
    h.writeUInt16BE(this.type, 0);
    h.writeUInt16BE(this.length + extra, 2);
    h.writeUInt32BE(MAGIC_COOKIE, 4);
    this.transactionId.copy(h, 8);
    return h;
  }

  /** The message; with `integrityKey`, MESSAGE-INTEGRITY; with `withFingerprint`, FINGERPRINT. */
  build({ integrityKey, withFingerprint = false }: { integrityKey?: Buffer; withFingerprint?: boolean } = {}): Buffer {
    let msg = Buffer.concat([this.header(0), ...this.parts]);
    if (integrityKey !== undefined) {
      msg.writeUInt16BE(this.length + 24, 2);
      const mac = createHmac('sha1', integrityKey).update(msg).digest();
      const a = Buffer.alloc(24);
      a.writeUInt16BE(ATTR.MESSAGE_INTEGRITY, 0);
      a.writeUInt16BE(20, 2);
      mac.copy(a, 4);
      msg = Buffer.concat([msg, a]);
    }
    if (withFingerprint) {
      msg.writeUInt16BE(msg.length - HEADER_BYTES + 8, 2);
      const a = Buffer.alloc(8);
      a.writeUInt16BE(ATTR.FINGERPRINT, 0);
      a.writeUInt16BE(4, 2);
      a.writeUInt32BE(fingerprint(msg, 0, msg.length), 4);
      msg = Buffer.concat([msg, a]);
    }
    return msg;
  }
}

/**
 * Whether a message's MESSAGE-INTEGRITY is right for `key` (RFC 8489 14.5: the HMAC
 * covers the message up to the attribute, with the length field counting it).
 */
export function checkIntegrity(m: StunMessage, key: Buffer): boolean {
  let o = HEADER_BYTES;
  for (const a of m.attributes) {
    const len = 4 + a.value.length + ((4 - (a.value.length & 3)) & 3);
    if (a.type === ATTR.MESSAGE_INTEGRITY) {
      if (a.value.length !== 20) return false;
      const copy = Buffer.from(m.raw.subarray(0, o));
      copy.writeUInt16BE(o - HEADER_BYTES + 24, 2);
      return createHmac('sha1', key).update(copy).digest().equals(a.value);
    }
    o += len;
  }
  return false;
}

/**
 * The long-term credential key (RFC 8489 9.2.2, MD5 algorithm): MD5(username ":"
 * realm ":" password). SASLprep is left out: the usernames and passwords this
 * project mints are ASCII (relay/credentials.ts).
 */
export function longTermKey(username: string, realm: string, password: string): Buffer {
  return createHash('md5').update(`${username}:${realm}:${password}`, 'utf8').digest();
}

// ---- TURN ChannelData (RFC 8656 12.4), the 4-byte-header framing of a bound channel
//
//   |0 1|  channel number (0x4000-0x4FFF) |        length (of the data)  |
//   |  application data, padded to 4 bytes over TCP (optional over UDP)  |
//
// Its first two bits are 01, so it can be told from STUN (00) and from the
// tracker's JSON ('{' is 0x7b, 01111011: first bits 01 too, but 0x7b is above 0x4f).

export const CHANNEL_MIN = 0x4000;
export const CHANNEL_MAX = 0x4fff;
export const CHANNEL_DATA_HEADER_BYTES = 4;

/** Whether a datagram is shaped like ChannelData: a channel number in range and a length that fits. */
export function isChannelData(buf: Uint8Array, at: number, len: number): boolean {
  if (len < CHANNEL_DATA_HEADER_BYTES) return false;
  const channel = (buf[at]! << 8) | buf[at + 1]!;
  const dataLen = (buf[at + 2]! << 8) | buf[at + 3]!;
  return channel >= CHANNEL_MIN && channel <= CHANNEL_MAX && dataLen <= len - CHANNEL_DATA_HEADER_BYTES;
}

/** A ChannelData message, unpadded (RFC 8656 12.5: over UDP the padding need not be sent). */
export function encodeChannelData(channel: number, data: Uint8Array): Buffer {
  if (channel < CHANNEL_MIN || channel > CHANNEL_MAX) throw new RangeError(`not a channel number: ${channel}`);
  if (data.length > 0xffff) throw new RangeError('ChannelData carries at most 65535 bytes');
  const out = Buffer.allocUnsafe(CHANNEL_DATA_HEADER_BYTES + data.length);
  out.writeUInt16BE(channel, 0);
  out.writeUInt16BE(data.length, 2);
  out.set(data, CHANNEL_DATA_HEADER_BYTES);
  return out;
}

/**
 * A ChannelData message's channel and data (a view, not a copy), or null if it is
 * not one. Bytes after the length (padding, which a sender may add over UDP too)
 * are ignored.
 */
export function decodeChannelData(buf: Buffer): { channel: number; data: Buffer } | null {
  if (!isChannelData(buf, 0, buf.length)) return null;
  return { channel: buf.readUInt16BE(0), data: buf.subarray(CHANNEL_DATA_HEADER_BYTES, CHANNEL_DATA_HEADER_BYTES + buf.readUInt16BE(2)) };
}
