// Prometheus metrics. Nothing is counted here: each scrape takes one
// tracker.stats() (the main thread's counters plus a 'stats' answer from every
// shard) and copies those totals into a registry of its own, so the hot paths
// only ever bump plain numbers. Counters restart from 0 when a shard is
// replaced after a crash; Prometheus' rate() treats that as a counter reset.
import { Counter, Gauge, Registry, type Metric } from 'prom-client';
import type { MainCounters, TrackerStats } from './stats.js';
import { BATCH_BUCKETS, type ShardCountersSnapshot } from '../shard/counters.js';
import { LATENCY_BUCKETS_MS } from '../directory/remote-pushes.js';

/** Main-thread counters that mean "this datagram was not served", by drop reason. */
const MAIN_DROPS = { shardBusy: 'shard_busy', startupDropped: 'startup_overflow', droppedAtStop: 'stopping' } as const satisfies Partial<Record<keyof MainCounters, string>>;
/** Main-thread values that are levels, not totals: exported as gauges under these names. */
const MAIN_GAUGES = {
  sendQueueDepth: 'sobani_udp_send_queue_datagrams', sendQueueBytes: 'sobani_udp_send_queue_bytes',
} as const satisfies Partial<Record<keyof MainCounters, string>>;
/** Main-thread counters exported under their own names; any other field gets sobani_main_<name>_total. */
const MAIN_NAMED: Partial<Record<keyof MainCounters, string>> = {
  datagramsIn: 'sobani_udp_datagrams_received_total', bytesIn: 'sobani_udp_bytes_received_total',
  datagramsOut: 'sobani_udp_datagrams_sent_total', bytesOut: 'sobani_udp_bytes_sent_total',
  batches: 'sobani_batches_total', batchedDatagrams: 'sobani_batched_datagrams_total',
};

export interface Metrics {
  readonly contentType: string;
  /** Takes fresh stats and renders the Prometheus text. */
  render(): Promise<string>;
}

/** How long a scrape waits for a shard's counters: within Prometheus's default 10 s scrape timeout. */
const SHARD_STATS_DEADLINE_MS = 2000;

