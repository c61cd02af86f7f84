// The request being handled: who sent it, where its replies go, and what they may
// cost. One per shard, set up again for each request (no object per request);
// handlers write every reply through it, so the amplification rule is applied in
// one place.
//
// The rule: no reply costs more than 3x its own request's wire bytes, and every
// reply is paid from its IP's credit (3x the wire bytes the IP sent, ip-table.ts),
// or from a fixed grant (an IP the table has no room for; a request forwarded from
// another shard or instance). A reply of `bytes` payload costs its wire bytes. So
// over any stretch of time an IP gets at most 3x what it sent, and no single
// datagram to it is larger than 3x the request that caused it. (The replies to one
// request may sum past 3x it from credit banked before: the desktop client's
// announce is answered in both forms on a resend, which it relies on.)
// Only an authenticated request is exempt: one that carried its session's token
// from the session's own (validated) address (tokens.ts). A source address that
// once proved it receives is not: a datagram from it may be forged.
//
// Tags: the replies to a request that carried a valid token end with a tag made
// with that session's secret (auth/tag.ts); they are written through end(), which
// adds it, so no handler builds a tag.
import { ADDR_BYTES } from '../protocol/address.js';
import type { ReplyForms } from '../protocol/dialect.js';
import { ERROR_CODES, errorJson, type ErrorCode } from '../protocol/errors.js';
import type { ReplyWriter } from '../wire/frame.js';
import { TAG_CHARS, TAG_END, TAG_MEMBER } from '../auth/tag.js';
import type { SipKey } from '../auth/siphash.js';
import type { ShardCounters } from './counters.js';
import { AMPLIFICATION_FACTOR, type IpTable } from './ip-table.js';

/** Most reply credit (wire bytes) a push carries to another shard: a pushReceived plus a pushed fit. */
export const MAX_PUSH_GRANT = 1024;

/** What a tag adds to a message: `,"tag":"` + 11 characters + `"}` in place of its closing `}`. */
export const TAG_BYTES = TAG_MEMBER.length + TAG_CHARS + TAG_END.length - 1;

function payloadBytes(payload: Uint8Array | string): number {
  return typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
}

export class Requester {
  /** The source IP as 16 bytes (IPv4 as IPv4-mapped), parsed once per request. */
  readonly key = new Uint8Array(ADDR_BYTES);
  /** What the request counts as (counters.ts action index) and its sender's dialect, for datagram counts. */
  action = 0;
  dialect = 0;
  /** The source port (a request in this batch), or the port replies go to (a forwarded push). */
  port = 0;

  // Where replies go: a request index in the current batch, or (a forwarded push) an explicit address.
  private index = -1;
  private socket = 0;
  private address = '';
  /** The writer requester replies go to: the batch's, or (a push from another instance) the one whose bytes go back to it. */
  private writer: ReplyWriter;

  // The budget: the IP's entry (-1: untracked), a fixed grant (-1: none), and the IP + UDP header bytes every reply costs.
  private ip = -1;
  /** The request is authenticated (a valid token from its session's address): its replies are not charged. */
  exempt = false;
  private grant = -1;
  /** The most one reply to this request may cost on the wire: 3x the request's own wire bytes. */
  private cap = 0;
  overhead = 0;
  /** The tag key of the session this request's replies are for (its token was valid), or null: untagged. */
  private tagKey: SipKey | null = null;
  private readonly tagWords: SipKey = new Uint32Array(4);

  constructor(private readonly ips: IpTable, private readonly counters: ShardCounters, private readonly batchWriter: ReplyWriter) {
    this.writer = batchWriter;
  }

  /** A request in the current batch (record `index`), from `port` of the IP in `key`; `overhead` by its family. */
  fromRecord(index: number, port: number, overhead: number): void {
    this.index = index;
    this.port = port;
    this.overhead = overhead;
    this.writer = this.batchWriter;
    this.tagKey = null;
  }

  /** From now on this request's replies are tagged with this key (copied: the caller's may be scratch). */
  tagWith(key: SipKey): void {
    // four stores: TypedArray.prototype.set costs more than the copy (a token pulse's hot path)
    const w = this.tagWords;
    w[0] = key[0]!; w[1] = key[1]!; w[2] = key[2]!; w[3] = key[3]!;
    this.tagKey = w;
  }

  get tagged(): boolean { return this.tagKey !== null; }

  /** Extra payload bytes every reply to this request carries (its tag). */
  private get extra(): number { return this.tagKey === null ? 0 : TAG_BYTES; }

