// The whole connection, for a pair of clients: learn our NAT type from the
// tracker's STUN (nat-discovery.ts), announce with it, push (or wait for income),
// then open a path to the peer with the strategy that fits the pair:
//
//   both NATs easy (endpoint-independent, or not known)  plain punch     direct-punch.ts
//   one hard (address(-and-port)-dependent), one easy    birthday punch  birthday-punch.ts
//   both hard                                            relay           relay-punch.ts
//
// Beside any of them, a peer that showed us its local candidates gets a few probes
// on each (local-punch.ts): two hosts behind one NAT meet there. When both sides show
// one public IP, the local probes go first, and the public punch and the relay wait
// until no candidate answered: a LAN path wins over both.
//
// Both sides choose alike, since each is told the other's NAT type (the tracker's
// `nat` field). A punch that finds nothing within relayAfterMs falls back to the
// relay too: the requester allocates and hands the target its relayed address,
// and the target, whatever it was doing, follows. Once open, the path can carry a
// traffic test (`exchange`).
//
// What a message could make us send: the peer is the one the first pushReceived
// (for the shareId we pushed) or income names; the target takes a relayed address
// only from an income for that same peer, and from a token client's tracker only
// if it is tagged (TrackerClient drops the rest). A peer named by a message that
// was not authenticated gets UNPROVEN_PROBES in all and no spray (peer-path.ts).
// What arrives from strangers while we punch is kept within fixed bounds.
import type { RemoteInfo } from 'node:dgram';
import { birthdayEasy, birthdayHard, type BirthdayOptions } from './birthday-punch.js';
import { directPunch } from './direct-punch.js';
import { describeCandidates, localPunch, type LocalPunch } from './local-punch.js';
import type { NatType } from './messages.js';
import { discoverNat, isEasy } from './nat-discovery.js';
import { relayAsRequester, relayAsTarget } from './relay-punch.js';
import { Roaming, roamingExchange, type MigratingPath, type RoamingEvent } from './roaming.js';
import { dataSeq, exchange, probe, probeBudget, type Peer, type PeerPath, type ProbeBudget, type PunchContext } from './peer-path.js';
import { formatPeerAddr, parsePeerAddr } from './peer-addr.js';
import type { IncomeEvent, PushResult, TrackerClient } from './tracker-client.js';
import { TrackerError } from './tracker-client.js';

export interface PunchOptions {
  /** The client whose socket punches; it stays open afterwards, to talk to the peer. */
  client: TrackerClient;
  /** Push to this shareId. Without it, wait for someone to push to us. */
  peer?: string;
  /** Give up after this long, counted from the start. Default 10000 ms. */
  timeoutMs?: number;
  /** How often to probe each candidate address. Default 100 ms. */
  probeIntervalMs?: number;
  /** Keep probing this long after connecting, so the other side connects too. Default 1000 ms. */
  graceMs?: number;
  /** Learn our NAT type from the tracker's STUN first, and report it. Default true. */
  discover?: boolean;
  /** How long each discovery Binding waits for its answer before the NAT type is "unknown". Default 1000 ms. */
  discoverTimeoutMs?: number;
  /** Once connected, send 50 numbered datagrams a second over the path for this many seconds, and count the peer's. */
  exchangeSeconds?: number;
  /** After its own last exchange datagram, how long to wait at most for the peer's end of exchange (a bound: a peer that ends says so). Default 5000 ms. */
  exchangeEndWaitMs?: number;
  /**
   * Follow the connection across network changes (roaming.ts): a move, a changed
   * interface or the peer's silence makes it keep alive, push again and punch again,
   * and the path moves without a close. Default true (needs the peer's shareId).
   */
  roam?: boolean;
  /** Roaming: the peer's silence this long while it should be sending means a broken path. Default 500 ms. */
  silenceMs?: number;
  /** The requester falls back to the tracker's relay when a punch has found nothing this long. Default 3000 ms. */
  relayAfterMs?: number;
  birthday?: BirthdayOptions;
  signal?: AbortSignal;
  /** Filled in as the punch runs (for tests and tools): what it kept of strangers' datagrams, and what it dropped. */
  stats?: PunchStats;
  /** Called with each progress event (the CLI prints them as JSON lines). */
  onEvent?: (event: PunchEvent) => void;
}

