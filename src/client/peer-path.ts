// What every punching strategy shares: the peer as the tracker described it, the
// path a strategy opens to it, the probes, and the traffic test run over a path
// once it is open (`--exchange`).
import type { RemoteInfo } from 'node:dgram';
import type { NatType } from './messages.js';
import { formatPeerAddr } from './peer-addr.js';

/** The peer, as pushReceived or income told it. */
export interface Peer {
  host: string;
  port: number;
  /** `ip:port` (or `[v6]:port`) */
  peeraddr: string;
  shareId?: string;
  nat?: NatType;
  /** The peer proved it receives at peeraddr (see the README's peerVerified). */
  verified: boolean;
  /**
   * The message that named the peer carried the tracker's tag for our token, so it
   * is the tracker's. Without it (a tracker without tokens, the legacy dialect) the
   * message may be forged: no spray, and UNPROVEN_PROBES to the peer in all.
   */
  authenticated: boolean;
  /** Its local candidates, if the tracker showed us any (local-punch.ts): claims, not proofs. */
  local?: string[];
}

/** An open path to the peer: what was proved to carry datagrams both ways. */
export interface PeerPath {
  kind: 'direct' | 'relay';
  /** The peer's address on this path, as our socket sees it. */
  peeraddr: string;
  send(msg: Buffer): void;
  /** Datagrams from the peer on this path; returns a function that stops listening. */
  onMessage(fn: (msg: Buffer) => void): () => void;
  close(): void;
  /**
   * Stops using the path without a word to anyone (a relay allocation is not
   * released): for a path whose own end moved, where a release sent from the new
   * address would hit what was made from there. Absent: close() is as good.
   */
  abandon?(): void;
}

/** What a probe says; `shareId` is the sender's own. The desktop client's peers send the same action. */
export const PROBE_ACTION = 'knock';
/**
 * Probes a client ever sends to a peer that has not proved it receives where it is
 * aimed at, and in all to a peer named by a message it could not authenticate: a
 * spoofed push or income must not turn it into a cannon.
 */
export const UNPROVEN_PROBES = 8;

/** The probes of one punch: how many were sent, and how many more the peer's addresses may get. */
export interface ProbeBudget {
  sent: number;
  /** Infinity for a peer an authenticated message named, UNPROVEN_PROBES otherwise. */
  left: number;
}

/** The budget of a punch towards `peer`. */
export function probeBudget(peer: Peer): ProbeBudget {
  return { sent: 0, left: peer.authenticated ? Infinity : UNPROVEN_PROBES };
}

/** Takes one probe to the peer's addresses from the budget; false when it is spent. */
export function takeProbe(probes: ProbeBudget): boolean {
  if (probes.left <= 0) return false;
  probes.left--;
  probes.sent++;
  return true;
}

/** Whether the peer may be sprayed (birthday punch): it proved it receives, and the tracker said so in a message we authenticated. */
export function maySpray(peer: Peer): boolean {
  return peer.verified && peer.authenticated;
}

export function probe(myShareId: string): Buffer {
  return Buffer.from(JSON.stringify({ action: PROBE_ACTION, shareId: myShareId }));
}

/** The sender's shareId if `msg` is a probe, else undefined. */
export function probeSender(msg: Buffer): string | undefined {
  if (msg.length === 0 || msg[0] !== 0x7b) return undefined; // '{'
  try {
    const m = JSON.parse(msg.toString('utf8')) as { action?: unknown; shareId?: unknown };
    return m.action === PROBE_ACTION && typeof m.shareId === 'string' ? m.shareId : undefined;
  } catch {
    return undefined;
  }
}

/** Datagrams a socket of ours receives: subscribe, and get a function that unsubscribes. */
export type Subscribe = (fn: (msg: Buffer, from: RemoteInfo) => void) => () => void;

/** A path over a socket of ours (the client's, or a birthday socket) to `to`. */
export function socketPath(kind: PeerPath['kind'], sendTo: (msg: Buffer, address: string, port: number) => void,
  to: { address: string; port: number }, subscribe: Subscribe, close: () => void = () => {}): PeerPath {
  const { address, port } = to;
  return {
    kind,
    peeraddr: formatPeerAddr(address, port),
    send: (msg) => sendTo(msg, address, port),
    onMessage: (fn) => subscribe((msg, from) => { if (from.address === address && from.port === port) fn(msg); }),
    close,
  };
}

/** What a strategy works with (punch.ts makes it). */
export interface PunchContext {
  peer: Peer;
  myShareId: string;
  /** Sends from the client's own socket (the one that holds the tracker session). */
  send(msg: Buffer, address: string, port: number): void;
  /** Datagrams to the client's socket from anyone but the tracker, while the punch runs. */
  messages: Subscribe;
  /** The same, for as long as the client lives: what a path opened on the client's socket listens with. */
  clientMessages: Subscribe;
  /** What arrived before the strategy started (a peer that heard of us first probes early). */
  early(): { msg: Buffer; from: RemoteInfo }[];
  /** How often to probe a peer that proved it receives. */
  probeIntervalMs: number;
  /** Aborted when the punch gives up: the strategy stops sending and cleans up. */
  signal: AbortSignal;
  /** Datagrams sent to the peer's addresses (and the relay's), for the report; and what the peer may still get. */
  probes: ProbeBudget;
}

