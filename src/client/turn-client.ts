// A TURN client (RFC 8656, over UDP), for when no direct path exists: both NATs
// map each destination to its own port (punch.ts finds no strategy), so one side
// takes a relayed address on a TURN server (coturn) and the peer sends there.
//
// It runs over a socket the caller owns (TurnTransport), in practice the
// TrackerClient's: the allocation then belongs to the same socket and NAT mapping
// as the tracker session, so the peer reaches us on the one port we keep open,
// and requests, indications and ChannelData interleave with the tracker's JSON and
// the peers' probes. Requests go through the socket's STUN transactions
// (stun-transactions.ts: retransmission, matching by transaction id); everything
// else the TURN server sends (Data indications, ChannelData) arrives as the
// socket's ordinary datagrams, and this client takes those from the server's
// address only. A plain dgram socket works too (socketTransport), for tests and
// the bench.
//
// Why not a library: werift-ice 0.2 has a TURN client that coturn accepts, but
// its TurnProtocol owns its transport (it sets the transport's single `onData`
// handler, and close() closes the transport), so sharing the tracker's socket would
// need a fake transport in front of it; it brings a second STUN codec and
// transaction layer beside src/stun/codec.ts and stun-transactions.ts, and pulls in
// the whole ICE package (with debug and multicast-dns). What this project needs is
// small: Allocate, Refresh, CreatePermission, ChannelBind, Send/Data indications
// and ChannelData, on the codec it already has.
//
// Authentication is RFC 8489's long-term credential: the first Allocate goes
// without credentials and gets 401 with REALM and NONCE; from then on every
// request carries USERNAME, REALM, NONCE and MESSAGE-INTEGRITY (key MD5(username
// ":" realm ":" password)), and 438 Stale Nonce is retried with the new nonce.
// Every success response must carry a valid MESSAGE-INTEGRITY under that key, or it
// is refused: only the server that knows the password can hand us a relayed
// address. Only what that MESSAGE-INTEGRITY covers is read: the codec leaves out
// any attribute after it (RFC 8489 14.5; stun/codec.ts decodeMessage). The credentials are minted by the tracker (relay/credentials.ts) in
// coturn's shared-secret scheme.
//
// What it keeps alive, and how:
//   the allocation   Refresh before the granted LIFETIME ends (a minute early, or
//                    at half of it when it is short); Refresh 0 on close
//   permissions      by peer IP (RFC 8656 9: the peer may send from any port of
//                    it), renewed before their 300 s while someone holds them
//   channels         by peer IP and port, 0x4000-0x4FFF, renewed before their
//                    600 s while held; a released number stays with its peer
//                    (RFC 8656 12: no other peer may take it for 5 minutes)
// A peer's datagrams arrive as Data indications until a channel is bound, as
// ChannelData after; we send Send indications until our ChannelBind succeeds.
import { randomBytes } from 'node:crypto';
import type { RemoteInfo, Socket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import { canonicalIp } from '../protocol/address.js';
import {
  ATTR, CHANNEL_MAX, CHANNEL_MIN, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS, METHOD, MessageBuilder,
  addressAttribute, attribute, checkIntegrity, decodeChannelData, decodeMessage, encodeChannelData, errorCode,
  isChannelData, longTermKey, looksLikeStun, messageType, typeOf, type StunMessage, type TransportAddress,
} from '../stun/codec.js';
import type { Subscribe } from './peer-path.js';
import { StunTimeoutError, StunTransactions, type StunExchangeOptions, type StunReply } from './stun-transactions.js';
import type { TrackerClient } from './tracker-client.js';

// ---- the socket underneath

/** The caller's socket, as the TURN client uses it. */
export interface TurnTransport {
  /** One STUN request to host:port, retransmitted until answered (stun-transactions.ts). */
  request(msg: Buffer, host: string, port: number, opts: StunExchangeOptions): Promise<StunReply>;
  /** One datagram, fire and forget: a lost one is what UDP does, and the peer's protocol copes. */
  send(msg: Buffer, host: string, port: number): void;
  /** The socket's datagrams that answer none of request()'s transactions. */
  messages: Subscribe;
}

/** A TrackerClient's socket: the relayed traffic shares the tracker session's NAT mapping. */
export function trackerTransport(client: TrackerClient): TurnTransport {
  return {
    request: (msg, host, port, opts) => client.stun(msg, host, port, opts),
    // it rejects only when the client is closed; the next request says so
    send: (msg, host, port) => { client.send(msg, host, port).catch(() => undefined); },
    messages: (fn) => { client.on('message', fn); return () => { client.off('message', fn); }; },
  };
}

/** A plain dgram socket that the caller has bound; detach() stops listening on it. */
export function socketTransport(socket: Socket): TurnTransport & { detach(): void } {
  const transactions = new StunTransactions();
  const listeners = new Set<(msg: Buffer, from: RemoteInfo) => void>();
  const onMessage = (msg: Buffer, from: RemoteInfo): void => {
    if (transactions.receive(msg, from)) return;
    for (const l of listeners) l(msg, from);
  };
  socket.on('message', onMessage);
  return {
    request: (msg, host, port, opts) => transactions.request(msg, (m) => socket.send(m, port, host, () => undefined), `${host}:${port}`, opts),
    send: (msg, host, port) => {
      try {
        socket.send(msg, port, host, () => undefined);
      } catch {
        // closed: the next request says so
      }
    },
    messages: (fn) => { listeners.add(fn); return () => { listeners.delete(fn); }; },
    detach: () => { socket.off('message', onMessage); },
  };
}

// ---- errors

export type TurnMethod = 'Allocate' | 'Refresh' | 'CreatePermission' | 'ChannelBind';

/**
 * Why a request failed:
 *   rejected         the server answered with an error response: `code` and `reason`
 *   timeout          no answer
 *   unauthenticated  a success response without a valid MESSAGE-INTEGRITY (refused)
 *   malformed        a success response without an attribute it must carry
 *   closed           this TurnClient is closed, its allocation was lost, or the
 *                    socket underneath is closed
 */
export type TurnFailure = 'rejected' | 'timeout' | 'unauthenticated' | 'malformed' | 'closed';

/** What the error codes a TURN client meets mean here (RFC 8489 14.8, RFC 8656 19). */
const MEANING: Record<number, string> = {
  300: 'Try Alternate (another server is suggested; not followed)',
  400: 'Bad Request',
  401: 'credentials refused: expired, altered, or minted with another secret',
  403: 'Forbidden: the server does not relay to or from this peer address (coturn refuses loopback and private peers unless allowed)',
  420: 'Unknown Attribute',
  437: 'Allocation Mismatch: this socket has no allocation (it expired or was released), or already has one (Allocate)',
  438: 'Stale Nonce, still after retrying with fresh nonces',
  440: 'Address Family not Supported',
  441: 'Wrong Credentials: not the username this allocation was made with',
  442: 'Unsupported Transport Protocol',
  443: 'Peer Address Family Mismatch',
  486: 'Allocation Quota Reached: this username holds as many allocations as the server allows',
  500: 'Server Error',
  508: 'Insufficient Capacity: the server has no relay port, permission or channel left to give',
};

export class TurnError extends Error {
  /** The STUN error code of a `rejected` request. */
  readonly code: number | undefined;
  /** The server's reason phrase of a `rejected` request. */
  readonly reason: string | undefined;

  constructor(readonly failure: TurnFailure, readonly method: TurnMethod, message: string,
    rejected?: { code: number; reason: string }, options?: ErrorOptions) {
    super(`TURN ${method}: ${message}`, options);
    this.name = 'TurnError';
    this.code = rejected?.code;
    this.reason = rejected?.reason;
  }
}

function rejected(method: TurnMethod, code: number, reason: string): TurnError {
  const meaning = MEANING[code];
  return new TurnError('rejected', method, `${code} ${reason}${meaning !== undefined ? ` (${meaning})` : ''}`, { code, reason });
}

// ---- the client

export interface TurnClientOptions {
  /** The TURN server (UDP). A host name is resolved once. */
  server: { host: string; port: number };
  /** The long-term credential, e.g. a minted one: `username` and its `credential` as the password. */
  username: string;
  password: string;
  /** The allocation lifetime to ask for, in seconds; the server may grant less. Default 600 (RFC 8656's default). */
  lifetime?: number;
  /** Give up on a request after this long. Default 5000 ms. */
  timeoutMs?: number;
  /** Send a request again after this long without an answer. Default 500 ms. */
  retransmitMs?: number;
  /** How often a held permission is renewed; the server keeps one 300 s (RFC 8656 9). Default 240000 ms. */
  permissionRefreshMs?: number;
  /** How often a held channel is renewed; the server keeps one 600 s (RFC 8656 12). Default 480000 ms. */
  channelRefreshMs?: number;
}

/** A peer's transport address, as seen from the relay. */
export interface TurnPeer { address: string; port: number }

/** A channel someone holds (bindChannel): renewed until every holder has released it. */
export interface ChannelHold {
  channel: number;
  /** The peer, its IP in canonical form. */
  peer: TurnPeer;
  release(): void;
}

export interface TurnClientEvents {
  /** A peer's datagram, relayed: as a Data indication, or as ChannelData on a bound channel. */
  data: [data: Buffer, from: TurnPeer, via: 'indication' | 'channel'];
  /** A renewal in the background failed; another attempt follows while there is time. */
  error: [err: TurnError];
  /** The allocation is gone without close(): a Refresh was refused, or none got through before it expired. */
  lost: [err: TurnError];
  close: [];
}

/** Datagrams this client handled, for tests and the bench. */
export interface TurnCounters {
  indicationsIn: number;
  channelDataIn: number;
  indicationsOut: number;
  channelDataOut: number;
  /** From the server, but neither a Data indication nor ChannelData on a channel we know. */
  ignored: number;
}

interface Auth { realm: string; nonce: Buffer; key: Buffer }

interface Permission { holders: number; ready: Promise<void>; timer: NodeJS.Timeout | undefined }

interface Channel {
  number: number;
  peer: TurnPeer;
  /** Our ChannelBind succeeded and someone holds the channel: send ChannelData. */
  bound: boolean;
  /** Released by every holder, so no longer renewed. */
  lapsing: boolean;
  holders: number;
  ready: Promise<void>;
  timer: NodeJS.Timeout | undefined;
}

const DATA_INDICATION = messageType(METHOD.DATA, CLASS_INDICATION);
const SEND_INDICATION = messageType(METHOD.SEND, CLASS_INDICATION);
/** REQUESTED-TRANSPORT: UDP (protocol 17) in the first byte, then RFFU zeros. */
const UDP_TRANSPORT = Buffer.from([17, 0, 0, 0]);
/** 438 is answered with a fresh nonce; more than this many in a row is the server's fault. */
const STALE_NONCE_RETRIES = 3;
/** Refresh 0 on close waits at most this long: the allocation expires by itself anyway. */
const RELEASE_TIMEOUT_MS = 2000;

const peerKey = (p: TurnPeer): string => `${p.address}|${p.port}`;

/** An allocation on a TURN server. Make one with TurnClient.allocate(). */
export class TurnClient extends EventEmitter<TurnClientEvents> {
  readonly counters: TurnCounters = { indicationsIn: 0, channelDataIn: 0, indicationsOut: 0, channelDataOut: 0, ignored: 0 };

  readonly #transport: TurnTransport;
  readonly #options: TurnClientOptions;
  readonly #server: { address: string; port: number };
  readonly #requestOpts: StunExchangeOptions;
  #auth: Auth | undefined;
  #relayed: TransportAddress | undefined;
  #mapped: TransportAddress | undefined;
  #lifetime = 0;
  #expiresAt = 0;
  #refreshTimer: NodeJS.Timeout | undefined;
  readonly #permissions = new Map<string, Permission>();
  readonly #channels = new Map<string, Channel>();
  readonly #byNumber = new Map<number, Channel>();
  #nextChannel = CHANNEL_MIN;
  #unsubscribe: () => void = () => undefined;
  /** Set once the allocation is over (close() or lost): no request starts after it. */
  #ended = false;
  #closing: Promise<void> | undefined;

  private constructor(transport: TurnTransport, options: TurnClientOptions, server: { address: string; port: number }) {
    super();
    this.#transport = transport;
    this.#options = options;
    this.#server = server;
    this.#requestOpts = { timeoutMs: options.timeoutMs ?? 5000, retransmitMs: options.retransmitMs ?? 500 };
  }

  /**
   * Allocates a relayed address (UDP) over `transport`. Rejects with a TurnError:
   * `rejected` with code 401 when the credentials are refused, 486 over quota, 508
   * when the server is full, 437 when this socket has an allocation already.
   */
  static async allocate(transport: TurnTransport, options: TurnClientOptions): Promise<TurnClient> {
    const { host, port } = options.server;
    const address = isIP(host) ? canonicalIp(host)! : canonicalIp((await lookup(host)).address)!;
    const turn = new TurnClient(transport, options, { address, port });
    await turn.#allocate();
    return turn;
  }

  /** Our relayed transport address: where peers send to reach us. */
  get relayed(): TransportAddress {
    return this.#relayed!;
  }

  /** Our address as the TURN server sees it: the socket's public mapping. */
  get mapped(): TransportAddress {
    return this.#mapped!;
  }

  /** The lifetime the server granted last, in seconds. */
  get lifetime(): number {
    return this.#lifetime;
  }

  get closed(): boolean {
    return this.#ended;
  }

  async #allocate(): Promise<void> {
    const lifetime = this.#options.lifetime ?? 600;
    const m = await this.#request(METHOD.ALLOCATE, 'Allocate', (b) => b.add(ATTR.REQUESTED_TRANSPORT, UDP_TRANSPORT).addUint32(ATTR.LIFETIME, lifetime));
    const relayed = addressAttribute(m, ATTR.XOR_RELAYED_ADDRESS);
    const mapped = addressAttribute(m, ATTR.XOR_MAPPED_ADDRESS);
    const granted = attribute(m, ATTR.LIFETIME);
    if (relayed === null || mapped === null || granted?.length !== 4) {
      this.#ended = true;
      throw new TurnError('malformed', 'Allocate', 'the success response lacks XOR-RELAYED-ADDRESS, XOR-MAPPED-ADDRESS or LIFETIME');
    }
    this.#relayed = relayed;
    this.#mapped = mapped;
    this.#unsubscribe = this.#transport.messages((msg, from) => this.#onDatagram(msg, from));
    this.#granted(granted.readUInt32BE(0));
  }

  /**
   * Renews the allocation now (the client also does it by itself before it expires).
   * Resolves with the granted lifetime in seconds.
   */
  async refresh(lifetime: number = this.#options.lifetime ?? 600): Promise<number> {
    if (!(lifetime > 0)) throw new RangeError('a Refresh asks for a lifetime > 0 s; close() releases the allocation');
    const m = await this.#request(METHOD.REFRESH, 'Refresh', (b) => b.addUint32(ATTR.LIFETIME, lifetime));
    const granted = attribute(m, ATTR.LIFETIME);
    if (granted?.length !== 4) throw new TurnError('malformed', 'Refresh', 'the success response lacks LIFETIME');
    this.#granted(granted.readUInt32BE(0));
    return this.#lifetime;
  }

  #granted(seconds: number): void {
    this.#lifetime = seconds;
    this.#expiresAt = Date.now() + seconds * 1000;
    this.#scheduleRefresh(Math.max(seconds / 2, seconds - 60) * 1000);
  }

  #scheduleRefresh(inMs: number): void {
    clearTimeout(this.#refreshTimer);
    if (this.#ended) return;
    // Unref'd, as the renewals below: the socket underneath keeps the process
    // alive while it is open, and once it is closed there is nothing to renew.
    this.#refreshTimer = setTimeout(() => void this.#autoRefresh(), inMs).unref();
  }

  async #autoRefresh(): Promise<void> {
    try {
      await this.refresh();
    } catch (err) {
      if (this.#ended) return;
      const e = err as TurnError;
      const left = this.#expiresAt - Date.now();
      // no answer: the allocation may well be alive; try again while there is time
      if (e.failure === 'timeout' && left > 2 * (this.#requestOpts.timeoutMs ?? 5000)) {
        this.#emitError(e);
        this.#scheduleRefresh(left / 2);
        return;
      }
      this.#lose(e);
    }
  }

  /**
   * Lets `ip` send to us through the relay (from any of its ports), and keeps the
   * permission renewed until every caller has called the returned release().
   */
  async createPermission(ip: string): Promise<() => void> {
    const address = peerIp(ip);
    let p = this.#permissions.get(address);
    if (p === undefined) {
      const entry: Permission = { holders: 0, timer: undefined, ready: this.#createPermission(address) };
      entry.ready.catch(() => { if (this.#permissions.get(address) === entry) this.#permissions.delete(address); });
      this.#permissions.set(address, entry);
      p = entry;
    }
    await p.ready;
    if (this.#ended) throw new TurnError('closed', 'CreatePermission', 'the allocation was closed meanwhile');
    const held = p;
    held.holders++;
    held.timer ??= setInterval(() => {
      this.#createPermission(address).catch((err: TurnError) => this.#backgroundFailure(err));
    }, this.#options.permissionRefreshMs ?? 240_000).unref();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--held.holders > 0) return;
      clearInterval(held.timer);
      if (this.#permissions.get(address) === held) this.#permissions.delete(address);
    };
  }

  async #createPermission(address: string): Promise<void> {
    await this.#request(METHOD.CREATE_PERMISSION, 'CreatePermission', (b) => b.addAddress(ATTR.XOR_PEER_ADDRESS, address, 0));
  }

  /**
   * Binds a channel to `peer` (installing a permission for its IP too, RFC 8656 12),
   * so that datagrams both ways travel as ChannelData (4 bytes of header instead of
   * 36 or more), and keeps it renewed until every caller has released it. The same
   * peer always gets the same number.
   */
  async bindChannel(peer: TurnPeer): Promise<ChannelHold> {
    const target: TurnPeer = { address: peerIp(peer.address), port: peer.port };
    const key = peerKey(target);
    let c = this.#channels.get(key);
    if (c === undefined) {
      if (this.#nextChannel > CHANNEL_MAX) throw new RangeError(`all ${CHANNEL_MAX - CHANNEL_MIN + 1} channel numbers of this allocation are taken`);
      const entry: Channel = { number: this.#nextChannel++, peer: target, bound: false, lapsing: false, holders: 0, timer: undefined, ready: Promise.resolve() };
      // The server may send ChannelData as soon as it has bound the channel, before
      // its response reaches us: know the number on the way in first.
      this.#channels.set(key, entry);
      this.#byNumber.set(entry.number, entry);
      entry.ready = this.#channelBind(entry);
      entry.ready.catch(() => {
        // the number is not used again in this allocation: the server may have bound it
        if (this.#channels.get(key) === entry && !entry.bound) { this.#channels.delete(key); this.#byNumber.delete(entry.number); }
      });
      c = entry;
    } else if (c.lapsing) {
      // released earlier, maybe lapsed by now: bind the same pair again
      const again = c;
      again.lapsing = false;
      again.ready = this.#channelBind(again);
      again.ready.catch(() => { if (again.holders === 0) again.lapsing = true; }); // the next caller tries again
    }
    await c.ready;
    if (this.#ended) throw new TurnError('closed', 'ChannelBind', 'the allocation was closed meanwhile');
    const held = c;
    held.holders++;
    held.bound = true;
    held.timer ??= setInterval(() => {
      this.#channelBind(held).catch((err: TurnError) => this.#backgroundFailure(err));
    }, this.#options.channelRefreshMs ?? 480_000).unref();
    let released = false;
    return {
      channel: held.number,
      peer: held.peer,
      release: () => {
        if (released) return;
        released = true;
        if (--held.holders > 0) return;
        // Unrenewed, it lapses on the server within 600 s; until then the peer's
        // ChannelData still reaches us, and we go back to Send indications.
        held.bound = false;
        held.lapsing = true;
        clearInterval(held.timer);
        held.timer = undefined;
      },
    };
  }

  async #channelBind(c: Channel): Promise<void> {
    await this.#request(METHOD.CHANNEL_BIND, 'ChannelBind', (b) => b
      .add(ATTR.CHANNEL_NUMBER, Buffer.from([c.number >> 8, c.number & 0xff, 0, 0]))
      .addAddress(ATTR.XOR_PEER_ADDRESS, c.peer.address, c.peer.port));
  }

  /**
   * Sends `data` to `peer` through the relay: as ChannelData on a bound channel, else
   * in a Send indication (the server drops it unless the peer's IP has a
   * permission). Does nothing once the allocation is over.
   */
  send(data: Uint8Array, peer: TurnPeer): void {
    if (this.#ended) return;
    const c = this.#channels.get(peerKey(peer)) ?? this.#channels.get(peerKey({ address: peerIp(peer.address), port: peer.port }));
    let msg: Buffer;
    if (c?.bound === true) {
      msg = encodeChannelData(c.number, data);
      this.counters.channelDataOut++;
    } else {
      msg = new MessageBuilder(SEND_INDICATION, randomBytes(12))
        .addAddress(ATTR.XOR_PEER_ADDRESS, peer.address, peer.port)
        .add(ATTR.DATA, data)
        .build();
      this.counters.indicationsOut++;
    }
    this.#transport.send(msg, this.#server.address, this.#server.port);
  }

  #onDatagram(msg: Buffer, from: RemoteInfo): void {
    if (from.port !== this.#server.port || (from.address !== this.#server.address && canonicalIp(from.address) !== this.#server.address)) return;
    if (isChannelData(msg, 0, msg.length)) {
      const cd = decodeChannelData(msg)!;
      const c = this.#byNumber.get(cd.channel);
      if (c === undefined) { this.counters.ignored++; return; }
      this.counters.channelDataIn++;
      this.emit('data', cd.data, c.peer, 'channel');
      return;
    }
    // Anything else from the server we expect is a Data indication; late answers
    // to retransmitted requests arrive here too, and are ignored.
    if (!looksLikeStun(msg, 0, msg.length) || typeOf(msg, 0) !== DATA_INDICATION) { this.counters.ignored++; return; }
    const m = decodeMessage(msg);
    const peer = typeof m === 'string' ? null : addressAttribute(m, ATTR.XOR_PEER_ADDRESS);
    const data = typeof m === 'string' ? undefined : attribute(m, ATTR.DATA);
    if (peer === null || data === undefined) { this.counters.ignored++; return; }
    this.counters.indicationsIn++;
    this.emit('data', data, { address: peer.address, port: peer.port }, 'indication');
  }

  /**
   * Releases the allocation (Refresh with LIFETIME 0), stops every timer and stops
   * listening. Safe to call twice; never rejects: an allocation not released
   * expires by itself within its lifetime.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const release = !this.#ended;
      this.#stop();
      if (release) {
        await this.#request(METHOD.REFRESH, 'Refresh', (b) => b.addUint32(ATTR.LIFETIME, 0),
          { timeoutMs: Math.min(RELEASE_TIMEOUT_MS, this.#requestOpts.timeoutMs ?? RELEASE_TIMEOUT_MS) }, true).catch(() => undefined);
      }
      this.#unsubscribe();
      this.emit('close');
    })();
    return this.#closing;
  }

  /**
   * Stops using the allocation without a word to the server: every timer stops and
   * the client stops listening. For a client whose address moved: the server knows
   * allocations by their 5-tuple, so a release (or a refresh) sent from the new
   * address would act on the allocation made from there, not on this one, which
   * expires by itself within its lifetime.
   */
  abandon(): void {
    if (this.#closing !== undefined) return;
    this.#closing = Promise.resolve();
    this.#stop();
    this.#unsubscribe();
    this.emit('close');
  }

  #stop(): void {
    this.#ended = true;
    clearTimeout(this.#refreshTimer);
    for (const p of this.#permissions.values()) clearInterval(p.timer);
    for (const c of this.#channels.values()) { clearInterval(c.timer); c.bound = false; }
    this.#permissions.clear();
  }

  #lose(err: TurnError): void {
    if (this.#ended) return;
    this.#stop();
    this.#unsubscribe();
    this.emit('lost', err);
  }

  /**
   * A renewal failed: a 437 says the allocation is gone, and a closed socket
   * cannot renew anything; anything else is reported, and the next renewal may do better.
   */
  #backgroundFailure(err: TurnError): void {
    if (this.#ended) return;
    if ((err.failure === 'rejected' && err.code === 437) || err.failure === 'closed') this.#lose(err);
    else this.#emitError(err);
  }

  #emitError(err: TurnError): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  /**
   * One request, authenticated once the server asked for it (the 401 to the first
   * Allocate), with 438 retried on the fresh nonce. Resolves with a success
   * response whose MESSAGE-INTEGRITY is ours.
   */
  async #request(method: number, name: TurnMethod, fill: (b: MessageBuilder) => void,
    opts: StunExchangeOptions = this.#requestOpts, releasing = false): Promise<StunMessage> {
    let staleRetries = 0;
    for (;;) {
      if (this.#ended && !releasing) throw new TurnError('closed', name, 'the allocation is closed');
      const b = new MessageBuilder(messageType(method, CLASS_REQUEST), StunTransactions.transactionId());
      fill(b);
      const auth = this.#auth;
      if (auth !== undefined) {
        b.addString(ATTR.USERNAME, this.#options.username).addString(ATTR.REALM, auth.realm).add(ATTR.NONCE, auth.nonce);
      }
      const msg = b.build({ ...(auth !== undefined ? { integrityKey: auth.key } : {}), withFingerprint: true });
      let reply: StunReply;
      try {
        reply = await this.#transport.request(msg, this.#server.address, this.#server.port, { ...this.#requestOpts, ...opts });
      } catch (err) {
        if (err instanceof StunTimeoutError) {
          throw new TurnError('timeout', name, `no response from ${this.#server.address}:${this.#server.port} within ${opts.timeoutMs ?? this.#requestOpts.timeoutMs} ms`);
        }
        // the transport throws only when its socket cannot send: closed
        throw new TurnError('closed', name, `the socket underneath cannot send: ${(err as Error).message}`, undefined, { cause: err });
      }
      const m = reply.message;
      if (m.cls === CLASS_SUCCESS) {
        if (auth === undefined || !checkIntegrity(m, auth.key)) {
          throw new TurnError('unauthenticated', name, auth === undefined
            ? 'the server answered without asking for credentials; a response nobody authenticated is not trusted'
            : 'the success response has no valid MESSAGE-INTEGRITY for our credentials; refused');
        }
        return m;
      }
      const ec = errorCode(m) ?? { code: 0, reason: 'an error response without ERROR-CODE' };
      const realm = attribute(m, ATTR.REALM)?.toString('utf8');
      const nonce = attribute(m, ATTR.NONCE);
      if (ec.code === 401 && auth === undefined && realm !== undefined && nonce !== undefined) {
        this.#auth = { realm, nonce, key: longTermKey(this.#options.username, realm, this.#options.password) };
        continue;
      }
      if (ec.code === 438 && auth !== undefined && nonce !== undefined && staleRetries++ < STALE_NONCE_RETRIES) {
        const r = realm ?? auth.realm;
        this.#auth = { realm: r, nonce, key: r === auth.realm ? auth.key : longTermKey(this.#options.username, r, this.#options.password) };
        continue;
      }
      throw rejected(name, ec.code, ec.reason);
    }
  }
}

/** A peer IP in the codec's canonical text, so that it compares equal to what the relay reports. */
function peerIp(ip: string): string {
  const canonical = canonicalIp(ip);
  if (canonical === null) throw new RangeError(`a TURN peer is an IP address literal, not ${JSON.stringify(ip)}`);
  return canonical;
}
