import dgram from 'node:dgram';
import type { RemoteInfo, Socket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { EventEmitter } from 'node:events';
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import { secretOfToken, verifyTagged } from '../auth/tag.js';
import type { SipKey } from '../auth/siphash.js';
import { announceRequest, keepAliveRequest, parseReply, provingPulse, pushRequest, RELAY_ERRORS, relayRequest, CHALLENGE_REQUIRED, TOKEN_INVALID, tokenFields } from './messages.js';
import type { Dialect, NatType, PulseOptions, TrackerReply } from './messages.js';
import { StunTransactions, type StunExchangeOptions, type StunReply } from './stun-transactions.js';
import { gatherLocalCandidates } from './local-candidates.js';
import { parsePeerAddr } from './peer-addr.js';
import type { PeerAddr } from './peer-addr.js';

export interface TrackerClientOptions {
  /** Where the tracker listens. A host name is resolved once, when the socket opens. */
  tracker: { host: string; port: number };
  /** Which dialect to speak. Replies of both dialects are understood either way. Default 'documented'. */
  dialect?: Dialect;
  /**
   * How often to keep the session alive once announced. Default 2000 ms for
   * legacy (what the desktop client does) and 20000 ms for documented; keep it
   * well inside the tracker's ttl (5 min by default).
   */
  pulseIntervalMs?: number;
  /** Send pulses automatically after the first announce. Default true. */
  autoPulse?: boolean;
  /**
   * Announce again by itself when the tracker says the session is gone
   * (pulse status "1", legacy `expired`, NO_SESSION). Default true. When
   * false, a push without a session rejects instead of waiting for one.
   */
  reannounce?: boolean;
  /** How often an unanswered announce / pulse / push is re-sent. Default 1000 ms. */
  retryIntervalMs?: number;
  /** Aborting it closes the client. */
  signal?: AbortSignal;
  /** Local address to bind. Default: an ephemeral port on every address. */
  socket?: { host?: string; port?: number };
  /**
   * Documented dialect: ask for a session token with the announce (default true).
   * A tracker that issues one tags every message it sends us; from then on the
   * client drops, and counts (`stats.untrusted`), any datagram from the tracker's
   * address without a valid tag. A tracker without tokens answers as before.
   */
  token?: boolean;
  /**
   * How long the tracker keeps a silent session (its ttl; default 300000 ms, the
   * tracker's default). An untagged TOKEN_INVALID is believed only when no tagged
   * reply has come for this long: then the client announces again.
   */
  sessionTimeoutMs?: number;
  /**
   * Tell the tracker our local candidates (documented dialect): the socket's port on
   * each of this host's interface addresses (local-candidates.ts), sent with announce
   * and pulse. The tracker shows them to the peer we pair with alone, so a peer
   * behind the same NAT can reach us on our own network. Default true; false keeps
   * our local addresses to ourselves (and we are shown none of the peer's).
   */
  shareLocal?: boolean;
}

/** Options every request method takes. */
export interface CallOptions {
  /** Rejects the call (not the client) with the signal's reason. */
  signal?: AbortSignal;
  /** Give up after this long, rejecting with a TrackerError of code 'TIMEOUT'. Default: retry until closed. */
  timeoutMs?: number;
}

/** What the tracker tells a client that reported its own NAT type (see reportNat) about its peer. */
export interface PeerNat {
  /** The peer's NAT type, if it reported one. */
  nat?: NatType;
  /** The peer proved it receives at `peeraddr` (absent: the tracker did not say, so assume it did not). */
  peerVerified?: boolean;
  /** The peer's local candidates ("ip:port"): shown only to a client that shares its own (shareLocal). Claims, not proofs. */
  local?: string[];
}

export interface PushResult extends PeerAddr, PeerNat {
  /** The reply carried a valid tag under our token: the tracker sent it, for us. False on a tracker without tokens. */
  authenticated: boolean;
  /** The peer's public address as the tracker saw it: `ip:port` or `[v6]:port`. */
  peeraddr: string;
  /** Absent only from trackers that follow the original README to the letter. */
  peerShareId?: string;
  multiaddr?: string;
}

export interface IncomeEvent extends PeerAddr, PeerNat {
  /** The income carried a valid tag under our token: the tracker sent it, for us. False on a tracker without tokens. */
  authenticated: boolean;
  /** The address of the peer that pushed to us, as the tracker saw it. */
  peeraddr: string;
  peerShareId: string;
  /** A relayed address ("ip:port") the peer allocated for us: send there to reach it through its TURN server. */
  relay?: string;
}

/** TURN credentials the tracker minted for us (`relayReceived`), in coturn's shared-secret scheme. */
export interface RelayCredentials {
  /** turn:HOST:PORT URLs */
  urls: string[];
  username: string;
  credential: string;
  /** seconds they stay valid */
  ttl: number;
}

export interface PulseResult {
  /** '0': the session is alive. '1': the tracker has no session for us (the client re-announces by itself). */
  status: '0' | '1';
  overriden: boolean;
  /** Present in documented replies; a new value after `regenerateShareId`. */
  shareId?: string;
}

export interface TrackerClientEvents {
  /** The client holds a shareId: after announce, re-announce, or regeneration. */
  announced: [shareId: string];
  /** Someone pushed to our shareId: punch towards `peeraddr` now. */
  income: [income: IncomeEvent];
  pushReceived: [result: PushResult];
  pulse: [result: PulseResult];
  /** Every datagram from the tracker that the client accepts, parsed (for tools that print the raw exchange). */
  reply: [reply: TrackerReply];
  /** A datagram from the tracker's address that failed its tag check (we hold a token): dropped. */
  untrusted: [msg: Buffer, reason: string];
  /** Where the tracker saw us (`ip:port`), from each tagged reply that says (every token pulse reply does). */
  observed: [address: string];
  /** A datagram from anyone but the tracker: a peer, once the hole is open. */
  message: [msg: Buffer, rinfo: RemoteInfo];
  /** Socket errors and tracker `error` replies. Emitted only while someone listens, so it never crashes a process. */
  error: [err: Error];
  close: [];
}

/** A failed request: a tracker `error` reply, a timeout, or a closed client. */
export class TrackerError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'TrackerError';
    this.code = code;
  }
}