/**
 * Probes the peer's own address from the client's socket: every probeIntervalMs
 * while it proved it receives there; otherwise UNPROVEN_PROBES in all, spread out.
 * Returns a function that stops.
 */
export function probePeer(ctx: PunchContext): () => void {
  const knock = probe(ctx.myShareId);
  let left = ctx.peer.verified ? Infinity : UNPROVEN_PROBES;
  const send = (): void => {
    if (left <= 0 || !takeProbe(ctx.probes)) return;
    left--;
    ctx.send(knock, ctx.peer.host, ctx.peer.port);
  };
  const timer = setInterval(send, ctx.peer.verified ? ctx.probeIntervalMs : Math.max(250, ctx.probeIntervalMs));
  send();
  return () => clearInterval(timer);
}

// ---- the traffic test (`--exchange SECONDS`)

/** Datagrams per second each side sends during an exchange. */
export const EXCHANGE_RATE = 50;
const DATA_ACTION = 'data';

export function dataMessage(seq: number): Buffer {
  return Buffer.from(`{"action":"${DATA_ACTION}","seq":${seq}}`);
}

/** The sequence number of an exchange datagram, or -1. */
export function dataSeq(msg: Buffer): number {
  const m = /^\{"action":"data","seq":(\d+)\}$/.exec(msg.toString('latin1'));
  return m === null ? -1 : Number(m[1]);
}

/** What a side sends after its last exchange datagram: how many it sent. */
export function dataEndMessage(sent: number): Buffer {
  return Buffer.from(`{"action":"${DATA_ACTION}-end","sent":${sent}}`);
}

/** The count in an end-of-exchange datagram, or -1. */
export function dataEndSent(msg: Buffer): number {
  const m = /^\{"action":"data-end","sent":(\d+)\}$/.exec(msg.toString('latin1'));
  return m === null ? -1 : Number(m[1]);
}

export interface ExchangeOptions {
  /**
   * How long to wait, after our own last datagram, for the peer's end of exchange
   * before counting what arrived: only a bound for a peer that vanished (a peer
   * that ends says so, and the count is taken then). Default 5000 ms.
   */
  endWaitMs?: number;
  /** Called with each exchange datagram the peer sent, as it arrives (its sequence number). */
  onData?: (seq: number) => void;
}

/**
 * Sends EXCHANGE_RATE numbered datagrams a second over `path` for `seconds`, and
 * counts the distinct ones the peer sent us, including those that arrived before
 * this side had finished connecting (`early`). It ends when both sides have
 * ended, not on a clock: after its last datagram each side sends an end marker
 * (`data-end`, its count) until it has seen the peer's, and answers each of the
 * peer's with its own. The marker follows the data on the same path, so once it
 * arrives the peer's datagrams have too (or were lost).
 */
export async function exchange(path: PeerPath, seconds: number, early: Set<number>, opts: ExchangeOptions = {}): Promise<{ sent: number; received: number }> {
  const received = new Set(early);
  const total = Math.round(seconds * EXCHANGE_RATE);
  let sent = 0;
  let peerEnded = false;
  let onPeerEnd: () => void = () => undefined;
  const stop = path.onMessage((msg) => {
    const seq = dataSeq(msg);
    if (seq >= 0) {
      if (!received.has(seq)) { received.add(seq); opts.onData?.(seq); }
      return;
    }
    if (dataEndSent(msg) < 0) return;
    // the peer may still be waiting for ours: answer every one of its markers once we are done
    if (sent >= total) path.send(dataEndMessage(sent));
    if (!peerEnded) { peerEnded = true; onPeerEnd(); }
  });
  const started = performance.now();
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      // paced by the clock, not by timer ticks, so a late timer sends what is due
      const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * EXCHANGE_RATE) + 1);
      while (sent < due) path.send(dataMessage(sent++));
      if (sent >= total) { clearInterval(timer); resolve(); }
    };
    const timer = setInterval(tick, 1000 / EXCHANGE_RATE);
    tick();
  });
  const end = dataEndMessage(sent);
  await new Promise<void>((resolve) => {
    const finish = (): void => { clearInterval(again); clearTimeout(bound); resolve(); };
    const again = setInterval(() => path.send(end), 1000 / EXCHANGE_RATE);
    const bound = setTimeout(finish, opts.endWaitMs ?? 5000);
    path.send(end);
    if (peerEnded) finish();
    else onPeerEnd = finish;
  });
  const count = received.size;
  // The peer may not have seen our marker yet: keep answering its markers a while
  // (only a bound; nothing waits for it).
  setTimeout(stop, opts.endWaitMs ?? 5000).unref();
  return { sent, received: count };
}
