// Datagrams that arrive while the tracker is still starting (bound, but its shards
// not serving yet) are served once it serves, not dropped as if a shard were
// overloaded: the native path does not read the socket before start() (they wait
// in the kernel's buffer), the dgram path keeps them in a bounded list.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { startTracker } from '../src/tracker.js';
import { PADDED_ANNOUNCE, TEST_IO } from './helpers/wire.js';

/** A UDP port that was free a moment ago. */
async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

interface Outcome { sent: number; answers: number; main: Awaited<ReturnType<Awaited<ReturnType<typeof startTracker>>['stats']>>['main'] }

/** Sends `payload` once a millisecond from before startTracker() until it resolves; returns once the tracker has answered what it took (or 5 s). */
async function sendWhileStarting(payload: string, config: { maxDatagram?: number } = {}): Promise<Outcome> {
  const port = await freeUdpPort();
  const client = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 }); // two replies per announce, read at once
  client.on('error', () => {}); // the first ones meet a closed port
  let answers = 0;
  client.on('message', (m) => { if (m.toString().includes('"announceReceived"')) answers++; });
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
  // The shards take a while to start, and everything the socket gets meanwhile must wait.
  let sent = 0;
  const sender = setInterval(() => { client.send(payload, port, '127.0.0.1'); sent++; }, 1);
  const tracker = await startTracker({ host: '127.0.0.1', port, shards: 2, logLevel: 'silent', io: TEST_IO, ...config });
  clearInterval(sender);
  try {
    // until the socket was read and its datagrams answered, then a moment for anything late
    const until = Date.now() + 5000;
    let main = (await tracker.stats()).main;
    while ((main.datagramsIn === 0 || answers < main.datagramsIn - main.startupDropped) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 20));
      main = (await tracker.stats()).main;
    }
    await new Promise((r) => setTimeout(r, 100));
    return { sent, answers, main: (await tracker.stats()).main };
  } finally {
    client.close();
    await tracker.close();
  }
}

test('announces sent from before the bind until the tracker serves are all answered; none counted shardBusy', async () => {
  const { sent, answers, main } = await sendWhileStarting(PADDED_ANNOUNCE);
  assert.ok(main.datagramsIn >= 20, `only ${main.datagramsIn} of ${sent} announces reached the tracker while it started`);
  assert.equal(main.shardBusy, 0);
  assert.equal(main.startupDropped, 0);
  assert.equal(answers, main.datagramsIn, 'every datagram the socket got was answered');
});

test('more early bytes than the dgram path keeps: the rest are counted startupDropped (never shardBusy), the kept ones answered', async () => {
  // 8 KiB announces, one a millisecond: several MiB arrive while the tracker starts
  const big = JSON.stringify({ action: 'announce', pad: 'x'.repeat(8 * 1024) });
  const { sent, answers, main } = await sendWhileStarting(big, { maxDatagram: 16 * 1024 });
  assert.ok(main.datagramsIn >= 200, `only ${main.datagramsIn} of ${sent} announces reached the tracker while it started`);
  assert.equal(main.shardBusy, 0);
  if (TEST_IO === 'dgram') assert.ok(main.startupDropped > 0, 'past 1 MiB the dgram path drops, and counts');
  else assert.equal(main.startupDropped, 0, 'the native path leaves them in the kernel');
  assert.equal(answers, main.datagramsIn - main.startupDropped, 'every datagram kept was answered');
});