/** 'local': the path opened on a local candidate (the pair is on one network). */
export type PunchStrategy = 'direct' | 'birthday-easy' | 'birthday-hard' | 'relay' | 'local';

export type PunchEvent =
  | { event: 'nat'; nat: NatType; mapped: string | null; reason?: string }
  | { event: 'announced'; shareId: string }
  /** `ms`: since the start, as for connected (the time to connect is connected.ms - peer.ms) */
  /** `local`: the peer's local candidates, when the tracker showed us any */
  | { event: 'peer'; via: 'pushReceived' | 'income'; peeraddr: string; peerShareId?: string; nat?: NatType; peerVerified: boolean; local?: string[]; strategy: PunchStrategy; ms: number }
  | { event: 'connected'; path: PeerPath['kind']; strategy: PunchStrategy; peeraddr: string; peerShareId?: string; ms: number; probes: number }
  /** `stoppedMs`: the longest the peer's traffic stopped; `lost`: the path broke and was not restored (roaming only) */
  | { event: 'exchanged'; sent: number; received: number; stoppedMs?: number; lost?: boolean }
  | RoamingEvent
  | { event: 'failed'; reason: string; probes?: number };

export type PunchResult =
  /** `path` stays open (the connection): send and listen on it, close it when done. */
  | { ok: true; peeraddr: string; host: string; port: number; peerShareId?: string; ms: number; path: PeerPath }
  | { ok: false; reason: string };

/** What a punch kept and dropped of the exchange datagrams that came before its path opened. */
export interface PunchStats {
  earlyKept: number;
  earlyDropped: number;
}

/**
 * Bounds of what a punch keeps of exchange datagrams (`{"action":"data","seq":N}`)
 * that arrive before its path opens (a peer that connected first is already
 * sending): anyone can send them, so a fixed number of senders, and of numbers each.
 */
export const EARLY_SENDERS = 4;
export const EARLY_SEQS = 1024;

/** The strategy for a pair, from each side's NAT type (the same choice on both sides). */
export function chooseStrategy(mine: NatType | undefined, theirs: NatType | undefined): Exclude<PunchStrategy, 'local'> {
  const meEasy = isEasy(mine), peerEasy = isEasy(theirs);
  if (meEasy && peerEasy) return 'direct';
  if (meEasy) return 'birthday-easy';
  if (peerEasy) return 'birthday-hard';
  return 'relay';
}

/** The punching strategies: each opens a path, or never resolves (the punch's signal ends it). The relay is not one of them: it needs both sides' roles, below. */
const PUNCHES: Record<Exclude<PunchStrategy, 'relay' | 'local'>, (ctx: PunchContext, opts: PunchOptions) => Promise<PeerPath>> = {
  'direct': (ctx) => directPunch(ctx),
  'birthday-easy': (ctx, o) => birthdayEasy(ctx, o.birthday),
  'birthday-hard': (ctx, o) => birthdayHard(ctx, o.birthday),
};

/**
 * Opens a direct UDP path to a peer through both NATs. Succeeds when a datagram
 * arrives from the peer itself, never via the tracker.
 */
