// The child side of the bench's server protocol. Every server under test
// (echo, naive tracker, the real tracker) is a child process that calls
// serveBench() once it is bound, and then answers the orchestrator over IPC.
// Keeping this out of the servers keeps the baselines what a user would write.

export interface BenchServerStats {
  peers: number;
  mainLoopDelayMaxMs?: number;
  shards?: { index: number; peers: number; loopDelayMaxMs: number; counters?: { drops?: Record<string, number> } | null }[];
  /** The tracker's main-thread counters (e.g. shardBusy: datagrams dropped at a full shard queue). */
  main?: { shardBusy?: number };
}

/** Drops by reason, summed over the shards, plus the main thread's shardBusy. */
export function dropTotals(st: BenchServerStats): Record<string, number> {
  const out: Record<string, number> = {};
  for (const sh of st.shards ?? []) for (const [reason, n] of Object.entries(sh.counters?.drops ?? {})) out[reason] = (out[reason] ?? 0) + n;
  if (st.main?.shardBusy) out.shardBusy = st.main.shardBusy;
  return out;
}

/** b - a, by key, keeping only the keys that grew. */
export function dropDelta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, n] of Object.entries(b)) if (n - (a[key] ?? 0) > 0) out[key] = n - (a[key] ?? 0);
  return out;
}

export interface BenchServer {
  port: number;
  stats(resetLoopDelay: boolean): Promise<BenchServerStats> | BenchServerStats;
  fill?(peers: number): Promise<void>;
  close(): Promise<void> | void;
}

export type BenchRequest =
  | { id: number; op: 'stats'; resetLoopDelay?: boolean }
  | { id: number; op: 'fill'; peers: number }
  | { id: number; op: 'usage' }
  | { id: number; op: 'close' };

export type BenchReply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

export function serveBench(server: BenchServer): void {
  const send = process.send?.bind(process);
  if (!send) throw new Error('a bench server must be started by bench/run (no IPC channel)');
  process.on('message', (raw) => {
    const req = raw as BenchRequest;
    void handle(server, req).then(
      (value) => send({ id: req.id, ok: true, value } satisfies BenchReply),
      (err: unknown) => send({ id: req.id, ok: false, error: String((err as Error)?.stack ?? err) } satisfies BenchReply),
    );
  });
  // If the orchestrator dies, don't linger as an orphan holding a port.
  process.on('disconnect', () => process.exit(0));
  send({ ready: true, port: server.port });
}

async function handle(server: BenchServer, req: BenchRequest): Promise<unknown> {
  switch (req.op) {
    case 'stats':
      return server.stats(req.resetLoopDelay ?? false);
    case 'fill':
      if (!server.fill) throw new Error('this server has no fill()');
      return server.fill(req.peers);
    case 'usage': {
      const u = process.cpuUsage();
      return { cpuSeconds: (u.user + u.system) / 1e6, rssBytes: process.memoryUsage().rss };
    }
    case 'close':
      await server.close();
      setImmediate(() => process.exit(0));
      return null;
  }
}
