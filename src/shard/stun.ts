// STUN on the tracker's port (RFC 8489 Binding; with a second address, RFC 5780
// discovery). The response obeys the reply budget like any other: a source that
// has not proved it receives gets at most 3x the wire bytes it sent, wherever the
// response goes (another socket of ours for CHANGE-REQUEST, another port of the
// same IP for RESPONSE-PORT). Its size is bounded too: PADDING is cut so that a
// response fits a UDP datagram of the requester's family, a reply record, and
// config maxDatagram. The bytes are stun/binding.ts's; this file decides.
import { ADDR_BYTES, parseIp } from '../protocol/address.js';
import { UNKNOWN } from '../protocol/dialect.js';
import { BindingRequest, MAX_UDP_PAYLOAD, errorBytes, paddingWithin, readRequest, successBytes, writeError, writeSuccess, type AddressRef, type Discovery } from '../stun/binding.js';
import { CHANGE_IP, CHANGE_PORT } from '../stun/codec.js';
import { MAX_RECORD_PAYLOAD } from '../wire/frame.js';
import { STUN } from './counters.js';
import type { ShardContext } from './context.js';

export class StunResponder {
  /** The request being read (one object, reused). */
  private readonly request = new BindingRequest();
  /** The tracker's addresses by socket index (NAT behaviour discovery only). */
  private readonly endpoints: AddressRef[];
  /** The mapped address: the request's source (its bytes are the requester's key). */
  private readonly mapped: AddressRef;
  private readonly discovery: Discovery | null;

  /**
   * The largest response, in bytes: config maxDatagram (the largest request taken),
   * within what a reply record holds (its own ceiling, whatever config says).
   */
  private readonly maxResponse: number;

  constructor(endpoints: readonly { address: string; port: number }[], sourceKey: Uint8Array, maxDatagram: number) {
    this.maxResponse = Math.min(maxDatagram, MAX_RECORD_PAYLOAD);
    this.endpoints = endpoints.map(({ address, port }) => {
      const addr = new Uint8Array(ADDR_BYTES);
      const text = Buffer.from(address, 'latin1');
      const family = parseIp(text, 0, text.length, addr, 0);
      if (family === 0) throw new Error(`not an IP address: ${address}`);
      return { addr, at: 0, port, family };
    });
    this.mapped = { addr: sourceKey, at: 0, port: 0, family: 4 };
    this.discovery = this.endpoints.length === 4 ? { origin: this.endpoints[0]!, other: this.endpoints[3]! } : null;
  }

  /** Answers the STUN message at buf[at, at + len), which came in on `socket` from the requester's address. */
  respond(s: ShardContext, socket: number, family: 4 | 6, buf: Uint8Array, addrAt: number, addrLen: number, at: number, len: number): void {
    const r = s.requester, req = this.request;
    const verdict = readRequest(buf, at, len, this.discovery !== null, req);
    s.counters.stunRequest(verdict);
    s.counters.in(STUN, UNKNOWN);
    r.action = STUN;
    r.dialect = UNKNOWN;
    switch (verdict) {
      case 'indication': return; // a keep-alive: no response
      case 'malformed': s.counters.drop('stun_malformed'); return;
      case 'bad-fingerprint': s.counters.drop('stun_bad_fingerprint'); return;
      case 'not-a-request': s.counters.drop('stun_not_a_request'); return;
      default: break;
    }
    // The session of this address, if it proved it receives, is not charged.
    r.verified = s.sessions.verifiedAt(r.key, r.port);
    const w = r.batch;
    if (verdict !== 'binding') {
      const code = verdict === 'bad-request' ? 400 : 420;
      if (!r.allow(errorBytes(code, req))) { s.counters.drop('amplification'); return; }
      r.begin();
      const n = writeError(w.room(errorBytes(code, req)), w.position, buf, at, req, code);
      w.skip(n);
      w.end();
      s.counters.stunResponse(code);
      return;
    }
    // CHANGE-REQUEST: from the socket whose IP and/or port differ (socket = ip * 2 + port, see ShardOptions).
    const from = socket ^ ((req.change & CHANGE_IP) !== 0 ? 2 : 0) ^ ((req.change & CHANGE_PORT) !== 0 ? 1 : 0);
    const toPort = req.responsePort !== 0 ? req.responsePort : r.port;
    const d = this.discovery;
    if (d !== null) { d.origin = this.endpoints[from]!; d.other = this.endpoints[socket ^ 3]!; }
    this.mapped.port = r.port;
    this.mapped.family = family;
    // PADDING as asked, cut to what a datagram to the requester can carry; and only
    // where the budget affords it: the response is complete without.
    const asked = paddingWithin(Math.min(this.maxResponse, MAX_UDP_PAYLOAD[family]), family, d, req.padding, req.fingerprint);
    const padding = asked > 0 && r.affords(successBytes(family, d, asked, req.fingerprint)) ? asked : 0;
    const bytes = successBytes(family, d, padding, req.fingerprint);
    if (!r.allow(bytes)) { s.counters.drop('amplification'); return; }
    s.counters.out(STUN, UNKNOWN);
    if (from === socket && toPort === r.port) w.toRequest(r.recordIndex);
    else w.toAddressBytes(from, buf, addrAt, addrLen, toPort);
    const n = writeSuccess(w.room(bytes), w.position, buf, at, req, this.mapped, d, padding);
    w.skip(n);
    w.end();
    s.counters.stunResponse(0);
  }
}
