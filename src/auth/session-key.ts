// The tracker's side of session tokens: one 16-byte key (from the session key
// file, or random and kept in the snapshot) from which every session's secret,
// and every path challenge, is recomputed when needed. Nothing is stored per
// session. Hot path: no allocation (scratch buffers, module-level SipHash state).
import { createHash, randomBytes } from 'node:crypto';
import { sipKey, siphash128, siphash64, type SipKey } from './siphash.js';
import { SECRET_BYTES, SECRET_CHARS, TAG_CHARS, asciiEquals, encodeInto, writeTag } from './tag.js';

const TOKEN_LABEL = Buffer.from('sobani/token/v1', 'latin1');
const PATH_LABEL = Buffer.from('sobani/path/v1', 'latin1');
const CLAIM_LABEL = Buffer.from('sobani/claim/v1', 'latin1');
const DIRECTORY_LABEL = Buffer.from('sobani/directory/v1', 'latin1');
/** Bytes of the MAC that ends every message between instances that share a key file (directory/messages.ts). */
export const DIRECTORY_MAC_BYTES = 8;
/** Room for a label, a shareId (at most 64 characters, config.ts), a 16-byte address and a port. */
const SCRATCH = 128;

export class SessionKey {
  readonly key: Uint8Array;
  private readonly words: SipKey;
  /** K's subkey for the messages between instances: SipHash-2-4-128(K, DIRECTORY_LABEL). */
  private readonly directoryWords: SipKey;
  private readonly msg = new Uint8Array(SCRATCH);
  /** TOKEN_LABEL, then room for the shareId: the hot path (verifyChars) copies only the shareId. */
  private readonly tokenMsg = new Uint8Array(SCRATCH);
  private readonly secret = new Uint8Array(SECRET_BYTES);
  private readonly secretWords: SipKey = new Uint32Array(4);
  private readonly chars = new Uint8Array(SECRET_CHARS);
  private readonly mac = new Uint8Array(8);

  /** `key`: 16 bytes; random when not given. */
  constructor(key: Uint8Array = randomBytes(16)) {
    if (key.length !== 16) throw new Error('a session key is 16 bytes');
    this.key = Uint8Array.from(key);
    this.words = sipKey(this.key);
    this.tokenMsg.set(TOKEN_LABEL, 0);
    const sub = new Uint8Array(16);
    siphash128(this.words, DIRECTORY_LABEL, 0, DIRECTORY_LABEL.length, sub, 0);
    this.directoryWords = sipKey(sub);
  }

  /** The MAC of msg[0, len) for a message between instances: DIRECTORY_MAC_BYTES into out[at]. */
  directoryMac(msg: Uint8Array, len: number, out: Uint8Array, at: number): void {
    siphash64(this.directoryWords, msg, 0, len, out, at);
  }

  /** The key a session key file's contents give: the first 16 bytes of SHA-256 of them, trimmed. */
  static fromFileContents(contents: Buffer): SessionKey {
    const text = contents.toString('latin1').trim();
    if (text.length < 16) throw new Error('the session key file must hold at least 16 characters of secret');
    return new SessionKey(createHash('sha256').update(text, 'latin1').digest().subarray(0, 16));
  }

  private labelled(label: Uint8Array, shareId: string): number {
    this.msg.set(label, 0);
    let o = label.length;
    for (let i = 0; i < shareId.length; i++) this.msg[o++] = shareId.charCodeAt(i);
    return o;
  }

  private labelledBytes(label: Uint8Array, src: Uint8Array, at: number, n: number): number {
    this.msg.set(label, 0);
    let o = label.length;
    for (let i = 0; i < n; i++) this.msg[o++] = src[at + i]!;
    return o;
  }

  /** Like verify, for a token's characters at chars[at, at+length) (a datagram's bytes: no string is made). */
  verifyChars(chars: Uint8Array, at: number, length: number, idLength: number): boolean {
    if (length !== idLength + 1 + SECRET_CHARS || chars[at + idLength] !== 46 /* . */) return false;
    const m = this.tokenMsg, from = TOKEN_LABEL.length;
    for (let i = 0; i < idLength; i++) m[from + i] = chars[at + i]!;
    siphash128(this.words, m, 0, from + idLength, this.secret, 0);
    encodeInto(this.secret, 0, SECRET_BYTES, this.chars, 0);
    let diff = 0;
    for (let i = 0; i < SECRET_CHARS; i++) diff |= this.chars[i]! ^ chars[at + idLength + 1 + i]!;
    return diff === 0;
  }

  /** The tag key of the token verifyChars last accepted: the secret it just computed (scratch, valid until the next call). */
  verifiedTagKey(): SipKey {
    return sipKey(this.secret, 0, this.secretWords);
  }

  /** The tag key of the session whose shareId is ids[at, at+n) (scratch, valid until the next call). */
  tagKeyOfBytes(ids: Uint8Array, at: number, n: number): SipKey {
    const len = this.labelledBytes(TOKEN_LABEL, ids, at, n);
    siphash128(this.words, this.msg, 0, len, this.secret, 0);
    return sipKey(this.secret, 0, this.secretWords);
  }

