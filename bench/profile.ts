// Profiling aid: the real tracker in this process under the bench's closed-loop
// load, printing replies/s and the mean batch size. Run it under a profiler:
//   yarn build && node --cpu-prof --cpu-prof-dir=prof dist/bench/profile.js [shards] [seconds]
// (one .cpuprofile per thread: main, each shard, the generator).
import { startTracker } from '../src/tracker.js';
import { runLoad } from './loadgen/index.js';

const shards = Number(process.argv[2] ?? 1);
const seconds = Number(process.argv[3] ?? 3);
const tracker = await startTracker({ host: '127.0.0.1', port: 0, shards, logLevel: 'warn' });
const before = (await tracker.stats()).main;
const result = await runLoad({
  port: tracker.addresses[0]!.port, mode: 'closed', threads: 1, clients: 32, window: 8, rate: 0,
  warmupMs: 300, measureMs: seconds * 1000, drainMs: 200, timeoutMs: 1000,
});
const after = (await tracker.stats()).main;
const batches = after.batches - before.batches;
console.log(`${shards} shard(s): ${Math.round(result.replyRate)} replies/s, ` +
  `${batches} batches, ${((after.batchedDatagrams - before.batchedDatagrams) / batches).toFixed(1)} datagrams per batch`);
await tracker.close();