interface Pending<T> {
  kind: 'announce' | 'pulse' | 'push' | 'relay';
  /** For push: the target shareId. */
  target?: string;
  resolve(value: T): void;
  reject(err: Error): void;
}

const DEFAULT_PULSE_MS = { documented: 20_000, legacy: 2_000 } as const;

/**
 * A client of the sobani tracker over one UDP socket. The same socket later
 * talks to peers (`send`, the `message` event), because the hole the NAT opens
 * belongs to that socket's public mapping.
 *
 * UDP replies carry no request id, so replies are matched by kind: an announce
 * reply settles every pending announce, a push reply the pending push for its
 * `peerShareId` (or the oldest), a pulse reply the oldest pulse. Pulses are
 * therefore serialized.
 */
export class TrackerClient extends EventEmitter<TrackerClientEvents> {
  readonly dialect: Dialect;
  readonly pulseIntervalMs: number;
  readonly retryIntervalMs: number;
  readonly sessionTimeoutMs: number;

  #options: TrackerClientOptions;
  #socket: Socket | undefined;
  #opening: Promise<AddressInfo> | undefined;
  #tracker: { address: string; port: number } | undefined;
  #pending: Pending<never>[] = [];
  #announcing: { shared: Promise<string>; stop: AbortController; callers: number } | undefined;
  #pulseChain: Promise<unknown> = Promise.resolve();
  #pulseTimer: NodeJS.Timeout | undefined;
  #shareId: string | undefined;
  /** false once the tracker said our session is gone (until the next announce answer) */
  #live = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  /** Our NAT type, once known (reportNat): sent with announce and the proving pulse. */
  #nat: NatType | undefined;
  /** The local candidates the tracker last heard from us (undefined: none sent yet, or not shared). */
  #localSent: string[] | undefined;
  readonly #stun = new StunTransactions();
  /** Our session token and its secret (the tag key), once the tracker gave us one. */
  #token: string | undefined;
  #secret: SipKey | undefined;
  /** When the last tagged datagram came (performance.now()). */
  #lastTagged = 0;
  #observed: string | undefined;
  /**
   * The last path challenge we answered, and when: the same one again is answered at
   * most once per retryIntervalMs (our answer may be lost, or the move may have failed
   * on the tracker's side, e.g. DIRECTORY_UNAVAILABLE for a session at another
   * instance), so a tracker that keeps asking gets no ping-pong.
   */
  #answered: string | undefined;
  #answeredAt = 0;
  readonly #stats = { untrusted: 0 };
  #onAbort = (): void => void this.close();

