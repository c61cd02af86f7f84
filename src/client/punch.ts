import type { RemoteInfo } from 'node:dgram';
import { formatPeerAddr } from './peer-addr.js';
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
  signal?: AbortSignal;
  /** Called with each progress event (the CLI prints them as JSON lines). */
  onEvent?: (event: PunchEvent) => void;
}

export type PunchEvent =
  | { event: 'announced'; shareId: string }
  | { event: 'peer'; via: 'pushReceived' | 'income'; peeraddr: string; peerShareId?: string }
  | { event: 'connected'; peeraddr: string; peerShareId?: string; ms: number }
  | { event: 'failed'; reason: string };

export type PunchResult =
  | { ok: true; peeraddr: string; host: string; port: number; peerShareId?: string; ms: number }
  | { ok: false; reason: string };

/** What a probe says; `shareId` is the sender's own. */
const PROBE_ACTION = 'knock';

/**
 * Opens a direct UDP path to a peer through both NATs:
 * announce, push (or wait for `income`), then both sides probe each other's
 * public address at once, so each NAT sees outbound traffic to the other
 * before the other's probes arrive. Succeeds when a datagram arrives from
 * the peer itself, never via the tracker.
 */
export async function punch(opts: PunchOptions): Promise<PunchResult> {
  const { client } = opts;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const probeIntervalMs = opts.probeIntervalMs ?? 100;
  const graceMs = opts.graceMs ?? 1000;
  const started = performance.now();
  const emit = (e: PunchEvent): void => opts.onEvent?.(e);

  /** Addresses to probe, `ip:port` → host/port. */
  const candidates = new Map<string, { host: string; port: number }>();
  /** shareIds the tracker told us about; a probe carrying one counts even from an unexpected port. */
  const peers = new Set<string>();
  let myShareId = '';
  let probeTimer: NodeJS.Timeout | undefined;
  let state: 'announcing' | 'waiting' | 'probing' | 'connected' = 'announcing';

  let finish!: (r: PunchResult) => void;
  const done = new Promise<PunchResult>((resolve) => {
    finish = resolve;
  });
  let finished = false;
  const fail = (reason: string): void => {
    if (finished) return;
    finished = true;
    emit({ event: 'failed', reason });
    finish({ ok: false, reason });
  };

  const probe = (): void => {
    const msg = JSON.stringify({ action: PROBE_ACTION, shareId: myShareId });
    for (const c of candidates.values()) client.send(msg, c.host, c.port).catch(() => undefined);
  };
  const addCandidate = (host: string, port: number): void => {
    candidates.set(formatPeerAddr(host, port), { host, port });
    if (!probeTimer) probeTimer = setInterval(probe, probeIntervalMs);
    probe();
  };

  const onPeer = (via: 'pushReceived' | 'income', p: PushResult | IncomeEvent): void => {
    if (state === 'connected') return;
    if (via === 'pushReceived' && opts.peer !== undefined && p.peerShareId !== undefined && p.peerShareId !== opts.peer) return;
    emit({ event: 'peer', via, peeraddr: p.peeraddr, ...(p.peerShareId ? { peerShareId: p.peerShareId } : {}) });
    if (p.peerShareId) peers.add(p.peerShareId);
    state = 'probing';
    addCandidate(p.host, p.port);
    const early = p.peerShareId ? earlyProbes.get(p.peerShareId) : undefined;
    if (early) connected(early, p.peerShareId);
  };
  const onIncome = (i: IncomeEvent): void => onPeer('income', i);
  const onPushed = (r: PushResult): void => onPeer('pushReceived', r);

  /** Probes that arrived before the tracker told us who the sender is. */
  const earlyProbes = new Map<string, RemoteInfo>();
  const onMessage = (msg: Buffer, rinfo: RemoteInfo): void => {
    if (finished) return;
    const from = formatPeerAddr(rinfo.address, rinfo.port);
    let sender: string | undefined;
    try {
      const m = JSON.parse(msg.toString('utf8')) as { action?: unknown; shareId?: unknown };
      if (m.action === PROBE_ACTION && typeof m.shareId === 'string') sender = m.shareId;
    } catch {
      // not a probe: it still counts if it comes from a candidate address
    }
    if (candidates.has(from) || (sender !== undefined && peers.has(sender))) connected(rinfo, sender);
    else if (sender !== undefined) earlyProbes.set(sender, rinfo);
  };

  const connected = (rinfo: RemoteInfo, peerShareId: string | undefined): void => {
    if (state === 'connected' || finished) return;
    state = 'connected';
    const ms = Math.round(performance.now() - started);
    const peeraddr = formatPeerAddr(rinfo.address, rinfo.port);
    emit({ event: 'connected', peeraddr, ...(peerShareId ? { peerShareId } : {}), ms });
    // The peer may not have heard us yet: answer its actual address during the grace period.
    addCandidate(rinfo.address, rinfo.port);
    setTimeout(() => {
      finished = true;
      finish({ ok: true, peeraddr, host: rinfo.address, port: rinfo.port, ...(peerShareId ? { peerShareId } : {}), ms });
    }, graceMs);
  };

  const overall = new AbortController();
  const onAbort = (): void => overall.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const timeout = setTimeout(() => {
    if (state === 'connected') return;
    const s = Math.round(timeoutMs / 100) / 10;
    const t = client.trackerAddress;
    const tracker = t ? formatPeerAddr(t.address, t.port) : 'the tracker';
    fail(
      state === 'announcing'
        ? `no announce reply from ${tracker} within ${s} s`
        : state === 'waiting'
          ? opts.peer !== undefined
            ? `no push reply from ${tracker} for ${opts.peer} within ${s} s`
            : `nobody pushed to us within ${s} s`
          : `no datagram from the peer at ${[...candidates.keys()].join(', ')} within ${s} s: ` +
            'the NATs did not let the probes through (symmetric NAT on a side, or a firewall)',
    );
    overall.abort();
  }, timeoutMs);

  client.on('income', onIncome);
  client.on('pushReceived', onPushed);
  client.on('message', onMessage);
  try {
    overall.signal.addEventListener('abort', () => fail('aborted'), { once: true });
    const run = async (): Promise<void> => {
      myShareId = await client.announce({ signal: overall.signal });
      emit({ event: 'announced', shareId: myShareId });
      if (state === 'announcing') state = 'waiting';
      if (opts.peer !== undefined) await client.push(opts.peer, { signal: overall.signal });
    };
    run().catch((err: Error) => {
      if (finished || overall.signal.aborted) return;
      fail(err instanceof TrackerError ? `tracker: ${err.code}: ${err.message}` : err.message);
    });
    return await done;
  } finally {
    clearTimeout(timeout);
    clearInterval(probeTimer);
    opts.signal?.removeEventListener('abort', onAbort);
    if (!overall.signal.aborted) overall.abort();
    client.off('income', onIncome);
    client.off('pushReceived', onPushed);
    client.off('message', onMessage);
  }
}
