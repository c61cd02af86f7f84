// The whole architecture, wired in one place.
//
//   UDP socket(s)  --datagrams-->  main thread (io/dispatcher.ts)
//                                    hash(source address) -> bucket -> shard
//                                    batches per shard (wire/frame.ts layout)
//        ^                                  | MessagePort per shard
//        |  replies (batched)               v
//        +-------------------------- shard threads (shard/worker.ts), one piscina
//                                    pool each: peer table + expiry wheel
//
// A push whose target lives in another shard is forwarded shard -> main -> shard
// (msgpackr-packed), and the target's shard answers both peers.
//
// Ops (src/ops/, all opt-in): an HTTP listener for /metrics and /healthz, and a
// snapshot file the sessions are restored from before the first datagram is taken
// and saved to on close (and periodically).
import dgram from 'node:dgram';
import type { Server } from 'node:http';
import { isIP } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { configWarnings, resolveConfig, type Config } from './config.js';
import { Dispatcher, type MainCounters } from './io/dispatcher.js';
import { ShardLink } from './io/shard-link.js';
import { shardOptions } from './shard/shard.js';
import type { ShardStats } from './wire/messages.js';
import { createLogger, type Logger } from './log.js';
import { checkHealth, PING_DEADLINE_MS, type Health } from './ops/health.js';
import { closeOpsServer, startOpsServer } from './ops/http.js';
import { createMetrics } from './ops/metrics.js';
import { restoreSnapshot, SnapshotWriter } from './ops/snapshot.js';

export interface TrackerStats {
  peers: number;
  mainLoopDelayMaxMs: number;
  main: MainCounters;
  shards: (ShardStats & { restarts: number; lostPeers: number; queueDepth: number })[];
}

export interface Tracker {
  readonly config: Config;
  readonly addresses: { address: string; port: number; family: 'IPv4' | 'IPv6' }[];
  /** Where /metrics and /healthz are served, or null when --metrics-port is 0. */
  readonly opsAddress: { address: string; port: number } | null;
  stats(opts?: { resetLoopDelay?: boolean }): Promise<TrackerStats>;
  /** Bench/test: adds synthetic live sessions through the real shard code. */
  fill(peers: number): Promise<void>;
  /** Ops/test: kills one shard's thread the way a crash would. */
  terminateShard(index: number): Promise<void>;
  /** What /healthz answers. */
  health(deadlineMs?: number): Promise<Health>;
  /** Ops/test: blocks one shard's event loop for ms, as a hung shard would; resolves when it answers again. */
  stallShard(index: number, ms: number): Promise<void>;
  /** Stops serving; with --snapshot, saves the sessions first. */
  close(): Promise<void>;
}

async function bindSockets(config: Config, log: Logger): Promise<dgram.Socket[]> {
  const open = (type: 'udp4' | 'udp6', host: string): Promise<dgram.Socket> => new Promise((resolve, reject) => {
    const socket = dgram.createSocket({
      type,
      ipv6Only: false, // "::" also receives IPv4, as IPv4-mapped addresses
      recvBufferSize: config.recvBufferSize,
      sendBufferSize: config.sendBufferSize,
    });
    socket.once('error', reject);
    socket.bind({ port: config.port, address: host, exclusive: true }, () => {
      socket.off('error', reject);
      // Socket errors (and address-lookup failures of a send) arrive here; without a
      // listener they would kill the process.
      socket.on('error', (err) => log.warn({ err }, 'udp socket error'));
      resolve(socket);
    });
  });
  if (config.host !== '::') return [await open(isIP(config.host) === 6 ? 'udp6' : 'udp4', config.host)];
  try {
    return [await open('udp6', '::')];
  } catch (err) {
    log.warn({ err }, 'IPv6 is unavailable; listening on 0.0.0.0 (IPv4 only)');
    return [await open('udp4', '0.0.0.0')];
  }
}