export function createMetrics(stats: (opts: { resetLoopDelay: boolean; deadlineMs: number }) => Promise<TrackerStats>): Metrics {
  const registry = new Registry();
  const counter = (name: string, help: string, labelNames: string[] = []): Counter<string> =>
    new Counter({ name, help, labelNames, registers: [registry] });
  const gauge = (name: string, help: string, labelNames: string[] = []): Gauge<string> =>
    new Gauge({ name, help, labelNames, registers: [registry] });

  const m = {
    peers: gauge('sobani_peers', 'Live sessions per shard.', ['shard']),
    tableBytes: gauge('sobani_peer_table_bytes', 'Bytes held by each shard\'s peer table.', ['shard']),
    queueDepth: gauge('sobani_shard_queue_depth', 'Batches sent to a shard and not yet answered.', ['shard']),
    loopDelay: gauge('sobani_event_loop_delay_max_seconds', 'Longest event-loop delay since the previous scrape, per thread.', ['thread']),
    dIn: counter('sobani_datagrams_in_total', 'Requests handled by the shards, by action and by the dialect of the sender (unknown until its first keep-alive).', ['action', 'dialect']),
    dOut: counter('sobani_datagrams_out_total', 'Datagrams the shards answered with, by the action that caused them (income: to a push target) and the recipient\'s dialect.', ['action', 'dialect']),
    errors: counter('sobani_errors_total', 'Error replies, by code.', ['code']),
    drops: counter('sobani_drops_total', 'Datagrams dropped unanswered, by reason.', ['reason']),
    unknown: counter('sobani_unknown_session_total', 'Keep-alives and pushes from an address with no live session, by action.', ['action']),
    expired: counter('sobani_expired_total', 'Sessions that expired (no keep-alive within the ttl).'),
    evicted: counter('sobani_sessions_evicted_total', 'Sessions that gave way to a new announce when the table was full, by which: never_kept_alive (announced, no keep-alive since), not_proven (kept alive, never proved anything). A proven session never gives way.', ['session']),
    forwarded: counter('sobani_forwarded_pushes_total', 'Pushes whose target lives in another shard.'),
    restored: counter('sobani_restored_sessions_total', 'Sessions restored from a snapshot at start.'),
    restarts: counter('sobani_shard_restarts_total', 'Shard threads replaced after a crash.', ['shard']),
    lost: counter('sobani_shard_lost_peers_total', 'Sessions lost with a crashed shard.', ['shard']),
    relayCredentials: counter('sobani_relay_credentials_total', 'Relay (TURN) credentials handed out, by result: minted, or reused (asked again within relayInterval).', ['result']),
    relayForwarded: counter('sobani_relay_forwarded_total', 'Pushes that carried a relayed address to their target (in income).'),
    moved: counter('sobani_moved_total', 'Sessions that moved to a new address: token sessions (their token and the path challenge came from it), and desktop v0.1.2 sessions on a new port of the same IP (their id came from it).'),
    tokenForwarded: counter('sobani_token_forwarded_total', 'Token requests forwarded to the shard that holds their session (it moved to an IP that routes elsewhere).'),
    stunRequests: counter('sobani_stun_requests_total', 'STUN messages received, by kind: binding, indication, bad-request (answered 400), unknown-attributes (answered 420), not-a-request, malformed, bad-fingerprint (the last three dropped).', ['kind']),
    stunResponses: counter('sobani_stun_responses_total', 'STUN responses sent, by result (success, error).', ['result']),
    stunErrors: counter('sobani_stun_errors_total', 'STUN error responses sent, by code (400, 420).', ['code']),
    sendErrors: counter('sobani_udp_send_errors_total', 'Datagrams not sent, by reason: refused by the kernel (EHOSTUNREACH, EACCES, ...), malformed reply records, native send queue full (queueFull) or closed with it (closed).', ['reason']),
    recvErrors: counter('sobani_udp_recv_errors_total', 'Reads from the UDP socket that failed, by reason (errno name); receiving goes on.', ['reason']),
    io: gauge('sobani_io_path', 'The datagram I/O path serving (1): native (recvmmsg/sendmmsg addon) or dgram.', ['path']),
    sendQueueDepth: gauge(MAIN_GAUGES.sendQueueDepth, 'Datagrams waiting for room in the socket\'s send buffer (native: at most 4096, then dropped as send_errors{reason="queueFull"}; dgram: unbounded).'),
    sendQueueBytes: gauge(MAIN_GAUGES.sendQueueBytes, 'Payload bytes of the datagrams waiting for room in the socket\'s send buffer (native: at most 2 MiB).'),
    // with a session directory (several instances)
    dirUp: gauge('sobani_directory_up', '1 while the session directory (Redis) answers, else 0.', ['instance']),
    dirLookups: counter('sobani_directory_lookups_total', 'shareId lookups in the directory, by result (found, missing, error).', ['result']),
    dirWrites: counter('sobani_directory_writes_total', 'Session pointers written to the directory.'),
    dirWriteErrors: counter('sobani_directory_write_errors_total', 'Pointer writes that failed (they are written again once the directory is back).'),
    dirErrors: counter('sobani_directory_errors_total', 'Directory failures, by reason (timeout, connection).', ['reason']),
    remote: counter('sobani_remote_pushes_total', 'Pushes to sessions of other instances, by outcome (answered, or the error the requester got).', ['outcome']),
    served: counter('sobani_remote_pushes_served_total', 'Pushes from other instances to sessions held here.'),
    claims: counter('sobani_claims_total', 'Token sessions this instance claimed from another one (their client moved here), by outcome: moved (the owner handed it over), fresh (its owner was gone), none (no instance held it), the error the requester got, late (handed over after PEER_UNREACHABLE: the session started all the same), or unanswered (no handover within 30 directoryTimeouts after a PEER_UNREACHABLE: a handover after that is dropped, and the session may be lost).', ['outcome']),
    released: counter('sobani_sessions_released_total', 'Token sessions this instance handed over to another one, where their client moved.'),
    dirInvalid: counter('sobani_directory_invalid_total', 'Messages on this instance\'s directory channel that were dropped, by reason: too_large, undecodable, bad_kind, bad_field (directory/messages.ts), unmatched_result (no request pending with that instance: late, answered already, or forged), over_budget (replies past the request\'s grant; those that fit are sent), bad_proof (without the shared key\'s MAC, or a claim without its proof), replayed (a claim taken already, or not made within the last 30 s).', ['reason']),
    main: new Map<string, Counter<string>>(),
  };
  const batchSizes = new AbsoluteHistogram('sobani_shard_batch_datagrams', 'Datagrams per batch a shard handled.', BATCH_BUCKETS);
  registry.registerMetric(batchSizes as unknown as Metric);
  const remoteLatency = new AbsoluteHistogram('sobani_remote_push_seconds', 'Time from a push to another instance\'s session until its answer arrived.',
    LATENCY_BUCKETS_MS.map((ms) => ms / 1000));
  registry.registerMetric(remoteLatency as unknown as Metric);

  const mainCounter = (field: string): Counter<string> => {
    let c = m.main.get(field);
    if (c === undefined) {
      const name = MAIN_NAMED[field as keyof MainCounters] ?? `sobani_main_${field.replace(/[A-Z]/g, (ch) => '_' + ch.toLowerCase())}_total`;
      c = counter(name, `Main thread: ${field}.`);
      m.main.set(field, c);
    }
    return c;
  };

  const update = (s: TrackerStats): void => {
    for (const c of [m.dIn, m.dOut, m.errors, m.drops, m.unknown, m.expired, m.evicted, m.forwarded, m.restored, m.restarts, m.lost, m.sendErrors,
      m.stunRequests, m.stunResponses, m.stunErrors, m.relayCredentials, m.relayForwarded, m.moved, m.tokenForwarded,
      m.dirLookups, m.dirWrites, m.dirWriteErrors, m.dirErrors, m.remote, m.served, m.claims, m.released, m.dirInvalid]) c.reset();
    for (const g of [m.peers, m.tableBytes, m.queueDepth, m.loopDelay, m.io, m.dirUp, m.sendQueueDepth, m.sendQueueBytes]) g.reset();
    const d = s.directory;
    if (d !== undefined) {
      m.dirUp.set({ instance: d.instanceId }, d.state === 'up' ? 1 : 0);
      incAll(m.dirLookups, d.counters.lookups, (result) => ({ result }));
      m.dirWrites.inc(d.counters.writes);
      m.dirWriteErrors.inc(d.counters.writeErrors);
      incAll(m.dirErrors, d.counters.errors, (reason) => ({ reason }));
      incAll(m.remote, d.pushes.outcomes, (outcome) => ({ outcome }));
      m.served.inc(d.pushes.served);
      if (d.claims !== undefined) {
        incAll(m.claims, d.claims.outcomes, (outcome) => ({ outcome }));
        m.released.inc(d.claims.released);
      }
      incAll(m.dirInvalid, d.pushes.invalid, (reason) => ({ reason }));
      remoteLatency.set(d.pushes.latencyBuckets, d.pushes.latencySumMs / 1000);
    }
    m.io.set({ path: s.io }, 1);
    incAll(m.sendErrors, s.main.sendErrors, (reason) => ({ reason }));
    incAll(m.recvErrors, s.main.recvErrors, (reason) => ({ reason }));
    m.sendQueueDepth.set(s.main.sendQueueDepth);
    m.sendQueueBytes.set(s.main.sendQueueBytes);
    m.loopDelay.set({ thread: 'main' }, s.mainLoopDelayMaxMs / 1000);
    const sums = sumShards(s.shards.map((sh) => sh.counters));
    for (const sh of s.shards) {
      const shard = String(sh.index);
      m.peers.set({ shard }, sh.peers);
      m.tableBytes.set({ shard }, sh.tableBytes);
      m.queueDepth.set({ shard }, sh.queueDepth);
      if (Number.isFinite(sh.loopDelayMaxMs)) m.loopDelay.set({ thread: `shard-${shard}` }, sh.loopDelayMaxMs / 1000);
      m.restarts.inc({ shard }, sh.restarts);
      m.lost.inc({ shard }, sh.lostPeers);
    }
    incAll(m.dIn, sums.datagramsIn, (k) => { const [action, dialect] = k.split('/'); return { action: action!, dialect: dialect! }; });
    incAll(m.dOut, sums.datagramsOut, (k) => { const [action, dialect] = k.split('/'); return { action: action!, dialect: dialect! }; });
    incAll(m.errors, sums.errors, (code) => ({ code }));
    if (s.main.tooLarge > 0) m.errors.inc({ code: 'DATAGRAM_TOO_LARGE' }, s.main.tooLarge); // answered by the main thread
    incAll(m.drops, sums.drops, (reason) => ({ reason }));
    for (const [field, reason] of Object.entries(MAIN_DROPS)) m.drops.inc({ reason }, s.main[field as keyof typeof MAIN_DROPS]);
    incAll(m.unknown, sums.unknownSession, (action) => ({ action }));
    incAll(m.stunRequests, sums.stunRequests, (kind) => ({ kind }));
    incAll(m.stunResponses, sums.stunResponses, (result) => ({ result }));
    incAll(m.stunErrors, sums.stunErrors, (code) => ({ code }));
    m.relayCredentials.inc({ result: 'minted' }, sums.relayMinted);
    m.relayCredentials.inc({ result: 'reused' }, sums.relayReused);
    m.relayForwarded.inc(sums.relayForwarded);
    m.moved.inc(sums.moved);
    m.tokenForwarded.inc(sums.tokenForwarded);
    m.expired.inc(sums.expired);
    m.evicted.inc({ session: 'never_kept_alive' }, sums.evictedNeverKeptAlive);
    m.evicted.inc({ session: 'not_proven' }, sums.evictedNotProven);
    m.forwarded.inc(sums.forwarded);
    m.restored.inc(sums.restored);
    for (const [field, value] of Object.entries(s.main)) {
      if (typeof value !== 'number' || field in MAIN_GAUGES) continue;
      const c = mainCounter(field);
      c.reset();
      c.inc(value);
    }
    batchSizes.set(sums.batchSizes, sums.batchedDatagrams);
  };

  return {
    contentType: registry.contentType,
    async render() {
      update(await stats({ resetLoopDelay: true, deadlineMs: SHARD_STATS_DEADLINE_MS }));
      return registry.metrics();
    },
  };
}

