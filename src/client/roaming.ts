// A connection that survives a network change (issue 24), as a QUIC connection
// migrates (RFC 9000 9) and WireGuard follows a roaming peer.
//
// A client notices that it may have moved in three ways:
//   observed    a tagged keep-alive reply says the tracker sees us at another address
//   interfaces  our local addresses changed (os.networkInterfaces(), polled on the
//               keep-alive interval)
//   silence     a connected peer sent nothing for silenceMs while it should be sending
//               (its traffic is expected: `expectTraffic`)
// Then it keeps alive at once (a token session follows us to the new address once
// the tracker's path challenge is answered, which TrackerClient does), and pushes
// again to every peer it is connected to: the push answers with the peer's current
// address, and the tracker sends the peer an income with ours.
//
// A peer's income (or a push answer) with an address other than the path's makes us
// punch again, with the strategy the two NATs call for; so does our own move, toward
// the peer's last address (our NAT has a new mapping that its NAT never saw). The new
// path replaces the old one inside the same PeerPath (`MigratingPath`), so the
// application never sees a close. Data from an unknown address alone never moves a
// path: only a tracker message (authenticated under our token, or else within the
// unproven probe budget of peer-path.ts) starts a punch, and only a datagram that
// the strategy accepts as the peer's (its address as the tracker named it, or a
// probe carrying its shareId) opens the new path.
import os from 'node:os';
import { EventEmitter } from 'node:events';
import type { RemoteInfo } from 'node:dgram';
import { birthdayEasy, birthdayHard, type BirthdayOptions } from './birthday-punch.js';
import { directPunch } from './direct-punch.js';
import { isEasy } from './nat-discovery.js';
import { provingPulse } from './messages.js';
import { parsePeerAddr } from './peer-addr.js';
import { relayAsRequester, relayAsTarget } from './relay-punch.js';
import type { NatType } from './messages.js';
import { exchange, probe, probeBudget, type Peer, type PeerPath, type PunchContext } from './peer-path.js';
import type { IncomeEvent, PushResult, TrackerClient } from './tracker-client.js';

/**
 * A PeerPath whose way to the peer can be replaced while it is open: sends go to
 * the current way, listeners stay subscribed across moves, close() closes whichever
 * way is current. This is the path the application holds.
 */
export class MigratingPath implements PeerPath {
  #current: PeerPath;
  #listeners = new Set<(msg: Buffer) => void>();
  #unsubscribe: () => void;
  #closed = false;

  readonly #onClose: (() => void) | undefined;

  constructor(first: PeerPath, onClose?: () => void) {
    this.#current = first;
    this.#onClose = onClose;
    this.#unsubscribe = this.#listen(first);
  }