export async function punch(opts: PunchOptions): Promise<PunchResult> {
  const { client } = opts;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const graceMs = opts.graceMs ?? 1000;
  const started = performance.now();
  const emit = (e: PunchEvent): void => opts.onEvent?.(e);
  const overall = new AbortController();
  const onAbort = (): void => overall.abort(new Error('aborted'));
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  // Everything that reaches the client's socket from anyone but the tracker, from now on.
  const seen: { msg: Buffer; from: RemoteInfo }[] = [];
  const early = new Map<string, Set<number>>(); // exchange datagrams by sender, before our path opened
  const stats: PunchStats = opts.stats ?? { earlyKept: 0, earlyDropped: 0 };
  const listeners = new Set<(msg: Buffer, from: RemoteInfo) => void>();
  const onMessage = (msg: Buffer, from: RemoteInfo): void => {
    if (seen.length < 64) seen.push({ msg, from });
    const seq = dataSeq(msg);
    if (seq >= 0) {
      const key = formatPeerAddr(from.address, from.port);
      let seqs = early.get(key);
      if (seqs === undefined && early.size < EARLY_SENDERS) early.set(key, seqs = new Set());
      if (seqs !== undefined && (seqs.size < EARLY_SEQS || seqs.has(seq))) {
        if (!seqs.has(seq)) { seqs.add(seq); stats.earlyKept++; }
      } else stats.earlyDropped++;
    }
    for (const l of [...listeners]) l(msg, from);
  };
  client.on('message', onMessage);

  let stage = 'discovering' as 'discovering' | 'announcing' | 'waiting' | 'probing';
  let strategy: PunchStrategy | null = null;
  /** Our public address as the tracker's STUN saw it (discovery), and the local punch, once they are known. */
  let mapped: string | null = null;
  let local: LocalPunch | null = null;
  const samePublicIp = (): boolean => {
    if (mapped === null || peerInfo === null) return false;
    try { return parsePeerAddr(mapped).host === peerInfo.host; } catch { return false; }
  };
  let probes: ProbeBudget = { sent: 0, left: 0 };
  let peerInfo: Peer | null = null;
  /** The peer, from the first message that named it (peerInfo is set a tick later). */
  let chosen: Peer | null = null;
  let resolvePeer!: (p: { via: 'pushReceived' | 'income'; peer: Peer }) => void;
  const peerKnown = new Promise<{ via: 'pushReceived' | 'income'; peer: Peer }>((resolve) => { resolvePeer = resolve; });
  const learnPeer = (p: { via: 'pushReceived' | 'income'; peer: Peer }): void => {
    if (chosen !== null) return;
    chosen = p.peer;
    resolvePeer(p);
  };
  // A relayed address the requester hands us (an income carrying `relay`), at any time.
  let offerRelay!: (at: { host: string; port: number }) => void;
  const relayOffered = new Promise<{ host: string; port: number }>((resolve) => { offerRelay = resolve; });
  const asPeer = (p: PushResult | IncomeEvent): Peer => ({
    host: p.host, port: p.port, peeraddr: p.peeraddr, verified: p.peerVerified === true, authenticated: p.authenticated, ...(p.local !== undefined ? { local: p.local } : {}),
    ...(p.peerShareId !== undefined ? { shareId: p.peerShareId } : {}), ...(p.nat !== undefined ? { nat: p.nat } : {}),
  });
  const onIncome = (i: IncomeEvent): void => {
    // pushing to someone, only that one pushing back to us is our peer
    if (opts.peer !== undefined && i.peerShareId !== opts.peer) return;
    learnPeer({ via: 'income', peer: asPeer(i) });
    // a relayed address only from the peer we punch with (not a third party pushing to
    // us meanwhile), and from a tracker that tags only in a tagged income
    if (i.relay === undefined || chosen?.shareId !== i.peerShareId || (client.token !== undefined && !i.authenticated)) return;
    try {
      offerRelay(parsePeerAddr(i.relay));
    } catch {
      // not an ip:port: nothing to send to (this tracker checks it; another might not)
    }
  };
  const onPushed = (r: PushResult): void => {
    if (opts.peer === undefined || r.peerShareId === undefined || r.peerShareId === opts.peer) learnPeer({ via: 'pushReceived', peer: asPeer(r) });
  };
  client.on('income', onIncome);
  client.on('pushReceived', onPushed);

  const timeout = setTimeout(() => overall.abort(new Error(timeoutReason())), timeoutMs);
  const timeoutReason = (): string => {
    const s = Math.round(timeoutMs / 100) / 10;
    const t = client.trackerAddress;
    const tracker = t ? formatPeerAddr(t.address, t.port) : 'the tracker';
    if (stage === 'discovering' || stage === 'announcing') return `no announce reply from ${tracker} within ${s} s`;
    if (stage === 'waiting') {
      return opts.peer !== undefined ? `no push reply from ${tracker} for ${opts.peer} within ${s} s` : `nobody pushed to us within ${s} s`;
    }
    const where = peerInfo?.peeraddr ?? '?';
    const relay = relayError === null ? '' : `; the relay failed: ${relayError}`;
    if (samePublicIp()) {
      const tried = local === null || local.candidates.length === 0
        ? (peerInfo?.local === undefined ? 'the peer showed no local candidates' : 'none of its local candidates is one we can send to')
        : `none of its local candidates (${describeCandidates(local.candidates)}) answered`;
      return `no datagram from the peer at ${where} within ${s} s: it is behind the same NAT as we are (public IP ${peerInfo!.host}), which does not hairpin, and ${tried}: no local path${relay}`;
    }
    if (strategy === 'relay') {
      return opts.peer !== undefined ? `no datagram through the relay from the peer at ${where} within ${s} s${relay}`
        : `no direct path (both NATs map each destination to its own port), and the peer handed us no relay within ${s} s: a relay is needed`;
    }
    if (peerInfo !== null && !peerInfo.verified && strategy !== 'direct') {
      return `no datagram from the peer at ${where} within ${s} s: it has not proved it receives there (peerVerified false), so it got only a few probes${relay}`;
    }
    return `no datagram from the peer at ${where} within ${s} s (${strategy} punch): the NATs did not let the probes through (a firewall, or a NAT that is harder than it reported)${relay}`;
  };
  /** Why the relay could not be used, when it was tried and failed. */
  let relayError: string | null = null;

  try {
    const aborted = new Promise<never>((_, reject) => {
      overall.signal.addEventListener('abort', () => reject(overall.signal.reason as Error), { once: true });
    });
    aborted.catch(() => undefined); // it also rejects when all went well (the finally below)
    const run = async (): Promise<PunchResult> => {
      if (opts.discover !== false && client.dialect === 'documented') {
        const found = await Promise.race([discoverNat(client, { timeoutMs: opts.discoverTimeoutMs ?? 1000, signal: overall.signal }), aborted]);
        emit({ event: 'nat', nat: found.nat, mapped: found.mapped, ...(found.reason !== undefined ? { reason: found.reason } : {}) });
        mapped = found.mapped;
        await client.reportNat(found.nat, { signal: overall.signal });
      }
      stage = 'announcing';
      const myShareId = await client.announce({ signal: overall.signal });
      emit({ event: 'announced', shareId: myShareId });
      stage = 'waiting';
      if (opts.peer !== undefined) {
        // the answer arrives as a pushReceived event too (learnPeer); an error rejects here
        client.push(opts.peer, { signal: overall.signal }).catch((err: unknown) => overall.abort(err));
      }
      const { via, peer } = await Promise.race([peerKnown, aborted]);
      peerInfo = peer;
      probes = probeBudget(peer);
      strategy = chooseStrategy(client.nat, peer.nat);
      emit({ event: 'peer', via, peeraddr: peer.peeraddr, ...(peer.shareId !== undefined ? { peerShareId: peer.shareId } : {}),
        ...(peer.nat !== undefined ? { nat: peer.nat } : {}), peerVerified: peer.verified, ...(peer.local !== undefined ? { local: peer.local } : {}),
        strategy, ms: Math.round(performance.now() - started) });
      stage = 'probing';
      // Each way in gets its own signal: the first that opens a path stops the others.
      const attempts = new AbortController();
      const stopAttempts = (): void => attempts.abort(overall.signal.reason);
      overall.signal.addEventListener('abort', stopAttempts, { once: true });
      const ctx: PunchContext = {
        peer, myShareId, probes, signal: attempts.signal, probeIntervalMs: opts.probeIntervalMs ?? 100,
        send: (msg, address, port) => { client.send(msg, address, port).catch(() => undefined); },
        messages: (fn) => { listeners.add(fn); return () => listeners.delete(fn); },
        clientMessages: (fn) => { client.on('message', fn); return () => client.off('message', fn); },
        early: () => seen.slice(),
      };
      const never = new Promise<never>(() => undefined);
      // The peer's local candidates first; when it shows our public IP, what follows waits until none answered.
      const family = client.trackerAddress !== undefined && client.trackerAddress.address.includes(':') ? 6 : 4;
      local = localPunch(ctx, family, client.localCandidates ?? []);
      const afterLocal = samePublicIp() ? local.exhausted : Promise.resolve();
      const noLocalAnswer = local.exhausted;
      // The requester relays when no punch fits, or when the punch has found nothing in
      // relayAfterMs; a failed relay leaves the punch running (and is told at the end).
      const relay = (): Promise<PeerPath> => relayAsRequester(client, ctx).catch((err: unknown) => {
        relayError = err instanceof TrackerError ? `${err.code}: ${err.message}` : (err as Error).message;
        if (strategy === 'relay') throw new Error(`no direct path: both NATs map each destination to its own port (ours ${client.nat}, the peer's ${peer.nat}); and the relay failed: ${relayError}`);
        return never;
      });
      const ways: Promise<{ path: PeerPath; via: PunchStrategy }>[] = [local.path.then((path) => ({ path, via: 'local' as const }))];
      const chosen = strategy;
      if (chosen !== 'relay') ways.push(afterLocal.then(() => PUNCHES[chosen](ctx, opts)).then((path) => ({ path, via: chosen })));
      if (opts.peer !== undefined) {
        // the relay fallback timer starts only once no local candidate answered
        const after = noLocalAnswer.then(() => strategy === 'relay' ? undefined : new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, opts.relayAfterMs ?? 3000);
          attempts.signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
        }));
        ways.push(after.then(relay).then((path) => ({ path, via: 'relay' as const })));
      } else {
        ways.push(Promise.race([relayOffered, aborted]).then((at) => relayAsTarget(ctx, at)).then((path) => ({ path, via: 'relay' as const })));
      }
      let won: { path: PeerPath; via: PunchStrategy };
      try {
        won = await Promise.race([...ways, aborted]);
      } finally {
        overall.signal.removeEventListener('abort', stopAttempts);
        attempts.abort(new Error('connected'));
      }
      strategy = won.via;
      // the connection the application holds: it follows network changes (roaming.ts)
      const roaming = opts.roam === false || peer.shareId === undefined ? undefined
        : new Roaming({ client, silenceMs: opts.silenceMs, ...(opts.probeIntervalMs !== undefined ? { probeIntervalMs: opts.probeIntervalMs } : {}),
          ...(opts.birthday !== undefined ? { birthday: opts.birthday } : {}), onEvent: emit });
      const path: PeerPath = roaming === undefined ? won.path : roaming.add(peer, won.path, { onClose: () => roaming.close(), requester: opts.peer !== undefined,
        // a LAN path that breaks is punched again on the public addresses
        strategy: strategy === 'local' ? 'direct' : strategy });
      const ms = Math.round(performance.now() - started);
      emit({ event: 'connected', path: path.kind, strategy, peeraddr: path.peeraddr, ...(peer.shareId !== undefined ? { peerShareId: peer.shareId } : {}), ms, probes: probes.sent });
      clearTimeout(timeout); // connected: the rest is not bounded by the punch's timeout
      // The peer may not have heard us yet: keep knocking on the path during the grace period.
      const knock = probe(myShareId);
      const grace = setInterval(() => path.send(knock), opts.probeIntervalMs ?? 100);
      path.send(knock);
      if (opts.exchangeSeconds !== undefined && opts.exchangeSeconds > 0) {
        const ended = opts.exchangeEndWaitMs !== undefined ? { endWaitMs: opts.exchangeEndWaitMs } : {};
        const earlyData = early.get(path.peeraddr) ?? new Set<number>();
        const counted: { sent: number; received: number; stoppedMs?: number; lost?: boolean } = roaming === undefined
          ? await exchange(path, opts.exchangeSeconds, earlyData, ended)
          : await roamingExchange(roaming, path as MigratingPath, peer.shareId!, opts.exchangeSeconds, earlyData, ended);
        emit({ event: 'exchanged', ...counted });
        if (counted.lost === true) {
          clearInterval(grace);
          path.close();
          throw new Error(`the path to the peer broke during the exchange and was not restored (traffic stopped for ${counted.stoppedMs} ms)`);
        }
      }
      await new Promise((r) => setTimeout(r, graceMs));
      clearInterval(grace);
      const { host, port } = parsePeerAddr(path.peeraddr);
      return { ok: true, peeraddr: path.peeraddr, host, port, ...(peer.shareId !== undefined ? { peerShareId: peer.shareId } : {}), ms, path };
    };
    return await run();
  } catch (err) {
    const reason = err instanceof TrackerError ? `tracker: ${err.code}: ${err.message}` : (err as Error).message;
    emit({ event: 'failed', reason, ...(stage === 'probing' ? { probes: probes.sent } : {}) });
    return { ok: false, reason };
  } finally {
    clearTimeout(timeout);
    opts.signal?.removeEventListener('abort', onAbort);
    if (!overall.signal.aborted) overall.abort(new Error('done'));
    client.off('income', onIncome);
    client.off('pushReceived', onPushed);
    client.off('message', onMessage);
  }
}