function incAll(c: Counter<string>, counts: Record<string, number>, labels: (key: string) => Record<string, string>): void {
  for (const [k, v] of Object.entries(counts)) c.inc(labels(k), v);
}

type Sums = Pick<ShardCountersSnapshot, 'datagramsIn' | 'datagramsOut' | 'errors' | 'drops' | 'unknownSession' | 'batchSizes' |
  'stunRequests' | 'stunResponses' | 'stunErrors'> &
  { expired: number; evictedNeverKeptAlive: number; evictedNotProven: number; forwarded: number; restored: number; batchedDatagrams: number; relayMinted: number; relayReused: number; relayForwarded: number; moved: number; tokenForwarded: number };

/** Totals over shards; a shard that did not answer (null counters) adds nothing. */
function sumShards(all: readonly (ShardCountersSnapshot | null)[]): Sums {
  const s: Sums = { datagramsIn: {}, datagramsOut: {}, errors: {}, drops: {}, unknownSession: {}, stunRequests: {}, stunResponses: {}, stunErrors: {},
    batchSizes: BATCH_BUCKETS.map(() => 0), expired: 0, evictedNeverKeptAlive: 0, evictedNotProven: 0, forwarded: 0, restored: 0, batchedDatagrams: 0, relayMinted: 0, relayReused: 0, relayForwarded: 0, moved: 0, tokenForwarded: 0 };
  const add = (into: Record<string, number>, from: Record<string, number>): void => {
    for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
  };
  for (const c of all) {
    if (c === null) continue;
    add(s.datagramsIn, c.datagramsIn); add(s.datagramsOut, c.datagramsOut);
    add(s.errors, c.errors); add(s.drops, c.drops); add(s.unknownSession, c.unknownSession);
    add(s.stunRequests, c.stunRequests); add(s.stunResponses, c.stunResponses); add(s.stunErrors, c.stunErrors);
    c.batchSizes.forEach((n, i) => { s.batchSizes[i]! += n; });
    s.expired += c.expired; s.evictedNeverKeptAlive += c.evictedNeverKeptAlive; s.evictedNotProven += c.evictedNotProven; s.forwarded += c.forwarded; s.restored += c.restored; s.batchedDatagrams += c.batchedDatagrams;
    s.relayMinted += c.relayMinted; s.relayReused += c.relayReused; s.relayForwarded += c.relayForwarded;
    s.moved += c.moved ?? 0; s.tokenForwarded += c.tokenForwarded ?? 0;
  }
  return s;
}

