// A full send buffer on the native path: the addon queues what the kernel refused
// (bounded: 4096 datagrams, 2 MiB), watches the socket for writable and drains the
// queue then, instead of trying every datagram in turn and failing each. Real
// pressure: the sender sits behind a slow link (network namespaces, a tbf qdisc,
// see test/helpers/netns.ts) with a small socket send buffer, and a receiver on
// the far side counts what arrives. Needs root, `ip` and `tc`; skips otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { ROOT } from './helpers/process.js';
import { SLOW_LINK, createSlowLink, slowLinkUnavailableReason } from './helpers/netns.js';
import { TEST_IO } from './helpers/wire.js';

const UDP_ADDON = path.join(ROOT, 'build', 'Release', 'sobani_udp.node');
const skip = TEST_IO === 'dgram' ? 'SOBANI_IO=dgram: the native addon is not wanted' : slowLinkUnavailableReason() ?? false;

interface Stats { datagramsOut: number; sendCalls: number; sendBlockedCalls: number; sendQueued: number; sendQueueDepth: number; sendErrors: Record<string, number> }
interface Burst {
  attempted: number; sentNow: number; afterFirst: Stats; end: Stats;
  loopback?: { sentNow: number; queueDepthThen: number; blockedCalls: number; received: number };
}

/**
 * A dgram socket in `ns` on SLOW_LINK.rx that keeps the distinct sequence numbers
 * it gets, and counts datagrams whose bytes are not what send-burst.ts wrote.
 */
