// The whole architecture, wired in one place.
//
//   UDP socket  --datagrams-->  main thread: datagram I/O (io/datagram-io.ts), native
//                                 (recvmmsg into batches, io/native-io.ts) or dgram
//                                 (io/dgram-io.ts); hash(source IP) -> bucket -> shard;
//                                 batches per shard (wire/frame.ts layout, io/dispatcher.ts)
//        ^                                  | MessagePort per shard
//        |  replies (batched, sendmmsg)     v
//        +-------------------------- shard threads (shard/worker.ts), one piscina
//                                    pool each: peer table + expiry wheel
//
// A push whose target lives in another shard is forwarded shard -> main -> shard
// (msgpackr-packed), and the target's shard answers both peers.
//
// STUN (stun/) goes the same way: a STUN message is routed like any request and
// answered by its shard. With NAT behaviour discovery (config stunOtherHost) the
// datagram I/O also binds the other IP and port (io/open-io.ts stunEndpoints),
// which answer STUN alone. Relay credentials (relay/) are minted in the shards.
//
// Ops (src/ops/, all opt-in): an HTTP listener for /metrics and /healthz, and a
// snapshot file the sessions are restored from before the first datagram is taken
// and saved to on close (and periodically).
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { ConfigError, configWarnings, displayConfig, readSecretFile, redactUrl, resolveConfig, type Config } from './config.js';
import type { BoundAddress, IoPath } from './io/datagram-io.js';
import { pointerTtlMs } from './directory/cadence.js';
import { RedisDirectory } from './directory/redis-directory.js';
import { RemotePushes } from './directory/remote-pushes.js';
import { Dispatcher, type CrossInstance } from './io/dispatcher.js';
import { openDatagramIo, stunEndpoints } from './io/open-io.js';
import { ShardLink } from './io/shard-link.js';
import { relayIpsOf } from './relay/allowed.js';
import { shardOptions } from './shard/options.js';
import type { ShardStats } from './wire/messages.js';
import type { TrackerStats } from './ops/stats.js';
import { createLogger, type Logger } from './log.js';
import { checkHealth, PING_DEADLINE_MS, type Health } from './ops/health.js';
import { closeOpsServer, startOpsServer } from './ops/http.js';
import { createMetrics } from './ops/metrics.js';
import { readSnapshotFile, restoreSnapshot, snapshotSessionKey, SnapshotWriter } from './ops/snapshot.js';
import { SessionKey } from './auth/session-key.js';

