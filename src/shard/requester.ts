// The request being handled: who sent it, where its replies go, and what they may
// cost. One per shard, set up again for each request (no object per request);
// handlers write every reply through it, so the amplification rule is applied in
// one place.
//
// The rule: a requester that has not proved it receives at its address gets
// replies only from its IP's credit (3x the wire bytes the IP sent, ip-table.ts),
// or from a fixed grant (an IP the table has no room for; a push forwarded from
// another shard or instance). A reply of `bytes` payload costs its wire bytes.
import { ADDR_BYTES } from '../protocol/address.js';
import type { ReplyForms } from '../protocol/dialect.js';
import { ERROR_CODES, errorJson, type ErrorCode } from '../protocol/errors.js';
import type { ReplyWriter } from '../wire/frame.js';
import type { ShardCounters } from './counters.js';
import { AMPLIFICATION_FACTOR, type IpTable } from './ip-table.js';

/** Most reply credit (wire bytes) a push carries to another shard: a pushReceived plus a pushed fit. */
export const MAX_PUSH_GRANT = 1024;

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
  verified = false;
  private grant = -1;
  overhead = 0;

  constructor(private readonly ips: IpTable, private readonly counters: ShardCounters, private readonly batchWriter: ReplyWriter) {
    this.writer = batchWriter;
  }

  /** A request in the current batch (record `index`), from `port` of the IP in `key`; `overhead` by its family. */
  fromRecord(index: number, port: number, overhead: number): void {
    this.index = index;
    this.port = port;
    this.overhead = overhead;
    this.writer = this.batchWriter;
  }

  /** A push handled away from its requester: replies go to address:port from `socket`, into `writer`, within `grant` (-1: verified, no limit). */
  fromForward(socket: number, address: string, port: number, overhead: number, grant: number, writer: ReplyWriter): void {
    this.index = -1;
    this.socket = socket;
    this.address = address;
    this.port = port;
    this.overhead = overhead;
    this.writer = writer;
    this.ip = -1;
    this.grant = grant;
    this.verified = grant < 0;
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
    this.verified = false;
    this.ip = this.ips.touch(this.key, 0);
    if (this.ip < 0) {
      this.grant = AMPLIFICATION_FACTOR * wireBytes;
      return true;
    }
    this.grant = -1;
    if (this.ips.admit(this.ip, wireBytes)) return true;
    this.counters.drop('rate_limited');
    return false;
  }

  /** Spends the wire bytes of a reply of `bytes` payload, if the budget allows. */
  allow(bytes: number): boolean {
    if (this.verified) return true;
    const wire = bytes + this.overhead;
    if (this.grant >= 0) {
      if (wire > this.grant) return false;
      this.grant -= wire;
      return true;
    }
    return this.ips.spend(this.ip, wire);
  }

  /** Whether a reply of `bytes` payload fits, without spending. */
  affords(bytes: number): boolean {
    if (this.verified) return true;
    const wire = bytes + this.overhead;
    return this.grant >= 0 ? wire <= this.grant : this.ips.credit[this.ip]! >= wire;
  }

  /** Budget handed to another shard with a forwarded push, taken from this IP's credit now; -1: verified. */
  takeGrant(): number {
    if (this.verified) return -1;
    if (this.grant >= 0) { const g = this.grant; this.grant = 0; return g; }
    const g = Math.min(MAX_PUSH_GRANT, this.ips.credit[this.ip]!);
    this.ips.credit[this.ip]! -= g;
    return g;
  }

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

  /** Sends one reply if the budget allows; else a counted drop. */
  send(payload: Uint8Array | string): boolean {
    if (!this.allow(payloadBytes(payload))) { this.counters.drop('amplification'); return false; }
    const w = this.begin();
    if (typeof payload === 'string') w.text(payload); else w.bytes(payload);
    w.end();
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
    if (this.send(errorJson(code, message ?? ERROR_CODES[code]))) this.counters.error(code);
  }
}