export async function startTracker(partial: Partial<Config> = {}, logger?: Logger): Promise<Tracker> {
  const config = resolveConfig(partial);
  const log = logger ?? createLogger(config.logLevel);
  for (const warning of configWarnings(config)) log.warn(warning);
  const sockets = await bindSockets(config, log);
  // The ops listener comes up first so a taken port fails the start before any
  // shard exists (and before a snapshot could be rewritten); it answers 503 until ready.
  let tracker: Tracker | null = null;
  let ops: Server | null = null;
  if (config.metricsPort > 0) {
    const metrics = createMetrics((o) => tracker!.stats(o));
    try {
      ops = await startOpsServer(config.metricsHost, config.metricsPort,
        { render: () => tracker ? metrics.render() : Promise.reject(new Error('starting')), contentType: metrics.contentType },
        async () => tracker ? tracker.health() : { ok: false, reason: 'starting' }, log);
    } catch (err) {
      await Promise.all(sockets.map((s) => new Promise<void>((r) => s.close(() => r()))));
      throw err;
    }
  }
  const socketTypes = sockets.map((s) => (s.address().family === 'IPv6' ? 'udp6' : 'udp4') as 'udp4' | 'udp6');

  const dispatcher = new Dispatcher(sockets, config.maxDatagram, config.maxShardQueue);
  const links = Array.from({ length: config.shards }, (_, index) =>
    new ShardLink(index, shardOptions(config, index, socketTypes), log, dispatcher.onReply));
  // Every shard answers, and the saved sessions are back, before the first datagram is taken.
  await Promise.all(links.map((l) => l.control('ping')));
  if (config.snapshot !== '') await restoreSnapshot(config.snapshot, config.shareIdLength, links, log);
  dispatcher.attach(links);
  const snapshots = config.snapshot !== '' ? new SnapshotWriter(config.snapshot, config.shareIdLength, links, log) : null;
  snapshots?.start(config.snapshotInterval);

  const mainLoopDelay = monitorEventLoopDelay({ resolution: 5 });
  mainLoopDelay.enable();

  const addresses = sockets.map((s) => {
    const a = s.address();
    return { address: a.address, port: a.port, family: a.family as 'IPv4' | 'IPv6' };
  });

  let closing: Promise<void> | null = null;
  tracker = {
    config,
    addresses,
    get opsAddress() {
      const a = ops?.address();
      return a && typeof a === 'object' ? { address: a.address, port: a.port } : null;
    },
    async stats({ resetLoopDelay = false } = {}) {
      const shards = await Promise.all(links.map(async (l) => {
        const s = (await l.control('stats', resetLoopDelay, 2000)) as ShardStats | null;
        return { ...(s ?? { index: l.index, peers: 0, tableBytes: 0, loopDelayMaxMs: NaN, counters: null as never }),
          restarts: l.restarts, lostPeers: l.lostPeers, queueDepth: l.queueDepth };
      }));
      const mainLoopDelayMaxMs = mainLoopDelay.max / 1e6;
      if (resetLoopDelay) mainLoopDelay.reset();
      return { peers: shards.reduce((n, s) => n + s.peers, 0), mainLoopDelayMaxMs, main: { ...dispatcher.counters }, shards };
    },
    async fill(peers) {
      const each = Math.ceil(peers / links.length);
      await Promise.all(links.map((l) => l.control('fill', each)));
    },
    terminateShard: (index) => links[index]!.terminateThread(),
    health: (deadlineMs = PING_DEADLINE_MS) => checkHealth(sockets, links, deadlineMs),
    async stallShard(index, ms) { await links[index]!.control('stall', ms); },
    close() {
      closing ??= (async () => {
        if (ops !== null) await closeOpsServer(ops); // healthz stops answering: the tracker is going away
        dispatcher.stopReceiving();
        dispatcher.flushNow();
        const deadline = Date.now() + 2000;
        await Promise.all(links.map((l) => l.drain(deadline)));
        // After the drain, so the last answered announce is in the file.
        await snapshots?.stop();
        await Promise.all(links.map((l) => l.close()));
        await Promise.all(sockets.map((s) => new Promise<void>((r) => s.close(() => r()))));
        mainLoopDelay.disable();
        log.info('sobani-tracker stopped');
      })();
      return closing;
    },
  };
  log.info({ config, addresses, ops: tracker.opsAddress, recvBufferSize: sockets[0]!.getRecvBufferSize(), sendBufferSize: sockets[0]!.getSendBufferSize() },
    'sobani-tracker listening');
  return tracker;
}