/**
 * A Prometheus histogram whose bucket counts are kept elsewhere (in the shards'
 * fixed arrays) and copied in whole at scrape time; prom-client's Histogram can
 * only observe() one value at a time. Implements the get() the registry calls.
 */
class AbsoluteHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private counts: number[] = [];
  private sum = 0;

  constructor(readonly name: string, readonly help: string, private readonly bounds: readonly number[]) {}

  /** counts[i]: observations in (bounds[i-1], bounds[i]] */
  set(counts: number[], sum: number): void { this.counts = counts; this.sum = sum; }

  get(): { name: string; help: string; type: string; aggregator: string; values: { metricName: string; labels: Record<string, string>; value: number }[] } {
    const values = [];
    let cumulative = 0;
    for (let i = 0; i < this.bounds.length; i++) {
      cumulative += this.counts[i] ?? 0;
      values.push({ metricName: `${this.name}_bucket`, labels: { le: String(this.bounds[i]) }, value: cumulative });
    }
    cumulative += this.counts[this.bounds.length] ?? 0; // above the last bound
    values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf' }, value: cumulative });
    values.push({ metricName: `${this.name}_sum`, labels: {}, value: this.sum });
    values.push({ metricName: `${this.name}_count`, labels: {}, value: cumulative });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void { this.set([], 0); }
}
