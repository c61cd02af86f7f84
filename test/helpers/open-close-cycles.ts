// Child process of test/close-frees-memory.test.ts: starts and closes the tracker
// over and over on one datagram I/O path, and prints how much its RSS grew.
//   node --import tsx --expose-gc test/helpers/open-close-cycles.ts <native|dgram> <cycles>
// Each cycle receives a burst of datagrams too large for maxDatagram, so that the
// receive buffers are really written (a leaked, never-touched malloc would not show
// in RSS), and waits until the tracker has answered every one the kernel delivered
// (the rest it dropped, counted, for want of receive buffer).
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import os from 'node:os';
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

/** Datagrams the kernel dropped at the receive buffer of the UDP socket bound to 127.0.0.1:port (the drops column of /proc/net/udp). */
function kernelDrops(port: number): number {
  const local = `${os.endianness() === 'LE' ? '0100007F' : '7F000001'}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const line of readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === local) return Number(f[12]);
  }
  return 0;
}

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
  // every datagram of the burst is sent (or refused) ...
  const refused = (await Promise.all(Array.from({ length: BURST }, () =>
    new Promise<number>((r) => client.send(big, port, '127.0.0.1', (err) => r(err ? 1 : 0)))))).reduce((a, b) => a + b, 0);
  // ... and then answered by the tracker or dropped by the kernel: a condition, not a wait
  const deadline = Date.now() + 60_000; // only bounds a broken run
  let main = (await t.stats()).main;
  while (main.tooLarge + kernelDrops(port) + refused < BURST) {
    if (Date.now() > deadline) throw new Error(`cycle ${i}: ${main.tooLarge} answered, ${kernelDrops(port)} dropped, ${refused} refused of ${BURST}`);
    await new Promise((r) => setTimeout(r, 5));
    main = (await t.stats()).main;
  }
  await t.close();
  if (main.tooLarge === 0) throw new Error(`cycle ${i}: nothing received`);
  if (i === WARMUP - 1) base = await settle();
}
const end = await settle();
client.close();
process.stdout.write(`${JSON.stringify({ io, cycles: cycles - WARMUP, rssGrowth: end - base })}\n`);