async function receiver(ns: string): Promise<{ port: number; count: () => Promise<{ distinct: number; damaged: number }>; stop: () => void }> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', `
    const s = require('node:dgram').createSocket({ type: 'udp4', recvBufferSize: 16 << 20 });
    const seen = new Set();
    let damaged = 0;
    s.on('message', (m) => {
      const text = m.toString('latin1');
      const seq = Number(text.slice(1, text.indexOf('.')));
      const fill = 97 + (seq % 26);
      if (text[0] !== '#' || !Number.isInteger(seq) || m.subarray(text.indexOf('.') + 1).some((b) => b !== fill)) damaged++;
      else seen.add(seq);
    });
    s.bind(0, '${SLOW_LINK.rx}', () => console.log(s.address().port));
    require('node:readline').createInterface({ input: process.stdin })
      .on('line', () => console.log(JSON.stringify({ distinct: seen.size, damaged })));`], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<string> => String((await lines.next()).value);
  const port = Number(await next());
  return {
    port,
    count: async () => { child.stdin.write('\n'); return JSON.parse(await next()) as { distinct: number; damaged: number }; },
    stop: () => child.kill(),
  };
}

/** Runs send-burst.ts in the link's sending namespace against a receiver in the other; returns its stats and what arrived. */
async function burst(spec: { batches: number; perBatch: number; payload: number; everyMs: number; loopback?: number }): Promise<{ b: Burst; received: number; damaged: number }> {
  const link = createSlowLink('16mbit');
  const rx = await receiver(link.ns.rx);
  try {
    // 32 KiB asked (64 KiB granted) of send buffer: a few dozen datagrams fill it
    const full = { ...spec, host: SLOW_LINK.tx, to: SLOW_LINK.rx, port: rx.port, sendBufferSize: 32768 };
    // the bound only ends a hung child (send-burst.ts waits for its queue to drain, 2 minutes at most)
    const r = spawnSync('ip', ['netns', 'exec', link.ns.tx, process.execPath, '--import', 'tsx', 'test/helpers/send-burst.ts', UDP_ADDON, JSON.stringify(full)],
      { cwd: ROOT, encoding: 'utf8', timeout: 5 * 60_000 });
    assert.equal(r.status, 0, `${r.signal ?? ''} ${r.stderr}`);
    const b = JSON.parse(r.stdout) as Burst;
    // what the kernel took is at most a send buffer's worth from the far side (~30 ms at this
    // rate): until the receiver has it all, however long it takes to read (the bound only ends
    // a failing test, where a datagram was lost)
    const overLink = b.end.datagramsOut - (b.loopback?.sentNow ?? 0);
    let got = await rx.count();
    const deadline = Date.now() + 60_000;
    while (got.distinct + got.damaged < overLink && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 20));
      got = await rx.count();
    }
    return { b, received: got.distinct, damaged: got.damaged };
  } finally {
    rx.stop();
    link.destroy();
  }
}

/** Every datagram arrived whole, or was counted as dropped; nothing else failed. */
function assertAccounted({ b, received, damaged }: { b: Burst; received: number; damaged: number }): void {
  const e = b.end;
  assert.equal(damaged, 0, 'no datagram arrived damaged');
  assert.equal(received, e.datagramsOut, 'every datagram the kernel took arrived');
  assert.equal(e.sendQueueDepth, 0);
  assert.equal(e.datagramsOut + (e.sendErrors.queueFull ?? 0), b.attempted, `sent ${e.datagramsOut} + dropped ${JSON.stringify(e.sendErrors)} of ${b.attempted}`);
  assert.deepEqual(Object.keys(e.sendErrors).filter((k) => k !== 'queueFull'), [], 'nothing else failed');
  assert.ok(e.sendErrors.queueFull! > 0, 'the burst was larger than the queue');
}

test('a burst of 6 x 1024 replies against a full send buffer: queued, drained when writable, dropped past 4096 (counted); 1 failing syscall for the first batch', { skip }, async () => {
  const r = await burst({ batches: 6, perBatch: 1024, payload: 200, everyMs: 0 });
  assertAccounted(r);
  const { afterFirst, end } = r.b;
  assert.equal(end.sendQueued, 4096, 'the queue held 4096 datagrams');
  assert.equal(end.sendErrors.queueFull, r.b.attempted - end.datagramsOut);
  // before the queue: one failing syscall per datagram the kernel refused (~850 for this batch)
  assert.ok(afterFirst.sendBlockedCalls >= 1 && afterFirst.sendBlockedCalls <= 2, `first batch: ${afterFirst.sendBlockedCalls} failing syscalls`);
  assert.equal(afterFirst.sendQueueDepth + afterFirst.datagramsOut, 1024, 'what was not sent waits');
  // draining: one refusal per writable event, each after many datagrams went out
  assert.ok(end.sendBlockedCalls <= end.datagramsOut / 8, `${end.sendBlockedCalls} failing syscalls for ${end.datagramsOut} datagrams`);
});

test('batches of 1400-byte replies while the queue drains: its 2 MiB bound holds, its rings wrap, every datagram arrives whole or is counted', { skip }, async () => {
  const r = await burst({ batches: 16, perBatch: 256, payload: 1400, everyMs: 10 });
  assertAccounted(r);
  const { end } = r.b;
  assert.ok(end.sendQueued > Math.floor((2 << 20) / 1400), `${end.sendQueued} queued in all: more than the queue holds at once, so it wrapped`);
  assert.ok(end.sendBlockedCalls <= end.datagramsOut / 4, `${end.sendBlockedCalls} failing syscalls for ${end.datagramsOut} datagrams`);
});

test('the send queue is per socket: while socket 0 waits for the slow link, socket 1 (on lo) sends at once', { skip }, async () => {
  const r = await burst({ batches: 1, perBatch: 1024, payload: 200, everyMs: 0, loopback: 500 });
  const { end } = r.b;
  const lo = r.b.loopback!;
  assert.equal(r.damaged, 0);
  assert.equal(end.sendQueueDepth, 0);
  assert.deepEqual(end.sendErrors, {}, 'the queue held all of socket 0\'s');
  assert.equal(r.received, 1024, 'everything socket 0 queued arrived over the slow link');
  assert.equal(end.datagramsOut, 1024 + 500);
  assert.ok(lo.queueDepthThen > 0, 'socket 0 had datagrams waiting');
  assert.equal(lo.sentNow, 500, 'socket 1 sent everything at once');
  assert.equal(lo.blockedCalls, 0);
  assert.equal(lo.received, 500);
});