  /** Like challenge, for the shareId ids[at, at+n). */
  challengeOfBytes(ids: Uint8Array, at: number, n: number, addr: Uint8Array, addrAt: number, port: number, dst: Uint8Array, dstAt: number): void {
    let o = this.labelledBytes(PATH_LABEL, ids, at, n);
    for (let i = 0; i < 16; i++) this.msg[o++] = addr[addrAt + i]!;
    this.msg[o++] = port >>> 8;
    this.msg[o++] = port & 0xff;
    siphash64(this.words, this.msg, 0, o, this.mac, 0);
    encodeInto(this.mac, 0, 8, dst, dstAt);
  }

  /** Like checkChallenge, for the shareId ids[at, at+n). */
  checkChallengeOfBytes(ids: Uint8Array, at: number, n: number, addr: Uint8Array, addrAt: number, port: number, text: string): boolean {
    if (text.length !== TAG_CHARS) return false;
    this.challengeOfBytes(ids, at, n, addr, addrAt, port, this.expected, 0);
    return asciiEquals(this.expected, 0, text, 0, TAG_CHARS);
  }

  /** The session's secret (16 bytes, in a scratch buffer valid until the next call). */
  secretOf(shareId: string): Uint8Array {
    const n = this.labelled(TOKEN_LABEL, shareId);
    siphash128(this.words, this.msg, 0, n, this.secret, 0);
    return this.secret;
  }

  /** The session's secret as the SipHash key its tags are made with (scratch, valid until the next call). */
  tagKeyOf(shareId: string): SipKey {
    return sipKey(this.secretOf(shareId), 0, this.secretWords);
  }

  /** The token the tracker gives the session with this shareId. */
  tokenOf(shareId: string): string {
    encodeInto(this.secretOf(shareId), 0, SECRET_BYTES, this.chars, 0);
    return shareId + '.' + Buffer.from(this.chars).toString('latin1');
  }

  /** Whether `token` is the one this key gives the shareId it starts with (`idLength` characters, then '.'). */
  verify(token: string, idLength: number): boolean {
    if (token.length !== idLength + 1 + SECRET_CHARS || token.charCodeAt(idLength) !== 46 /* . */) return false;
    const n = this.labelled(TOKEN_LABEL, token);
    siphash128(this.words, this.msg, 0, n - token.length + idLength, this.secret, 0);
    encodeInto(this.secret, 0, SECRET_BYTES, this.chars, 0);
    let diff = 0;
    for (let i = 0; i < SECRET_CHARS; i++) diff |= this.chars[i]! ^ token.charCodeAt(idLength + 1 + i);
    return diff === 0;
  }

  /** Writes the tag of msg[off, off+len) for the session with this shareId: 11 ASCII characters into dst[at]. */
  tag(shareId: string, msg: Uint8Array, off: number, len: number, dst: Uint8Array, at: number): void {
    writeTag(this.tagKeyOf(shareId), msg, off, len, dst, at);
  }

  /**
   * The path challenge for a session at an address (16 bytes at addr[addrAt], as
   * protocol/address.ts keeps them) and port: 11 ASCII characters into dst[at].
   * Only a client that receives at that address learns it.
   */
  challenge(shareId: string, addr: Uint8Array, addrAt: number, port: number, dst: Uint8Array, at: number): void {
    let o = this.labelled(PATH_LABEL, shareId);
    for (let i = 0; i < 16; i++) this.msg[o++] = addr[addrAt + i]!;
    this.msg[o++] = port >>> 8;
    this.msg[o++] = port & 0xff;
    siphash64(this.words, this.msg, 0, o, this.mac, 0);
    encodeInto(this.mac, 0, 8, dst, at);
  }

  private readonly expected = new Uint8Array(TAG_CHARS);

  /**
   * The proof that a claim for a session (directory/remote-claims.ts) comes from an
   * instance that holds this key, made at `at` (ms since the epoch):
   * SipHash-2-4-64(K, label || shareId || 0 || from || 0 || req || 0 || at) as 11
   * characters. A client of Redis without the key cannot end a session.
   */
  claimProof(shareId: string, from: string, req: string, at: number): string {
    const msg = Buffer.concat([CLAIM_LABEL, Buffer.from(`${shareId}\0${from}\0${req}\0${at}`, 'latin1')]);
    siphash64(this.words, msg, 0, msg.length, this.mac, 0);
    encodeInto(this.mac, 0, 8, this.expected, 0);
    return Buffer.from(this.expected).toString('latin1');
  }

  /** Whether `proof` is claimProof(shareId, from, req, at) under this key. */
  checkClaimProof(shareId: string, from: string, req: string, at: number, proof: string): boolean {
    const want = this.claimProof(shareId, from, req, at);
    let diff = want.length ^ proof.length;
    for (let i = 0; i < want.length && i < proof.length; i++) diff |= want.charCodeAt(i) ^ proof.charCodeAt(i);
    return diff === 0;
  }

  /** Whether `text` is the challenge for this session at this address and port. */
  checkChallenge(shareId: string, addr: Uint8Array, addrAt: number, port: number, text: string): boolean {
    if (text.length !== TAG_CHARS) return false;
    this.challenge(shareId, addr, addrAt, port, this.expected, 0);
    return asciiEquals(this.expected, 0, text, 0, TAG_CHARS);
  }
}