  get kind(): PeerPath['kind'] { return this.#current.kind; }
  get peeraddr(): string { return this.#current.peeraddr; }
  get closed(): boolean { return this.#closed; }

  send(msg: Buffer): void {
    if (!this.#closed) this.#current.send(msg);
  }

  onMessage(fn: (msg: Buffer) => void): () => void {
    this.#listeners.add(fn);
    return () => { this.#listeners.delete(fn); };
  }

  /** Carries on over `next`; the previous way is closed (abandoned, when `abandonPrevious`: our own end moved). */
  migrate(next: PeerPath, { abandonPrevious = false } = {}): void {
    if (this.#closed) { next.close(); return; }
    const previous = this.#current;
    this.#unsubscribe();
    this.#current = next;
    this.#unsubscribe = this.#listen(next);
    if (previous === next) return;
    if (abandonPrevious && previous.abandon !== undefined) previous.abandon();
    else previous.close();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe();
    this.#listeners.clear();
    this.#current.close();
    this.#onClose?.();
  }

  #listen(path: PeerPath): () => void {
    return path.onMessage((msg) => { for (const l of [...this.#listeners]) l(msg); });
  }
}

/** How often a recovery answers a path challenge in all (TrackerClient's answer, and resends a retry interval apart). */
const ECHO_TRIES = 4;

/** A peer still silent after a recovery is acted on again after this many silence thresholds. */
const SILENCE_RETRY = 4;

/** Why a client thinks it moved. */
export type MoveReason = 'observed' | 'interfaces' | 'silence';

export type RoamingEvent =
  /** Our public address changed (`from` / `to` as the tracker sees us; absent when it cannot say). */
  | { event: 'moved'; side: 'local'; reason: MoveReason; from?: string; to?: string }
  /** The peer's address changed, as the tracker told us. */
  | { event: 'moved'; side: 'peer'; peerShareId: string; from: string; to: string; authenticated: boolean }
  /** A connected peer sent nothing for silenceMs while it should have been sending. */
  | { event: 'silent'; peerShareId: string; ms: number }
  /** The path to the peer carries traffic again, over `peeraddr`; `ms` since the break began (the peer's last datagram while traffic was expected, else the first sign of it). */
  | { event: 'reconnected'; peerShareId: string; peeraddr: string; path: PeerPath['kind']; strategy: RepunchStrategy; ms: number };

export type RepunchStrategy = 'direct' | 'birthday-easy' | 'birthday-hard' | 'relay';

export interface RoamingOptions {
  client: TrackerClient;
  /** Our shareId for probes (the client's by default). */
  myShareId?: () => string | undefined;
  /** A peer that should be sending and sent nothing this long is taken as a broken path. Default 500 ms. */
  silenceMs?: number;
  /** How often to look at the local interfaces. Default: the client's keep-alive interval. */
  interfacePollMs?: number;
  /** Where the local interfaces are read from (tests replace it). Default os.networkInterfaces. */
  interfaces?: () => NodeJS.Dict<os.NetworkInterfaceInfo[]>;
  /** How long one punch again may take before it gives up (a later sign starts another). Default 10000 ms. */
  repunchTimeoutMs?: number;
  /** How often to probe during a punch again. Default 100 ms. */
  probeIntervalMs?: number;
  birthday?: BirthdayOptions;
  onEvent?: (e: RoamingEvent) => void;
}

interface Connection {
  peer: Peer;
  path: MigratingPath;
  /** When the last datagram from the peer arrived (performance.now()). */
  lastData: number;
  expecting: boolean;
  /** A punch again in flight, and where it aims (the peer's address, and a relayed address offered). */
  repunch: AbortController | undefined;
  aim: string | undefined;
  /** This side asked for the connection (pushed): through a relay, it is the one that allocates. */
  requester: boolean;
  /** We moved since the current way was made: it is abandoned, not closed, when replaced (see PeerPath.abandon). */
  movedSince: boolean;
  /** The connection went through the relay (a fallback from a punch that found nothing included): it does again. */
  relayed: boolean;
  /** When the current break was first noticed (silence, a move), for `reconnected.ms`. */
  brokeAt: number | undefined;
  silentReported: boolean;
  /** When the current silence was last acted on. */
  silentActed: number;
  stopListening: () => void;
}

/** The strategy for a pair (as punch.ts chooses). */
function strategyFor(mine: NatType | undefined, theirs: NatType | undefined): RepunchStrategy {
  const meEasy = isEasy(mine), peerEasy = isEasy(theirs);
  if (meEasy && peerEasy) return 'direct';
  if (meEasy) return 'birthday-easy';
  if (peerEasy) return 'birthday-hard';
  return 'relay';
}

/** When a connection's break began: its peer's last datagram, while traffic was expected; else now. */
function brokeSince(c: Connection, now: number): number {
  return c.expecting ? c.lastData : now;
}

/** A fingerprint of the local addresses (not the loopback ones). */
export function interfaceFingerprint(ifaces: NodeJS.Dict<os.NetworkInterfaceInfo[]>): string {
  const out: string[] = [];
  for (const [name, list] of Object.entries(ifaces)) {
    for (const i of list ?? []) if (!i.internal) out.push(`${name}/${i.address}`);
  }
  return out.sort().join(',');
}

/**
 * Keeps a client's connections alive across network changes: watches for a move,
 * keeps alive and pushes again, and punches again when the tracker names a new
 * address. One per TrackerClient; `add` each connection, `close` when done.
 */
export class Roaming extends EventEmitter<{ event: [RoamingEvent] }> {
  readonly silenceMs: number;
  readonly #opts: RoamingOptions;
  readonly #client: TrackerClient;
  readonly #connections = new Map<string, Connection>();
  #observed: string | undefined;
  #interfaces: string;
  #recovering = false;
  #closed = false;
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #offs: (() => void)[] = [];

  constructor(opts: RoamingOptions) {
    super();
    this.#opts = opts;
    this.#client = opts.client;
    this.silenceMs = opts.silenceMs ?? 500;
    if (!(this.silenceMs > 0)) throw new RangeError('silenceMs must be > 0');
    this.#observed = opts.client.observed;
    const readIfaces = opts.interfaces ?? os.networkInterfaces;
    this.#interfaces = interfaceFingerprint(readIfaces());

    const onReply = (reply: { kind: string; raw: unknown }): void => this.#onReply(reply);
    const onIncome = (i: IncomeEvent): void => this.#onPeerNamed(i.peerShareId, i);
    const onPushed = (r: PushResult): void => { if (r.peerShareId !== undefined) this.#onPeerNamed(r.peerShareId, r); };
    this.#client.on('reply', onReply);
    this.#client.on('income', onIncome);
    this.#client.on('pushReceived', onPushed);
    this.#offs.push(() => this.#client.off('reply', onReply), () => this.#client.off('income', onIncome), () => this.#client.off('pushReceived', onPushed));

    const pollMs = opts.interfacePollMs ?? this.#client.pulseIntervalMs;
    this.#timers.push(setInterval(() => {
      const now = interfaceFingerprint(readIfaces());
      if (now === this.#interfaces) return;
      this.#interfaces = now;
      void this.#recover('interfaces');
    }, pollMs));
    this.#timers.push(setInterval(() => this.#checkSilence(), Math.max(10, this.silenceMs / 4)));
    for (const t of this.#timers) t.unref();
  }

  /** Where the tracker last saw us (a validated tagged reply), if it said. */
  get observed(): string | undefined { return this.#observed; }

  /** Follows `path` (now a MigratingPath, returned) to the peer; the application uses what this returns. */
  add(peer: Peer, path: PeerPath, opts: { onClose?: () => void; requester?: boolean; strategy?: RepunchStrategy } = {}): MigratingPath {
    if (peer.shareId === undefined) throw new Error('a connection that roams needs the peer\'s shareId (the tracker did not say it)');
    const moving = path instanceof MigratingPath ? path : new MigratingPath(path, opts.onClose);
    const conn: Connection = {
      peer: { ...peer }, path: moving, lastData: performance.now(), expecting: false, repunch: undefined, aim: undefined,
      requester: opts.requester === true, relayed: opts.strategy === 'relay', movedSince: false,
      brokeAt: undefined, silentReported: false, silentActed: 0, stopListening: () => undefined,
    };
    conn.stopListening = moving.onMessage(() => this.#onData(conn));
    this.#connections.get(peer.shareId)?.stopListening();
    this.#connections.set(peer.shareId, conn);
    return moving;
  }

  /** Whether the peer should be sending now (during an exchange, a call): its silence then means a broken path. */
  expectTraffic(peerShareId: string, expecting: boolean): void {
    const conn = this.#connections.get(peerShareId);
    if (conn === undefined) return;
    conn.expecting = expecting;
    conn.lastData = performance.now();
    conn.silentReported = false;
  }

  /** Stops watching (the paths stay open: close them yourself). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#timers) clearInterval(t);
    for (const off of this.#offs) off();
    for (const c of this.#connections.values()) { c.stopListening(); c.repunch?.abort(new Error('closed')); }
    this.#connections.clear();
  }

  #emit(e: RoamingEvent): void {
    this.#opts.onEvent?.(e);
    this.emit('event', e);
  }

  #onData(conn: Connection): void {
    conn.lastData = performance.now();
    conn.silentReported = false;
  }

  #checkSilence(): void {
    if (this.#closed) return;
    const now = performance.now();
    let silent = false;
    for (const [id, c] of this.#connections) {
      if (!c.expecting || now - c.lastData < this.silenceMs) continue;
      if (c.silentReported) {
        // still silent after a recovery: try again, a few silences apart
        if (!this.#recovering && c.repunch === undefined && now - c.silentActed >= SILENCE_RETRY * this.silenceMs) { c.silentActed = now; silent = true; }
        continue;
      }
      c.silentReported = true;
      c.silentActed = now;
      c.brokeAt ??= c.lastData;
      this.#emit({ event: 'silent', peerShareId: id, ms: Math.round(now - c.lastData) });
      silent = true;
    }
    if (silent) void this.#recover('silence');
  }

  /** A reply the client accepted: a validated keep-alive reply tells where the tracker now sees us. */
  #onReply(reply: { kind: string; raw: unknown }): void {
    if (reply.kind !== 'pulse' || this.#client.token === undefined) return;
    const raw = reply.raw as { observed?: unknown; challenge?: unknown; data?: { observed?: unknown; challenge?: unknown } };
    const observed = raw.data?.observed ?? raw.observed;
    const challenge = raw.data?.challenge ?? raw.challenge;
    if (typeof observed !== 'string') return;
    if (challenge !== undefined) {
      // seen from a new address, not yet validated: we moved (TrackerClient answers the challenge)
      if (observed !== this.#observed && typeof challenge === 'string') { this.#challenged = challenge; void this.#recover('observed'); }
      return;
    }
    if (this.#observed === undefined) { this.#observed = observed; return; }
    if (observed === this.#observed) return;
    const from = this.#observed;
    this.#observed = observed;
    this.#settled?.(from, observed);
    if (!this.#recovering) void this.#recover('observed', { from, to: observed });
  }

  /** The challenge of a keep-alive reply that saw us at a new address the tracker has not validated yet. */
  #challenged: string | undefined;
  /** Resolves a recovery's wait for the tracker to validate our new address. */
  #settled: ((from: string, to: string) => void) | undefined;

  /** Keep alive at once; once the tracker has us at our new address, push to every peer, and punch again if we moved. */
  async #recover(reason: MoveReason, known?: { from: string; to: string }): Promise<void> {
    if (this.#recovering || this.#closed) return;
    this.#recovering = true;
    const now = performance.now();
    for (const c of this.#connections.values()) c.brokeAt ??= brokeSince(c, now);
    try {
      let moved = known;
      if (moved === undefined) {
        const settled = new Promise<{ from: string; to: string }>((resolve) => { this.#settled = (from, to) => resolve({ from, to }); });
        // the keep-alive: from a new address its reply carries a challenge, TrackerClient
        // answers it, and the validated reply resolves `settled` (see #onReply)
        const before = this.#observed;
        await this.#client.pulse({}, { timeoutMs: this.#opts.repunchTimeoutMs ?? 10_000 }).catch(() => undefined);
        if (this.#client.token !== undefined && this.#challenged !== undefined && this.#observed === before) {
          // TrackerClient answered the challenge once; a lost answer is sent again, as a request is
          for (let i = 0; i < ECHO_TRIES && moved === undefined && !this.#closed; i++) {
            if (i > 0) this.#echo(this.#challenged);
            moved = await Promise.race([settled, this.#delay(this.#client.retryIntervalMs).then(() => undefined)]);
          }
        } else if (this.#observed !== before && before !== undefined && this.#observed !== undefined) {
          moved = { from: before, to: this.#observed };
        }
        this.#settled = undefined;
      }
      if (this.#closed) return;
      if (moved !== undefined || reason === 'interfaces') {
        this.#emit({ event: 'moved', side: 'local', reason, ...(moved !== undefined ? moved : {}) });
        // our NAT has a new mapping the peers' NATs never saw: punch again toward each
        for (const c of this.#connections.values()) { if (moved !== undefined) c.movedSince = true; this.#repunch(c, c.peer); }
      }
      // the push answers with the peer's address (a new one starts a punch, #onPeerNamed),
      // and tells the peer ours in its income
      await Promise.all([...this.#connections.keys()].map((id) =>
        this.#client.push(id, { timeoutMs: this.#opts.repunchTimeoutMs ?? 10_000 }).catch(() => undefined)));
    } finally {
      this.#recovering = false;
      this.#challenged = undefined;
      this.#settled = undefined;
    }
  }

  /** Answers the tracker's path challenge from where we are now (what TrackerClient sends once). */
  #echo(challenge: string): void {
    const { shareId, token, trackerAddress: t } = this.#client;
    if (shareId === undefined || token === undefined || t === undefined) return;
    this.#client.send(provingPulse(shareId, { ...(this.#client.nat !== undefined ? { nat: this.#client.nat } : {}), token, challenge }), t.address, t.port).catch(() => undefined);
  }

  #delay(ms: number): Promise<void> {
    return new Promise((resolve) => { const t = setTimeout(resolve, ms); t.unref(); });
  }

  /** The tracker named a connected peer's address (income, push answer): another address than the path's starts a punch there. */
  #onPeerNamed(peerShareId: string, named: IncomeEvent | PushResult): void {
    const conn = this.#connections.get(peerShareId);
    if (conn === undefined || this.#closed) return;
    const { authenticated } = named;
    const next: Peer = {
      ...conn.peer, host: named.host, port: named.port, peeraddr: named.peeraddr, verified: named.peerVerified === true,
      ...(named.nat !== undefined ? { nat: named.nat } : {}), authenticated,
    };
    const relay = 'relay' in named ? named.relay : undefined;
    if (relay !== undefined) {
      // the requester allocated again and hands us its new relayed address: follow it
      // (the tracker's word: tagged, for a token client; punch.ts applies the same rule)
      if (this.#client.token !== undefined && !authenticated) return;
      if (conn.relayed && !conn.requester && relay !== conn.path.peeraddr) {
        if (named.peeraddr !== conn.peer.peeraddr) this.#emit({ event: 'moved', side: 'peer', peerShareId, from: conn.peer.peeraddr, to: named.peeraddr, authenticated });
        conn.brokeAt ??= brokeSince(conn, performance.now());
        this.#repunch(conn, next, relay);
      }
      return;
    }
    if (named.peeraddr === conn.peer.peeraddr) return;
    const from = conn.peer.peeraddr;
    conn.brokeAt ??= brokeSince(conn, performance.now());
    this.#emit({ event: 'moved', side: 'peer', peerShareId, from, to: named.peeraddr, authenticated });
    // a relay target waits for the requester's new relayed address (an income with `relay`)
    if (conn.relayed && !conn.requester) return;
    this.#repunch(conn, next);
  }

  /** Punches again toward `peer` (or, as a relay target, toward the relayed address offered); the first path that opens replaces the connection's. */
  #repunch(conn: Connection, peer: Peer, relayOffer?: string): void {
    const aim = `${peer.peeraddr} ${relayOffer ?? ''}`;
    if (conn.repunch !== undefined && conn.aim === aim) return; // already on it (a second income, a push answer)
    conn.repunch?.abort(new Error('superseded'));
    const strategy: RepunchStrategy = conn.relayed ? 'relay' : strategyFor(this.#client.nat, peer.nat);
    const myShareId = (this.#opts.myShareId ?? (() => this.#client.shareId))();
    if (myShareId === undefined) return;
    if (strategy === 'relay' && !conn.requester && relayOffer === undefined) return;
    const attempt = new AbortController();
    conn.repunch = attempt;
    conn.aim = aim;
    const timer = setTimeout(() => attempt.abort(new Error('no path in time')), this.#opts.repunchTimeoutMs ?? 10_000);
    timer.unref();
    const client = this.#client;
    const subscribe = (fn: (msg: Buffer, from: RemoteInfo) => void): (() => void) => { client.on('message', fn); return () => { client.off('message', fn); }; };
    const ctx: PunchContext = {
      peer, myShareId, signal: attempt.signal, probeIntervalMs: this.#opts.probeIntervalMs ?? 100,
      probes: probeBudget(peer),
      send: (msg: Buffer, address: string, port: number) => { client.send(msg, address, port).catch(() => undefined); },
      messages: subscribe, clientMessages: subscribe, early: () => [],
    };
    const run = strategy === 'direct' ? directPunch(ctx)
      : strategy === 'birthday-easy' ? birthdayEasy(ctx, this.#opts.birthday)
      : strategy === 'birthday-hard' ? birthdayHard(ctx, this.#opts.birthday)
      // through the relay: the requester allocates again from where it is now (its old
      // allocation belongs to its old address) and hands the target the new relayed address
      : conn.requester ? relayAsRequester(client, ctx) : relayAsTarget(ctx, parsePeerAddr(relayOffer!));
    const aborted = new Promise<never>((_, reject) => attempt.signal.addEventListener('abort', () => reject(attempt.signal.reason as Error), { once: true }));
    aborted.catch(() => undefined);
    Promise.race([run, aborted]).then((path) => {
      clearTimeout(timer);
      attempt.abort(new Error('connected'));
      if (conn.repunch === attempt) { conn.repunch = undefined; conn.aim = undefined; }
      if (this.#closed || conn.path.closed) { path.close(); return; }
      conn.peer = peer;
      conn.path.migrate(path, { abandonPrevious: conn.movedSince });
      conn.movedSince = false;
      conn.lastData = performance.now();
      conn.silentReported = false;
      const ms = Math.round(performance.now() - (conn.brokeAt ?? performance.now()));
      conn.brokeAt = undefined;
      // the peer may not have heard us yet: a few knocks on the new way open its side too
      const knock = probe(myShareId);
      for (let i = 0; i < 3; i++) { const t = setTimeout(() => conn.path.send(knock), i * ctx.probeIntervalMs); t.unref(); }
      this.#emit({ event: 'reconnected', peerShareId: peer.shareId!, peeraddr: path.peeraddr, path: path.kind, strategy, ms });
    }, () => {
      clearTimeout(timer);
      if (conn.repunch === attempt) { conn.repunch = undefined; conn.aim = undefined; }
    });
  }
}

/** What an exchange over a roaming path adds to its counts. */
export interface RoamingExchangeResult {
  sent: number;
  received: number;
  /** The longest time between two of the peer's datagrams (or from its last one to our end): how long traffic stopped. */
  stoppedMs: number;
  /** The path broke (silence, or a move) and carried none of the peer's datagrams after that. */
  lost: boolean;
}

/**
 * The traffic test (peer-path.ts `exchange`) over a path that `roaming` follows:
 * the peer is expected to send from its first datagram until our end, so its
 * silence for silenceMs starts a recovery; reports how long traffic stopped, and
 * whether the path was lost and not restored.
 */
export async function roamingExchange(roaming: Roaming, path: MigratingPath, peerShareId: string, seconds: number, early: Set<number>,
  opts: { endWaitMs?: number } = {}): Promise<RoamingExchangeResult> {
  let last: number | undefined;
  let stoppedMs = 0;
  let brokeAt: number | undefined;
  let expecting = false;
  const onEvent = (e: RoamingEvent): void => {
    if ((e.event === 'silent' || (e.event === 'moved' && (e.side === 'local' || e.peerShareId === peerShareId))) && brokeAt === undefined) brokeAt = performance.now();
  };
  roaming.on('event', onEvent);
  try {
    const counted = await exchange(path, seconds, early, {
      ...(opts.endWaitMs !== undefined ? { endWaitMs: opts.endWaitMs } : {}),
      onData: () => {
        const now = performance.now();
        if (last !== undefined) stoppedMs = Math.max(stoppedMs, now - last);
        last = now;
        brokeAt = undefined; // traffic is back
        if (!expecting) { expecting = true; roaming.expectTraffic(peerShareId, true); }
      },
    });
    const lost = brokeAt !== undefined;
    if (lost && last !== undefined) stoppedMs = Math.max(stoppedMs, performance.now() - last);
    return { ...counted, stoppedMs: Math.round(stoppedMs), lost };
  } finally {
    roaming.expectTraffic(peerShareId, false);
    roaming.off('event', onEvent);
  }
}
