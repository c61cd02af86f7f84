// RAM per live session: starts the real tracker in this process (one shard, no
// traffic), reads its RSS, fills it with N synthetic sessions through the real
// shard code (one source IP each, as the bench's scale phase does), and reads it
// again. The peer table grows by doubling, so the cost per session depends on how
// full the last doubling left it: try several N.
//   node --import tsx bench/session-ram.ts [N ...]     (default 1000000)
import { startTracker } from '../src/tracker.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rss = async (): Promise<number> => {
  // let the allocator and a GC settle, then take the lower of two reads
  (globalThis as { gc?: () => void }).gc?.();
  await sleep(1000);
  const a = process.memoryUsage().rss;
  await sleep(250);
  return Math.min(a, process.memoryUsage().rss);
};

const counts = process.argv.slice(2).map(Number).filter((n) => n > 0);
for (const n of counts.length ? counts : [1_000_000]) {
  const tracker = await startTracker({ host: '127.0.0.1', port: 0, shards: 1, logLevel: 'warn', maxSessions: Math.max(n, 5_000_000) });
  try {
    const before = await rss();
    const t0 = Date.now();
    await tracker.fill(n);
    const fillMs = Date.now() - t0;
    const after = await rss();
    const st = await tracker.stats();
    const table = st.shards.reduce((a, s) => a + s.tableBytes, 0);
    console.log(JSON.stringify({
      sessions: st.peers, fillMs, rssBeforeMB: +(before / 2 ** 20).toFixed(1), rssAfterMB: +(after / 2 ** 20).toFixed(1),
      rssBytesPerSession: Math.round((after - before) / n), peerTableBytesPerSession: Math.round(table / n),
    }));
  } finally {
    await tracker.close();
  }
}
