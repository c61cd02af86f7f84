// Datagrams that arrive while the tracker is still starting (bound, but its shards
// not serving yet) are served once it serves, not dropped as if a shard were
// overloaded: the native path does not read the socket before start() (they wait
// in the kernel's buffer), the dgram path keeps them in a bounded list.
//
// The start-up window is held open by the test, not guessed: the tracker restores
// its snapshot from a named pipe, after it has bound its socket and before it
// serves, and the pipe gives its bytes only once every early datagram was sent
// (and, on the dgram path, read off the socket). So the counts below do not depend
// on how long a start takes on this machine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { writeSnapshot } from '../src/ops/snapshot.js';
import { startTracker } from '../src/tracker.js';
import { EXPECT_MS, PADDED_ANNOUNCE, TEST_IO } from './helpers/wire.js';

/** A UDP port that was free a moment ago. */
async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Bytes waiting in the receive queue of the IPv4 UDP socket bound to 127.0.0.1:port (/proc/net/udp), or null if none is. */
function receiveQueueBytes(port: number): number | null {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const line of readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === local) return parseInt(f[4]!.split(':')[1]!, 16);
  }
  return null;
}

interface Outcome { answers: number; main: Awaited<ReturnType<Awaited<ReturnType<typeof startTracker>>['stats']>>['main'] }

/**
 * Starts a tracker whose snapshot is a named pipe; once the tracker opens it (bound,
 * not serving), sends `count` copies of `payload`, then lets the start finish.
 * Returns once the tracker has answered all it kept.
 */
async function sendWhileStarting(payload: string, count: number, config: { maxDatagram?: number } = {}): Promise<Outcome> {
  const dir = mkdtempSync(join(tmpdir(), 'sobani-startup-'));
  const pipe = join(dir, 'sessions.snapshot');
  execFileSync('mkfifo', [pipe]);
  // A valid snapshot with no sessions, for the pipe to give once the datagrams are in.
  const empty = join(dir, 'empty.snapshot');
  await writeSnapshot(empty, 12, []);
  const port = await freeUdpPort();
  const client = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 }); // two replies per announce, read at once
  client.on('error', () => {});
  let answers = 0;
  client.on('message', (m) => { if (m.toString().includes('"announceReceived"')) answers++; });
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
  const starting = startTracker({ host: '127.0.0.1', port, shards: 2, logLevel: 'silent', io: TEST_IO, snapshot: pipe, ...config });
  try {
    // Opening the pipe for writing returns once the tracker opened it to read: it is
    // bound, its shards answer, and it takes no datagram to them until the restore ends.
    const writer = await open(pipe, 'w');
    for (let i = 0; i < count; i++) await new Promise<void>((r) => client.send(payload, port, '127.0.0.1', () => r()));
    // dgram reads from the bind on: wait until it has read them all, so that they
    // count as early ones (the native path leaves them in the kernel's queue).
    if (TEST_IO === 'dgram') while ((receiveQueueBytes(port) ?? 0) > 0) await sleep(5);
    await writer.writeFile(readFileSync(empty));
    await writer.close();
  } catch (err) {
    await starting.then((t) => t.close(), () => {});
    throw err;
  }
  const tracker = await starting;
  try {
    const until = Date.now() + EXPECT_MS;
    let main = (await tracker.stats()).main;
    while (answers < main.datagramsIn - main.startupDropped || main.datagramsIn < count) {
      assert.ok(Date.now() < until, `answered ${answers} of ${main.datagramsIn - main.startupDropped} kept (${main.datagramsIn} of ${count} read)`);
      await sleep(20);
      main = (await tracker.stats()).main;
    }
    return { answers, main };
  } finally {
    client.close();
    await tracker.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('announces sent after the bind and before the tracker serves are all answered; none counted shardBusy', async () => {
  const { answers, main } = await sendWhileStarting(PADDED_ANNOUNCE, 50);
  assert.equal(main.datagramsIn, 50);
  assert.equal(main.shardBusy, 0);
  assert.equal(main.startupDropped, 0);
  assert.equal(answers, 50, 'every datagram the socket got was answered');
});

test('more early bytes than the dgram path keeps: the rest are counted startupDropped (never shardBusy), the kept ones answered', async () => {
  // 200 announces of 8 KiB while the tracker starts: 1.6 MiB, past the dgram path's 1 MiB
  // (and within the native path's receive buffer, where they wait)
  const big = JSON.stringify({ action: 'announce', pad: 'x'.repeat(8 * 1024) });
  const { answers, main } = await sendWhileStarting(big, 200, { maxDatagram: 16 * 1024 });
  assert.equal(main.datagramsIn, 200);
  assert.equal(main.shardBusy, 0);
  if (TEST_IO === 'dgram') assert.equal(main.startupDropped, 200 - Math.floor((1 << 20) / Buffer.byteLength(big)), 'past 1 MiB the dgram path drops, and counts');
  else assert.equal(main.startupDropped, 0, 'the native path leaves them in the kernel');
  assert.equal(answers, main.datagramsIn - main.startupDropped, 'every datagram kept was answered');
});