  constructor(options: TrackerClientOptions) {
    super();
    this.#options = options;
    this.dialect = options.dialect ?? 'documented';
    this.pulseIntervalMs = options.pulseIntervalMs ?? DEFAULT_PULSE_MS[this.dialect];
    this.retryIntervalMs = options.retryIntervalMs ?? 1000;
    this.sessionTimeoutMs = options.sessionTimeoutMs ?? 300_000;
    if (!(this.pulseIntervalMs > 0) || !(this.retryIntervalMs > 0) || !(this.sessionTimeoutMs > 0)) throw new RangeError('intervals must be > 0 ms');
    if (options.signal?.aborted) this.#closed = true;
    else options.signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  /** The shareId the tracker gave us last, if any. */
  get shareId(): string | undefined {
    return this.#shareId;
  }

  /** Our session token (`<shareId>.<secret>`), once a tracker that issues them gave us one. */
  get token(): string | undefined {
    return this.#token;
  }

  /** Where the tracker last said it saw us (a tagged reply's `observed`), if it said. */
  get observed(): string | undefined {
    return this.#observed;
  }

  /** `untrusted`: datagrams from the tracker's address dropped because their tag did not check. */
  get stats(): { readonly untrusted: number } {
    return { untrusted: this.#stats.untrusted };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Our NAT type, as reported to the tracker (reportNat), if any. */
  get nat(): NatType | undefined {
    return this.#nat;
  }

  /** The local candidates we told the tracker last (undefined: none, or shareLocal is false). */
  get localCandidates(): readonly string[] | undefined {
    return this.#localSent;
  }

  /** Our local candidates now (re-read from the interfaces), or undefined when they are not shared. */
  #gatherLocal(): string[] | undefined {
    if (this.dialect !== 'documented' || this.#options.shareLocal === false || !this.#socket) return undefined;
    const a = this.#socket.address();
    return gatherLocalCandidates({ port: a.port, family: a.family === 'IPv6' ? 6 : 4, boundTo: a.address });
  }

  /** The candidates to put in the next announce or pulse: every time in an announce; in a pulse, when they changed. */
  #localFor(kind: 'announce' | 'pulse'): string[] | undefined {
    const now = this.#gatherLocal();
    if (now === undefined) return undefined;
    if (kind === 'pulse' && this.#localSent !== undefined && now.length === this.#localSent.length && now.every((c, i) => c === this.#localSent![i])) return undefined;
    this.#localSent = now;
    return now;
  }

  /**
   * Reports our NAT type (learned with discoverNat, nat-discovery.ts) to the tracker,
   * documented dialect only: with the next announce, or at once in a pulse when
   * the session exists. From then on the tracker tells us each peer's NAT type and
   * whether it proved it receives (PushResult / IncomeEvent).
   */
  async reportNat(nat: NatType, opts: CallOptions = {}): Promise<void> {
    if (this.dialect !== 'documented') throw new TypeError('nat exists only in the documented dialect');
    this.#nat = nat;
    const shareId = this.#shareId;
    if (!this.#live || shareId === undefined) return;
    const run = this.#pulseChain.then(() => this.#request<PulseResult>({ kind: 'pulse' }, () => provingPulse(shareId, { nat, token: this.#token }), opts));
    this.#pulseChain = run.catch(() => undefined);
    await run;
  }

  /**
   * One STUN request (e.g. a Binding) from this client's socket to `host:port`,
   * retransmitted until answered: the answer describes the NAT mapping that holds
   * the session (see nat-discovery.ts).
   */
  async stun(request: Buffer, host: string, port: number, opts: StunExchangeOptions = {}): Promise<StunReply> {
    await this.ready();
    const socket = this.#socket;
    if (!socket || this.#closed) throw closedError();
    return this.#stun.request(request, (msg) => socket.send(msg, port, host, (err) => { if (err) this.#emitError(err); }),
      `${host}:${port}`, opts);
  }

  /** The tracker's address as the client sends to it (host names resolved). Undefined before the socket opens. */
  get trackerAddress(): { address: string; port: number } | undefined {
    return this.#tracker;
  }

  /** Opens and binds the socket (done implicitly by every request); returns the local address. */
  ready(): Promise<AddressInfo> {
    if (this.#closed) return Promise.reject(closedError());
    this.#opening ??= this.#open();
    return this.#opening;
  }

  async #open(): Promise<AddressInfo> {
    const { host, port } = this.#options.tracker;
    // Resolve once, so no DNS lookup happens per datagram and replies can be
    // recognised by their source address.
    const address = isIP(host) ? host : (await lookup(host)).address;
    const type = isIP(address) === 6 ? 'udp6' : 'udp4';
    this.#tracker = { address, port };
    const socket = dgram.createSocket({ type });
    socket.on('error', (err) => this.#emitError(err));
    socket.on('message', (msg, rinfo) => this.#onDatagram(msg, rinfo));
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind({ port: this.#options.socket?.port ?? 0, address: this.#options.socket?.host }, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    if (this.#closed) {
      socket.close();
      throw closedError();
    }
    this.#socket = socket;
    return socket.address();
  }

  /**
   * Announces this socket's address and resolves with the shareId. Re-sent
   * every retryIntervalMs until answered. Starts automatic pulses.
   */
  announce(opts: CallOptions = {}): Promise<string> {
    // A live session keeps its shareId: announcing again from an established
    // session would make the tracker replace it (and the old id stop resolving).
    if (this.#live && this.#shareId !== undefined && !this.#announcing) return Promise.resolve(this.#shareId);
    // Concurrent announces share one retry loop; it stops when every caller
    // has given up (signal / timeout), so an abandoned announce stops sending.
    if (!this.#announcing) {
      const stop = new AbortController();
      const shared = this.#request<string>({ kind: 'announce' }, () => announceRequest(this.dialect, { nat: this.#nat, local: this.#localFor('announce'), token: this.#asksToken }), { signal: stop.signal })
        .then((shareId) => this.#prove(shareId, stop.signal))
        .finally(() => {
        if (this.#announcing === state) this.#announcing = undefined;
      });
      shared.catch(() => undefined); // a caller whose signal was already aborted leaves before it listens
      const state = { shared, stop, callers: 0 };
      this.#announcing = state;
    }
    const state = this.#announcing;
    state.callers++;
    return withCallOptions(state.shared, opts, () => {
      if (--state.callers === 0) state.stop.abort();
    });
  }

  /**
   * Documented dialect: a first pulse that carries our shareId, which only we
   * could have read, proves to the tracker that we receive at our address, so it
   * never trims its replies to us. It runs in the pulse chain, before any
   * pulse() the caller makes next. Resolves with the shareId either way.
   */
  async #prove(shareId: string, signal: AbortSignal): Promise<string> {
    if (this.dialect !== 'documented') return shareId;
    const run = this.#pulseChain.then(() => this.#request<PulseResult>({ kind: 'pulse' }, () => provingPulse(shareId, { nat: this.#nat, local: this.#localSent, token: this.#token }), { signal }));
    this.#pulseChain = run.catch(() => undefined);
    await run.catch(() => undefined); // an unanswered proof only means smaller replies
    return shareId;
  }

  /**
   * One keep-alive: `pulse` (documented, with the optional override and
   * shareId regeneration) or `alive` (legacy). Retried until answered.
   * Status '1' means the session was lost; the client re-announces by itself.
   */
  pulse(pulseOpts: PulseOptions = {}, opts: CallOptions = {}): Promise<PulseResult> {
    keepAliveRequest(this.dialect, pulseOpts); // throws for legacy + extras
    const run = this.#pulseChain.then(() => this.#request<PulseResult>({ kind: 'pulse' }, () => keepAliveRequest(this.dialect, pulseOpts, this.#token), opts));
    this.#pulseChain = run.catch(() => undefined);
    return run;
  }

  /**
   * Asks the tracker for the address of `shareId`; at the same moment the
   * tracker sends `income` to that peer. Retried until answered. Rejects with
   * a TrackerError on an `error` reply such as UNKNOWN_SHARE_ID.
   */
  push(shareId: string, opts: CallOptions & { relay?: string } = {}): Promise<PushResult> {
    // built per send: a re-announce in between gives a new token
    return this.#request<PushResult>({ kind: 'push', target: shareId }, () => pushRequest(shareId, opts.relay, this.#token), opts);
  }

  /**
   * TURN credentials for the tracker's relay (documented dialect; the session must
   * have proved it receives, which announce does by itself). Rejects with
   * RELAY_NOT_CONFIGURED when the tracker has none.
   */
  relayCredentials(opts: CallOptions = {}): Promise<RelayCredentials> {
    return this.#request<RelayCredentials>({ kind: 'relay' }, () => relayRequest(this.#token), opts);
  }

  /** Sends a raw datagram from this client's socket, e.g. a probe to a peer. */
  async send(msg: Buffer | string, host: string, port: number): Promise<void> {
    await this.ready();
    const socket = this.#socket;
    if (!socket || this.#closed) throw closedError();
    await new Promise<void>((resolve, reject) => socket.send(msg, port, host, (err) => (err ? reject(err) : resolve())));
  }

  /** Stops the timers, rejects pending requests and closes the socket. Safe to call twice. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    this.#options.signal?.removeEventListener('abort', this.#onAbort);
    clearInterval(this.#pulseTimer);
    this.#pulseTimer = undefined;
    for (const p of this.#pending.splice(0)) p.reject(closedError());
    const socket = this.#socket;
    this.#closing = new Promise<void>((resolve) => {
      if (socket) socket.close(() => resolve());
      else resolve();
    }).then(() => {
      this.emit('close');
    });
    return this.#closing;
  }

  async #request<T>(
    entry: Omit<Pending<T>, 'resolve' | 'reject'>,
    payload: () => Buffer,
    opts: CallOptions,
  ): Promise<T> {
    await this.ready();
    if (this.#closed) throw closedError();
    const socket = this.#socket as Socket;
    const tracker = this.#tracker as { address: string; port: number };
    let timer: NodeJS.Timeout | undefined;
    let retry: NodeJS.Timeout | undefined;
    let pending!: Pending<T>;
    const result = new Promise<T>((resolve, reject) => {
      pending = { ...entry, resolve, reject };
    });
    const sendOnce = (): void => {
      socket.send(payload(), tracker.port, tracker.address, (err) => {
        if (err) this.#emitError(err);
      });
    };
    const onAbort = (): void => this.#settle(pending, undefined, abortReason(opts.signal));
    if (opts.signal?.aborted) throw abortReason(opts.signal);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.timeoutMs !== undefined) {
      timer = setTimeout(
        () => this.#settle(pending, undefined, new TrackerError('TIMEOUT', `no ${entry.kind} reply from the tracker within ${opts.timeoutMs} ms`)),
        opts.timeoutMs,
      );
    }
    this.#pending.push(pending as Pending<never>);
    sendOnce();
    retry = setInterval(sendOnce, this.retryIntervalMs);
    try {
      return await result;
    } finally {
      clearInterval(retry);
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  #settle<T>(p: Pending<T>, value: T | undefined, err?: Error): void {
    const i = this.#pending.indexOf(p as Pending<never>);
    if (i < 0) return;
    this.#pending.splice(i, 1);
    if (err) p.reject(err);
    else p.resolve(value as T);
  }

  #first(kind: Pending<never>['kind'], target?: string): Pending<never> | undefined {
    return this.#pending.find((p) => p.kind === kind && (target === undefined || p.target === target));
  }

  #onDatagram(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.#stun.receive(msg, rinfo)) return; // a STUN response to one of ours, from any of the tracker's addresses
    const t = this.#tracker;
    if (!t || rinfo.address !== t.address || rinfo.port !== t.port) {
      this.emit('message', msg, rinfo);
      return;
    }
    const reply = parseReply(msg);
    const authenticated = this.#trust(msg, reply);
    if (authenticated === null || !reply) return;
    if (authenticated) this.#onTagged(reply);
    this.emit('reply', reply);
    switch (reply.kind) {
      case 'announced': {
        // The documented tracker also sends the legacy `announced`: the second
        // copy finds no pending announce and only refreshes the shareId.
        this.#setShareId(reply.shareId);
        for (const p of this.#pending.filter((q) => q.kind === 'announce')) this.#settle(p, reply.shareId as never);
        this.#startPulses();
        break;
      }
      case 'pulse': {
        const result: PulseResult = { status: reply.status, overriden: reply.overriden, ...(reply.shareId ? { shareId: reply.shareId } : {}) };
        if (reply.legacyExpired) {
          // Legacy `expired` answers both alive and push: a pending pulse is
          // settled; a pending push keeps retrying after the re-announce.
          const p = this.#first('pulse');
          if (p) this.#settle(p, result as never);
          else if (!this.#reannounceEnabled) this.#rejectOldestPush(new TrackerError('NO_SESSION', 'the tracker has no session for us (expired)'));
        } else {
          const p = this.#first('pulse');
          if (p) this.#settle(p, result as never);
          if (reply.shareId && reply.status === '0') this.#setShareId(reply.shareId);
        }
        this.emit('pulse', result);
        if (reply.status === '1') this.#reannounce();
        break;
      }
      case 'pushed': {
        const addr = this.#peerAddr(reply.peeraddr);
        if (addr === null) return;
        const result: PushResult = {
          ...addr,
          peeraddr: reply.peeraddr,
          ...(reply.peerShareId ? { peerShareId: reply.peerShareId } : {}),
          ...(reply.multiaddr ? { multiaddr: reply.multiaddr } : {}),
          ...peerNat(reply),
          authenticated,
        };
        const p = (reply.peerShareId && this.#first('push', reply.peerShareId)) || this.#first('push');
        if (p) this.#settle(p, result as never);
        this.emit('pushReceived', result);
        break;
      }
      case 'income': {
        const addr = this.#peerAddr(reply.peeraddr);
        if (addr === null) return;
        this.emit('income', { ...addr, peeraddr: reply.peeraddr, peerShareId: reply.peerShareId, ...peerNat(reply), ...(reply.relay !== undefined ? { relay: reply.relay } : {}), authenticated });
        break;
      }
      case 'relay': {
        const p = this.#first('relay');
        if (p) this.#settle(p, { urls: reply.urls, username: reply.username, credential: reply.credential, ttl: reply.ttl } as never);
        break;
      }
      case 'error': {
        const err = new TrackerError(reply.code, reply.message || reply.code);
        if (reply.code === CHALLENGE_REQUIRED) {
          // we moved: the challenge pulse went out (#onTagged), and the request's next
          // retry comes from the session's new address
        } else if (reply.code === 'NO_SESSION' && this.#reannounceEnabled) {
          // Our session is gone (expired, or never announced): get a new one;
          // pending pushes keep retrying and succeed once it exists.
          this.#reannounce();
        } else {
          // Errors carry no request id: give it to the push it names, else to
          // the oldest pending push or pulse.
          const p =
            (RELAY_ERRORS.has(reply.code) && this.#first('relay')) ||
            (reply.shareId && this.#first('push', reply.shareId)) ||
            this.#pending.find((q) => q.kind === 'push' || q.kind === 'pulse' || q.kind === 'relay');
          if (p) this.#settle(p, undefined, err);
        }
        this.#emitError(err);
        break;
      }
      case 'unknown':
        break;
    }
  }

  get #asksToken(): boolean {
    return this.dialect === 'documented' && this.#options.token !== false;
  }

  /**
   * Whether a datagram from the tracker's address is the tracker's, for us: true
   * (tagged under our token, or the tagged answer to our token announce), false
   * (we hold no token: nothing to check it with, as before tokens), or null: drop it.
   */
  #trust(msg: Buffer, reply: TrackerReply | undefined): boolean | null {
    // The announce reply brings the token: its tag, under that token, shows it is whole.
    // It is taken only while we announce, so nobody can swap our token later.
    const offered = reply?.kind === 'announced' && this.#asksToken && this.#first('announce') ? reply : undefined;
    if (offered?.token !== undefined) {
      const secret = offered.token.startsWith(offered.shareId + '.') ? secretOfToken(offered.token) : null;
      if (secret !== null && verifyTagged(msg, secret)) {
        const token = offered.token;
        this.#token = token;
        this.#secret = secret;
        this.#lastTagged = performance.now();
        return true;
      }
      if (this.#secret === undefined) return this.#untrusted(msg, 'an announce reply whose tag does not match the token it carries');
    }
    if (this.#secret === undefined) return false;
    if (verifyTagged(msg, this.#secret)) {
      this.#lastTagged = performance.now();
      return true;
    }
    if (reply?.kind === 'error' && reply.code === TOKEN_INVALID) {
      // Never tagged (the tracker cannot prove anything to a wrong token), so anyone
      // could send it: believed only when the tracker has said nothing tagged for a
      // whole session timeout, when our session is gone anyway.
      if (performance.now() - this.#lastTagged < this.sessionTimeoutMs) return this.#untrusted(msg, 'TOKEN_INVALID while the tracker still answers with tags');
      this.#token = this.#secret = undefined;
      this.#answered = undefined;
      this.#reannounce();
      return null;
    }
    return this.#untrusted(msg, 'no valid tag');
  }

  #untrusted(msg: Buffer, reason: string): null {
    this.#stats.untrusted++;
    if (this.listenerCount('untrusted') > 0) this.emit('untrusted', msg, reason);
    return null;
  }

  /** What a tagged reply tells a token session: a new token (regenerated shareId), where we are seen, a path challenge. */
  #onTagged(reply: TrackerReply): void {
    const { token, observed, challenge } = tokenFields(reply.raw);
    if (reply.kind === 'pulse' && token !== undefined && reply.shareId !== undefined && token.startsWith(reply.shareId + '.')) {
      const secret = secretOfToken(token);
      if (secret !== null) { this.#token = token; this.#secret = secret; }
    }
    if (observed !== undefined) {
      this.#observed = observed;
      this.emit('observed', observed);
    }
    // The tracker saw our token from an address it has not validated (we moved): echo
    // its challenge from here, at once, so the session follows us (spec "Paths").
    const now = performance.now();
    if (challenge !== undefined && (challenge !== this.#answered || now - this.#answeredAt >= this.retryIntervalMs) && this.#token !== undefined && this.#shareId !== undefined) {
      this.#answered = challenge;
      this.#answeredAt = now;
      this.#sendRaw(provingPulse(this.#shareId, { nat: this.#nat, local: this.#localSent, token: this.#token, challenge }));
    }
  }

  #setShareId(shareId: string): void {
    this.#live = true;
    if (shareId === this.#shareId) return;
    this.#shareId = shareId;
    this.emit('announced', shareId);
  }

  get #reannounceEnabled(): boolean {
    return this.#options.reannounce !== false;
  }

  #rejectOldestPush(err: Error): void {
    const p = this.#first('push');
    if (p) this.#settle(p, undefined, err);
  }

  #reannounce(): void {
    this.#live = false;
    if (this.#closed || !this.#reannounceEnabled) return;
    this.announce().catch(() => undefined); // failures reach pending requests; closing rejects it
  }

  #startPulses(): void {
    if (this.#pulseTimer || this.#closed || this.#options.autoPulse === false) return;
    const keepAlive = (): void => {
      // An explicit pulse() in flight already keeps the session alive.
      if (this.#first('pulse')) return;
      const shareId = this.shareId;
      this.#sendRaw(this.dialect === 'documented' && shareId !== undefined ? provingPulse(shareId, { local: this.#localFor('pulse'), token: this.#token }) : keepAliveRequest(this.dialect));
    };
    this.#pulseTimer = setInterval(keepAlive, this.pulseIntervalMs);
  }

  /** A peeraddr from the tracker, or null (reported as an 'error' event) if it is malformed. */
  #peerAddr(text: string): PeerAddr | null {
    try {
      return parsePeerAddr(text);
    } catch (err) {
      this.#emitError(err as Error);
      return null;
    }
  }

  /** Fire-and-forget datagram to the tracker (its reply, if any, is handled like any other). */
  #sendRaw(payload: Buffer): void {
    if (!this.#socket || !this.#tracker || this.#closed) return;
    this.#socket.send(payload, this.#tracker.port, this.#tracker.address, (err) => {
      if (err) this.#emitError(err);
    });
  }

  #emitError(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }
}

function peerNat(reply: PeerNat): PeerNat {
  return { ...(reply.nat !== undefined ? { nat: reply.nat } : {}), ...(reply.peerVerified !== undefined ? { peerVerified: reply.peerVerified } : {}),
    ...(reply.local !== undefined ? { local: reply.local } : {}) };
}

function closedError(): TrackerError {
  return new TrackerError('CLIENT_CLOSED', 'the tracker client is closed');
}

function abortReason(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  return reason instanceof Error ? reason : new DOMException('The operation was aborted', 'AbortError');
}

/**
 * Applies a per-call signal / timeout to a promise shared between callers;
 * `leave` runs once when this caller stops waiting, whatever the reason.
 */
function withCallOptions<T>(shared: Promise<T>, opts: CallOptions, leave: () => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = (): void => done(abortReason(opts.signal));
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => done(new TrackerError('TIMEOUT', `no announce reply from the tracker within ${opts.timeoutMs} ms`)), opts.timeoutMs);
    function done(err: Error | undefined, value?: T): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      leave();
      if (err) reject(err);
      else resolve(value as T);
    }
    if (opts.signal?.aborted) return done(abortReason(opts.signal));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    shared.then((v) => done(undefined, v), (e: Error) => done(e));
  });
}