  /** A request handled away from its requester: replies go to address:port from `socket`, into `writer`, within `grant` (-1: exempt, no limit). */
  fromForward(socket: number, address: string, port: number, overhead: number, grant: number, writer: ReplyWriter, cap = grant): void {
    this.index = -1;
    this.socket = socket;
    this.address = address;
    this.port = port;
    this.overhead = overhead;
    this.writer = writer;
    this.ip = -1;
    this.grant = grant;
    this.cap = grant < 0 ? Infinity : cap;
    this.exempt = grant < 0;
    this.tagKey = null;
  }

  /** The IP's entry in the IP table, or -1 (untracked, or a forwarded push). */
  get ipSlot(): number { return this.ip; }

  /**
   * Per-IP rate limit and reply budget for the request about to be handled
   * (`wireBytes`: its payload plus IP and UDP headers). A tracked IP gains
   * AMPLIFICATION_FACTOR x that in credit; an IP the table has no room for may
   * get that much back for this request alone.
   */
  admit(wireBytes: number): boolean {
    this.exempt = false;
    this.cap = AMPLIFICATION_FACTOR * wireBytes;
    this.ip = this.ips.touch(this.key, 0);
    if (this.ip < 0) {
      this.grant = this.cap;
      return true;
    }
    this.grant = -1;
    if (this.ips.admit(this.ip, wireBytes)) return true;
    this.counters.drop('rate_limited');
    return false;
  }

  /** Spends the wire bytes of a reply of `bytes` payload, if the budget allows. */
  allow(bytes: number): boolean {
    if (this.exempt) return true;
    const wire = bytes + this.extra + this.overhead;
    if (wire > this.cap) return false;
    if (this.grant >= 0) {
      if (wire > this.grant) return false;
      this.grant -= wire;
    } else if (!this.ips.spend(this.ip, wire)) return false;
    return true;
  }

  /** Whether a reply of `bytes` payload fits, without spending. */
  affords(bytes: number): boolean {
    if (this.exempt) return true;
    const wire = bytes + this.extra + this.overhead;
    return wire <= this.cap && (this.grant >= 0 ? wire <= this.grant : this.ips.credit[this.ip]! >= wire);
  }

  /** Budget handed to another shard with a forwarded request, taken from this IP's credit now; -1: exempt. */
  takeGrant(): number {
    if (this.exempt) return -1;
    if (this.grant >= 0) { const g = this.grant; this.grant = 0; return g; }
    const g = Math.min(MAX_PUSH_GRANT, this.ips.credit[this.ip]!);
    this.ips.credit[this.ip]! -= g;
    return g;
  }

  /** The most one reply may cost, for a forwarded request to take along (with takeGrant). */
  get replyCap(): number { return this.cap; }

  /** Opens a reply record (counted as a datagram out); the caller writes the payload and ends it. */
  begin(): ReplyWriter {
    this.counters.out(this.action, this.dialect);
    if (this.index >= 0) this.writer.toRequest(this.index);
    else this.writer.toAddress(this.socket, this.address, this.port);
    return this.writer;
  }

  /** The batch's writer and the request's record index in it, for a handler that writes its records itself (STUN: from another socket, to another port). */
  get batch(): ReplyWriter { return this.batchWriter; }
  get recordIndex(): number { return this.index; }

  /** Ends the reply record begun last: tagged when this request's replies are (the payload's closing `}` becomes the tag member). */
  end(): void {
    if (this.tagKey === null) this.writer.end();
    else this.writer.endTagged(this.tagKey);
  }

  /** Sends one reply if the budget allows; else a counted drop. */
  send(payload: Uint8Array | string): boolean {
    if (!this.allow(payloadBytes(payload))) { this.counters.drop('amplification'); return false; }
    const w = this.begin();
    if (typeof payload === 'string') w.text(payload); else w.bytes(payload);
    this.end();
    return true;
  }

  /** Sends the fullest of a reply's forms that the budget affords; if none fits, a counted drop. */
  sendFirstFitting(forms: ReplyForms): boolean {
    for (let i = 0; i < forms.length - 1; i++) {
      if (this.affords(payloadBytes(forms[i]!))) return this.send(forms[i]!);
    }
    return this.send(forms[forms.length - 1]!);
  }

  /** An error reply; counted by code when it is sent (the counters say what clients were told). */
  error(code: ErrorCode, message?: string): void {
    // The message is the optional part: when the reply would cost more than 3x its
    // request, the code's own shorter message goes, and at last an empty one.
    const full = errorJson(code, message ?? ERROR_CODES[code]);
    const forms = message !== undefined && message !== ERROR_CODES[code] ? [full, errorJson(code), errorJson(code, '')] : [full, errorJson(code, '')];
    if (this.sendFirstFitting(forms)) this.counters.error(code);
  }
}
