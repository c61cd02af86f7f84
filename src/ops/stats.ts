// What a running tracker reports (Tracker.stats()): the main thread's counters,
// each shard's, and the directory's. ops/metrics.ts renders it for Prometheus.
import type { DirectoryCounters, DirectoryState } from '../directory/redis-directory.js';
import type { RemotePushCounters } from '../directory/remote-pushes.js';
import type { ClaimCounters } from '../directory/remote-claims.js';
import type { IoCounters, IoPath } from '../io/datagram-io.js';
import type { BatchCounters } from '../io/dispatcher.js';
import type { ShardStats } from '../wire/messages.js';

/** The main thread's counters: its datagram I/O's and its batching's. */
export type MainCounters = IoCounters & BatchCounters;

export interface TrackerStats {
  peers: number;
  mainLoopDelayMaxMs: number;
  /** Which datagram I/O path serves (config `io`). */
  io: IoPath;
  main: MainCounters;
  /** With a session directory (config `directory`). */
  directory?: { instanceId: string; state: DirectoryState; counters: DirectoryCounters; pushes: RemotePushCounters; claims?: ClaimCounters };
  shards: (ShardStats & { restarts: number; lostPeers: number; queueDepth: number })[];
}