export interface Tracker {
  readonly config: Config;
  readonly addresses: readonly BoundAddress[];
  /** Which datagram I/O path serves (config `io`). */
  readonly io: IoPath;
  /** Where /metrics and /healthz are served, or null when --metrics-port is 0. */
  readonly opsAddress: { address: string; port: number } | null;
  /**
   * Counters of the main thread and every shard. A shard that has not answered within
   * `deadlineMs` (default 10 s: a loaded machine is slow, not broken) is shown with
   * counters null; /metrics asks with a shorter one, within a scrape's timeout.
   */
  stats(opts?: { resetLoopDelay?: boolean; deadlineMs?: number }): Promise<TrackerStats>;
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

export async function startTracker(partial: Partial<Config> = {}, logger?: Logger): Promise<Tracker> {
  const config = resolveConfig(partial);
  // Secrets are read before anything starts, so a missing file fails the start at once.
  const directoryPassword = directoryPasswordOf(config);
  const turnSecret = config.turnSecretFile !== '' ? readSecretFile('turnSecretFile', config.turnSecretFile) : config.turnSecret !== '' ? config.turnSecret : null;
  const keyFromFile = config.sessionKeyFile !== '' ? sessionKeyOfFile(config.sessionKeyFile) : null;
  const log = logger ?? createLogger(config.logLevel);
  for (const warning of configWarnings(config)) log.warn(warning);
  // the relays' IPs (host names looked up once, now): a push's relayed address must be on one
  const relayIps = await relayIpsOf(config, (w) => log.warn(w));
  // config host:port, and with NAT behaviour discovery the STUN server's three other addresses.
  const io = await openDatagramIo(config, log, stunEndpoints(config));
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
      await io.close();
      throw err;
    }
  }
  // The session key: from its file, else the random one the snapshot kept (so tokens survive a restart), else a new one.
  // The snapshot is read once, here (it may be a pipe): its key now, its sessions once the shards run.
  const snapshotBytes = config.snapshot !== '' ? await readSnapshotFile(config.snapshot) : undefined;
  const randomKey = keyFromFile !== null ? null
    : (snapshotBytes !== undefined ? snapshotSessionKey(snapshotBytes, config.shareIdLength) : null) ?? new SessionKey().key;
  const sessionKey = keyFromFile ?? randomKey!;
  const dispatcher = new Dispatcher(io, config.maxShardQueue);
  const links = Array.from({ length: config.shards }, (_, index) =>
    new ShardLink(index, shardOptions(config, index, io, turnSecret, relayIps, sessionKey), log, dispatcher));
  // Every shard answers, and the saved sessions are back, before the first datagram is taken.
  await Promise.all(links.map((l) => l.control('ping')));
  if (config.snapshot !== '') await restoreSnapshot(config.snapshot, config.shareIdLength, links, log, snapshotBytes);
  dispatcher.attach(links);

  // Several instances: pointers in Redis, pushes between instances over pub/sub.
  let cross: CrossInstance | null = null;
  if (config.directory !== '') {
    const directory = new RedisDirectory({ url: config.directory, password: directoryPassword, shown: redactUrl(config.directory) }, config.instanceId, pointerTtlMs(config.ttl), config.directoryTimeout, log,
      (message) => cross!.pushes.onMessage(message),
      () => { for (const l of links) void l.control('reregister'); });
    cross = { directory, pushes: new RemotePushes(directory, dispatcher, config.directoryTimeout, { shareIdLength: config.shareIdLength, maxMultiaddr: config.maxMultiaddr }, log, new SessionKey(sessionKey), keyFromFile !== null) };
    dispatcher.cross = cross;
    directory.start();
  }

  const snapshots = config.snapshot !== '' ? new SnapshotWriter(config.snapshot, config.shareIdLength, links, log, randomKey) : null;
  snapshots?.start(config.snapshotInterval);

  const mainLoopDelay = monitorEventLoopDelay({ resolution: 5 });
  mainLoopDelay.enable();

  let closing: Promise<void> | null = null;
  tracker = {
    config,
    addresses: io.addresses,
    io: io.path,
    get opsAddress() {
      const a = ops?.address();
      return a && typeof a === 'object' ? { address: a.address, port: a.port } : null;
    },
    async stats({ resetLoopDelay = false, deadlineMs = 10_000 } = {}) {
      const shards = await Promise.all(links.map(async (l) => {
        const s = (await l.control('stats', resetLoopDelay, deadlineMs)) as ShardStats | null;
        return { ...(s ?? { index: l.index, peers: 0, tableBytes: 0, loopDelayMaxMs: NaN, counters: null as never }),
          restarts: l.restarts, lostPeers: l.lostPeers, queueDepth: l.queueDepth };
      }));
      const mainLoopDelayMaxMs = mainLoopDelay.max / 1e6;
      if (resetLoopDelay) mainLoopDelay.reset();
      const directory = cross === null ? {} : {
        directory: { instanceId: config.instanceId, state: cross.directory.state, counters: structuredClone(cross.directory.counters), pushes: structuredClone(cross.pushes.counters),
          ...(cross.pushes.claims !== null ? { claims: structuredClone(cross.pushes.claims.counters) } : {}) },
      };
      return { peers: shards.reduce((n, s) => n + s.peers, 0), mainLoopDelayMaxMs, io: io.path, main: { ...io.counters(), ...dispatcher.counters }, ...directory, shards };
    },
    async fill(peers) {
      const each = Math.ceil(peers / links.length);
      await Promise.all(links.map((l) => l.control('fill', each)));
    },
    terminateShard: (index) => links[index]!.terminateThread(),
    health: (deadlineMs = PING_DEADLINE_MS) => checkHealth(io, links, cross?.directory ?? null, deadlineMs),
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
        cross?.pushes.close();
        await cross?.directory.close();
        await io.close();
        mainLoopDelay.disable();
        log.info('sobani-tracker stopped');
      })();
      return closing;
    },
  };
  const buffers = io.bufferSizes();
  log.info({ config: displayConfig(config), io: io.path, addresses: io.addresses, ops: tracker.opsAddress, recvBufferSize: buffers.recv, sendBufferSize: buffers.send },
    'sobani-tracker listening');
  return tracker;
}

/** The session directory's password from --directory-password-file, or undefined (none, or in the URL). */
function directoryPasswordOf(config: Config): string | undefined {
  if (config.directoryPasswordFile === '') return undefined;
  if (config.directory === '') throw new ConfigError('directoryPasswordFile is set, but there is no directory to use it with (--directory)');
  if (new URL(config.directory).password !== '') {
    throw new ConfigError('the directory URL holds a password and directoryPasswordFile names another: give it in one place');
  }
  return readSecretFile('directoryPasswordFile', config.directoryPasswordFile);
}

/** The session key a session key file gives (auth/session-key.ts); a ConfigError names the setting, never the contents. */
function sessionKeyOfFile(file: string): Uint8Array {
  let contents: Buffer;
  try { contents = readFileSync(file); } catch (e) {
    throw new ConfigError(`sessionKeyFile: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try { return SessionKey.fromFileContents(contents).key; } catch (e) {
    throw new ConfigError(`sessionKeyFile: ${file}: ${(e as Error).message}`);
  }
}
