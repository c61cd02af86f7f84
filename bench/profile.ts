// Profiling aid: the real tracker in this process under the bench's closed-loop
// load, printing replies/s and the mean batch size. Run it under a profiler:
//   yarn build && node --cpu-prof --cpu-prof-dir=prof dist/bench/profile.js [shards] [seconds] [native|dgram]
// (one .cpuprofile per JS thread: main and each shard; the C generator is not JS),
// or under `perf record -g` for the native parts.
import { startTracker } from '../src/tracker.js';
import { runLoad } from './loadgen/index.js';

const shards = Number(process.argv[2] ?? 1);
const seconds = Number(process.argv[3] ?? 3);
const io = process.argv[4] === 'dgram' ? 'dgram' : 'native';
const tracker = await startTracker({ host: '127.0.0.1', port: 0, shards, logLevel: 'warn', io });
const before = (await tracker.stats()).main;
const result = await runLoad({
  port: tracker.addresses[0]!.port, mode: 'closed', setup: 'tracker', threads: 1, clients: 256, window: 4, rate: 0,
  warmupMs: 300, measureMs: seconds * 1000, drainMs: 200, timeoutMs: 1000,
});
const after = (await tracker.stats()).main;
const batches = after.batches - before.batches;
console.log(`${io}, ${shards} shard(s): ${Math.round(result.replyRate)} replies/s, ` +
  `${batches} batches, ${((after.batchedDatagrams - before.batchedDatagrams) / batches).toFixed(1)} datagrams per batch`);
await tracker.close();
