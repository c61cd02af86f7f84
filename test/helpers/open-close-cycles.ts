// Child process of test/close-frees-memory.test.ts: starts and closes the tracker
// over and over on one datagram I/O path, and prints how much its RSS grew.
//   node --import tsx --expose-gc test/helpers/open-close-cycles.ts <native|dgram> <cycles>
// Each cycle receives a burst of datagrams too large for maxDatagram, so that the
// receive buffers are really written (a leaked, never-touched malloc would not show
// in RSS), and waits until the tracker has answered them all.
import dgram from 'node:dgram';
import { startTracker } from '../../src/tracker.js';

const io = process.argv[2] as 'native' | 'dgram';
const cycles = Number(process.argv[3]);
const WARMUP = 10;
const BURST = 64;
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');

// near the largest allowed: receive buffers of ~64 KiB per datagram slot, as the issue measured
const maxDatagram = 65000;
const client = dgram.createSocket({ type: 'udp4', sendBufferSize: 8 << 20 });
client.on('error', () => {});
await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
const big = Buffer.alloc(65507, 0x20);

async function settle(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc!();
    await new Promise((r) => setTimeout(r, 20)); // finalizers run in later tasks
  }
  return process.memoryUsage().rss;
}

let base = 0;
for (let i = 0; i < cycles; i++) {
  const t = await startTracker({ host: '127.0.0.1', port: 0, shards: 1, logLevel: 'silent', io, maxDatagram, recvBufferSize: 8 << 20 });
  const port = t.addresses[0]!.port;
  for (let k = 0; k < BURST; k++) client.send(big, port, '127.0.0.1');
  const until = Date.now() + 2000;
  while ((await t.stats()).main.tooLarge < BURST && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  const { main } = await t.stats();
  await t.close();
  if (main.tooLarge === 0) throw new Error(`cycle ${i}: nothing received`);
  if (i === WARMUP - 1) base = await settle();
}
const end = await settle();
client.close();
process.stdout.write(`${JSON.stringify({ io, cycles: cycles - WARMUP, rssGrowth: end - base })}\n`);
