// The local punch, for a pair on one network: each side probes the other's local
// candidates (the addresses its session socket has on its own host's interfaces,
// local-candidates.ts, which the tracker showed us beside its public address). Two
// hosts behind one NAT that does not hairpin meet only this way; ICE checks its host
// candidate pairs the same way (RFC 8445 6.1.2).
//
// A candidate is a claim, not a proof: a peer may name any address as its local
// one, a victim's say. So each candidate gets LOCAL_PROBES_PER_CANDIDATE probes and
// a punch sends MAX_LOCAL_PROBES in all, whatever the peer claims: never a spray.
// A path opens only on a probe that carries the peer's shareId (or, when the
// tracker did not say who the peer is, a datagram from the very candidate address),
// from one of the candidates' IPs: another host on our LAN that happens to have a
// candidate's address does not know it.
//
// It runs beside the public punch: punch.ts starts it first, and holds the public
// punch and the relay back until it is `exhausted` (every probe sent, and a moment
// for the answers) when both sides show one public IP, since a LAN path is the better
// one (no NAT, no detour).
import type { RemoteInfo } from 'node:dgram';
import { isIP } from 'node:net';
import { parsePeerAddr, formatPeerAddr } from './peer-addr.js';
import { probe, probeSender, socketPath, takeProbe, type PeerPath, type PunchContext } from './peer-path.js';
import { MAX_LOCAL } from './local-candidates.js';

/** Probes each local candidate of the peer gets. */
export const LOCAL_PROBES_PER_CANDIDATE = 4;
/** Probes to local candidates in one punch, in all. */
export const MAX_LOCAL_PROBES = 16;
/** How long after its last probe a candidate may still answer before the local punch counts as exhausted. */
const ANSWER_WAIT_MS = 250;

export interface LocalPunch {
  /** The peer's candidates this punch tries, as our socket sends to them. */
  candidates: { address: string; port: number }[];
  /** A path to the first candidate the peer answered on; never resolves if none did. */
  path: Promise<PeerPath>;
  /** Every probe sent and no answer within ANSWER_WAIT_MS after the last: what comes next may start. At once when there is no candidate. */
  exhausted: Promise<void>;
}

/**
 * The peer's local candidates, as our socket (of `family`) can send to them: IPv6
 * ones only from an IPv6 socket, IPv4 ones IPv4-mapped there; without the peer's
 * public address, our own candidates and duplicates; at most MAX_LOCAL.
 */
export function localTargets(peer: PunchContext['peer'], family: 4 | 6, own: readonly string[] = []): { address: string; port: number }[] {
  const out: { address: string; port: number }[] = [];
  for (const text of peer.local ?? []) {
    let c: { host: string; port: number; family: 4 | 6 };
    try { c = parsePeerAddr(text); } catch { continue; } // not an ip:port: this tracker checks; another might not
    if (c.family === 6 && family === 4) continue;
    if (own.includes(text) || (c.host === peer.host && c.port === peer.port)) continue;
    const address = c.family === 4 && family === 6 ? `::ffff:${c.host}` : c.host;
    if (out.some((o) => o.address === address && o.port === c.port)) continue;
    out.push({ address, port: c.port });
    if (out.length === MAX_LOCAL) break;
  }
  return out;
}

export function localPunch(ctx: PunchContext, family: 4 | 6, own: readonly string[] = []): LocalPunch {
  const { peer } = ctx;
  const candidates = localTargets(peer, family, own);
  let markExhausted!: () => void;
  const exhausted = new Promise<void>((resolve) => { markExhausted = resolve; });
  if (candidates.length === 0) {
    markExhausted();
    return { candidates, path: new Promise<PeerPath>(() => undefined), exhausted };
  }
  const ips = new Set(candidates.map((c) => c.address));
  const fromPeer = (msg: Buffer, from: RemoteInfo): boolean => {
    if (!ips.has(from.address) && !ips.has(isIP(from.address) === 4 ? `::ffff:${from.address}` : from.address)) return false;
    return peer.shareId !== undefined ? probeSender(msg) === peer.shareId : candidates.some((c) => c.address === from.address && c.port === from.port);
  };
  const path = new Promise<PeerPath>((resolve) => {
    const knock = probe(ctx.myShareId);
    let round = 0, sent = 0;
    let wait: NodeJS.Timeout | undefined;
    const send = (): void => {
      if (round >= LOCAL_PROBES_PER_CANDIDATE) return;
      round++;
      for (const c of candidates) {
        if (sent >= MAX_LOCAL_PROBES || !takeProbe(ctx.probes)) break; // a peer we could not authenticate: UNPROVEN_PROBES in all
        sent++;
        ctx.send(knock, c.address, c.port);
      }
      if (round >= LOCAL_PROBES_PER_CANDIDATE || sent >= MAX_LOCAL_PROBES) {
        clearInterval(timer);
        wait = setTimeout(markExhausted, Math.max(ANSWER_WAIT_MS, ctx.probeIntervalMs));
      }
    };
    const stop = (): void => { clearInterval(timer); clearTimeout(wait); stopListening(); };
    const opened = (from: RemoteInfo): void => {
      stop();
      ctx.signal.removeEventListener('abort', stop);
      ctx.send(knock, from.address, from.port); // so the peer opens too, if it has not heard us yet
      resolve(socketPath('direct', ctx.send, from, ctx.clientMessages));
    };
    const stopListening = ctx.messages((msg, from) => { if (fromPeer(msg, from)) opened(from); });
    const timer = setInterval(send, ctx.probeIntervalMs);
    ctx.signal.addEventListener('abort', stop, { once: true });
    const early = ctx.early().find(({ msg, from }) => fromPeer(msg, from));
    if (early !== undefined) opened(early.from);
    else send();
  });
  return { candidates, path, exhausted };
}

/** "ip:port" of each candidate, for messages. */
export function describeCandidates(candidates: { address: string; port: number }[]): string {
  return candidates.map((c) => formatPeerAddr(c.address.replace(/^::ffff:/, ''), c.port)).join(', ');
}
