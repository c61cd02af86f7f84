// Which datagram I/O path serves, and the fallback: `--io native` (the sobani_udp
// addon, recvmmsg/sendmmsg), `--io dgram`, and `--io auto`, which uses the addon
// where it is built and otherwise warns once and uses dgram.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXPECT_MS, TEST_IO, WirePeer, withTracker } from './helpers/wire.js';
import { ROOT, runCli, runTracker } from './helpers/process.js';
import { freePort, httpGet } from './helpers/ops.js';
import { resolveConfig } from '../src/config.js';
import { openDatagramIo } from '../src/io/open-io.js';
import { createLogger } from '../src/log.js';
import { SEND_TO } from '../src/wire/frame.js';
import type { Batch, BatchTarget, DatagramIo } from '../src/io/datagram-io.js';
import dgram from 'node:dgram';

/** Plays the dispatcher for one DatagramIo: one batch per shard, kept (never shipped) so a test can look at it. */
class KeepingTarget implements BatchTarget {
  readonly batches: Batch[];
  constructor(io: DatagramIo, shards: number) { this.batches = Array.from({ length: shards }, () => io.newBatch()); }
  batchFor(shard: number, full: boolean): Batch | null { return full ? null : this.batches[shard]!; }
  received(): void {}
}

async function udpClient(type: 'udp4' | 'udp6', address: string): Promise<{ socket: dgram.Socket; got: Buffer[] }> {
  const socket = dgram.createSocket({ type, recvBufferSize: 1 << 20 });
  const got: Buffer[] = [];
  socket.on('error', () => {});
  socket.on('message', (m) => got.push(m));
  await new Promise<void>((r) => socket.bind(0, address, r));
  return { socket, got };
}

const until = async (what: string, done: () => boolean, ms = EXPECT_MS): Promise<void> => {
  const end = Date.now() + ms;
  while (!done()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

/** One whole turn of the event loop, its poll phase included: whatever was readable then has been read. */
const loopTurn = (): Promise<void> => new Promise((r) => setTimeout(() => setImmediate(r), 0));

/** Bytes the kernel holds, unread, in the receive buffer of the UDP socket bound to 127.0.0.1:port (/proc/net/udp rx_queue). */
function kernelQueued(port: number): number {
  const local = `${os.endianness() === 'LE' ? '0100007F' : '7F000001'}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const line of readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === local) return parseInt(f[4]!.split(':')[1]!, 16);
  }
  return 0;
}

const sent = (socket: dgram.Socket, payload: string, port: number, address: string): Promise<void> =>
  new Promise((resolve, reject) => socket.send(payload, port, address, (e) => (e ? reject(e) : resolve())));

test(`the path this run asks for (SOBANI_IO=${TEST_IO}) is the one that serves`, () =>
  withTracker({ shards: 2 }, async (tracker, target) => {
    if (TEST_IO !== 'auto') assert.equal(tracker.io, TEST_IO);
    const p = await WirePeer.open(target);
    await p.announce();
    // a burst sent in one turn of this (shared) event loop; small enough for the
    // client's own default receive buffer to hold every reply
    for (let i = 0; i < 150; i++) p.send('{"action":"pulse"}');
    for (let i = 0; i < 150; i++) await p.next('pulseReceived');
    const { main } = await tracker.stats();
    assert.ok(main.datagramsIn >= 152 && main.datagramsOut >= 152, JSON.stringify(main));
    const passes = (main as unknown as { receivePasses?: number }).receivePasses;
    if (tracker.io === 'native') {
      // recvmmsg took the burst many datagrams at a time: JS ran once per pass, not once per datagram
      assert.ok(passes !== undefined && passes > 0 && passes <= 20, `${passes} receive passes for ${main.datagramsIn} datagrams`);
    } else {
      assert.equal(passes, undefined, 'dgram has no receive passes');
    }
    p.close();
  }));

test('--io native and --io dgram each serve, and say so in the start-up line and in /metrics', { skip: TEST_IO === 'dgram' && 'SOBANI_IO=dgram: the native addon is not wanted' }, async () => {
  for (const io of ['native', 'dgram'] as const) {
    const metricsPort = await freePort();
    const t = await runTracker(['--host', '127.0.0.1', '--port', '0', '--shards', '1', '--io', io, '--metrics-port', String(metricsPort)]);
    try {
      const start = JSON.parse(t.output().split('\n').find((l) => l.includes('listening'))!) as { io: string };
      assert.equal(start.io, io);
      const p = await WirePeer.open({ address: '127.0.0.1', port: t.port });
      await p.announce();
      p.close();
      const metrics = (await httpGet(metricsPort, '/metrics')).body;
      assert.match(metrics, new RegExp(`^sobani_io_path\\{path="${io}"\\} 1$`, 'm'));
      assert.match(metrics, /^sobani_udp_datagrams_received_total [1-9]/m);
    } finally {
      t.child.kill('SIGTERM');
      await t.exited;
    }
  }
});

test('where the addon was not built: auto warns once and serves over dgram; --io native refuses to start', async () => {
  // a checkout whose install could not build the addon and that has no prebuild: the
  // sources and node_modules (node-gyp-build), no build/, no prebuilds/
  const dir = mkdtempSync(join(tmpdir(), 'sobani-no-addon-'));
  try {
    cpSync(join(ROOT, 'src'), join(dir, 'src'), { recursive: true });
    cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    const t = await runTracker(['--host', '127.0.0.1', '--port', '0', '--shards', '1', '--io', 'auto'], {}, dir);
    try {
      const p = await WirePeer.open({ address: '127.0.0.1', port: t.port });
      await p.announce();
      p.close();
    } finally {
      t.child.kill('SIGTERM');
      await t.exited;
    }
    const lines = t.output().trim().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string; io?: string });
    const warnings = lines.filter((l) => l.level === 40);
    assert.equal(warnings.length, 1, 'one warning');
    assert.match(warnings[0]!.msg, /native UDP path is unavailable.*sobani_udp addon is not there for \S+: no prebuild/);
    assert.equal(lines.find((l) => l.msg === 'sobani-tracker listening')!.io, 'dgram');
    const refused = await runCli(['--host', '127.0.0.1', '--port', '0', '--io', 'native'], {}, dir);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /--io native: the sobani_udp addon is not there/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('another addon in build/Release/ (a stale bench build) is refused, not loaded as the tracker\'s', { skip: TEST_IO === 'dgram' && 'SOBANI_IO=dgram: the native addons are not wanted' }, async () => {
  // node-gyp-build loads the first .node file it finds in build/Release/, whatever its name
  const dir = mkdtempSync(join(tmpdir(), 'sobani-wrong-addon-'));
  try {
    cpSync(join(ROOT, 'src'), join(dir, 'src'), { recursive: true });
    cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    cpSync(join(ROOT, 'bench', 'native', 'build', 'Release', 'sobani_bench.node'), join(dir, 'build', 'Release', 'sobani_bench.node'));
    const refused = await runCli(['--host', '127.0.0.1', '--port', '0', '--io', 'native'], {}, dir);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /--io native: \S+build\/Release\/sobani_bench\.node is not the sobani_udp addon/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a send the kernel refuses is counted by reason, never thrown', async () => {
  const config = resolveConfig({ host: '127.0.0.1', port: 0, shards: 1, io: TEST_IO });
  const io = await openDatagramIo(config, createLogger('silent'));
  try {
    // a reply batch of SEND_TO records (wire/frame.ts): one the kernel refuses (broadcast
    // without SO_BROADCAST: EACCES), one it accepts
    const record = (address: string, payload: string): Buffer => {
      const head = Buffer.from([SEND_TO, 0, 0, 9, address.length]);
      const len = Buffer.alloc(2); len.writeUInt16BE(Buffer.byteLength(payload));
      return Buffer.concat([head, Buffer.from(address, 'latin1'), len, Buffer.from(payload)]);
    };
    const out = Buffer.concat([record('255.255.255.255', '{"x":1}'), record('127.0.0.1', '{"x":2}')]);
    io.sendReplies(io.newBatch(), out);
    // dgram reports a send's outcome asynchronously: until both outcomes are counted
    const outcomes = (): number => io.counters().datagramsOut + Object.values(io.counters().sendErrors).reduce((n, x) => n + x, 0);
    await until('both sends\' outcomes', () => outcomes() >= 2);
    const c = io.counters();
    assert.deepEqual(c.sendErrors, { EACCES: 1 });
    assert.equal(c.datagramsOut, 1);
  } finally {
    await io.close();
  }
});

test('after stopReceiving() nothing more reaches a batch: native leaves datagrams in the kernel, dgram counts what it still reads (droppedAtStop)', async () => {
  const io = await openDatagramIo(resolveConfig({ host: '127.0.0.1', port: 0, shards: 1, io: TEST_IO }), createLogger('silent'));
  const c = await udpClient('udp4', '127.0.0.1');
  try {
    const target = new KeepingTarget(io, 1);
    io.start(target);
    c.socket.send('before', io.addresses[0]!.port, '127.0.0.1');
    await until('the first datagram', () => target.batches[0]!.count === 1);
    io.stopReceiving();
    const port = io.addresses[0]!.port;
    for (let i = 0; i < 3; i++) await sent(c.socket, 'after', port, '127.0.0.1');
    if (io.path === 'dgram') {
      // dgram reads on: until it has counted them
      await until('the 3 datagrams read and dropped', () => io.counters().datagramsIn >= 4);
    } else {
      // native: they are in the kernel's buffer, and the loop has polled since; they stay there
      await until('the 3 datagrams in the kernel\'s buffer', () => kernelQueued(port) > 0);
      await loopTurn();
      assert.ok(kernelQueued(port) > 0, 'still in the kernel\'s buffer');
    }
    const counters = io.counters();
    assert.equal(target.batches[0]!.count, 1);
    if (io.path === 'dgram') assert.deepEqual([counters.datagramsIn, counters.droppedAtStop], [4, 3]);
    else assert.deepEqual([counters.datagramsIn, counters.droppedAtStop], [1, 0]);
  } finally {
    c.socket.close();
    await io.close();
  }
});

test('a REPLY naming an index past its batch\'s count is not sent (malformed): the reused batch still holds an earlier batch\'s source there', async () => {
  const io = await openDatagramIo(resolveConfig({ host: '127.0.0.1', port: 0, shards: 1, io: TEST_IO }), createLogger('silent'));
  const a = await udpClient('udp4', '127.0.13.1');
  const b = await udpClient('udp4', '127.0.13.2');
  try {
    const target = new KeepingTarget(io, 1);
    const batch = target.batches[0]!;
    io.start(target);
    const port = io.addresses[0]!.port;
    a.socket.send('a1', port, '127.0.0.1');
    await until('a1', () => batch.count === 1);
    b.socket.send('b1', port, '127.0.0.1');
    await until('b1', () => batch.count === 2);
    // shipped and answered; the dispatcher recycles the batch for the next one
    batch.len = 0;
    batch.count = 0;
    a.socket.send('a2', port, '127.0.0.1');
    await until('a2', () => batch.count === 1);
    const reply = (index: number, payload: string): Buffer => {
      const r = Buffer.alloc(5 + payload.length);
      r[0] = 0; r.writeUInt16BE(index, 1); r.writeUInt16BE(payload.length, 3); r.write(payload, 5);
      return r;
    };
    io.sendReplies(batch, Buffer.concat([reply(1, 'not for b'), reply(0, 'for a')]));
    await until('the reply to a', () => a.got.length === 1);
    // a barrier: what the socket sent b before this has arrived before it
    io.sendReplies(io.newBatch(), replyBatch([0, '127.0.13.2', b.socket.address().port, 'barrier']));
    await until('the barrier at b', () => b.got.length > 0 && b.got.at(-1)!.toString() === 'barrier');
    assert.equal(a.got[0]!.toString(), 'for a');
    assert.deepEqual(b.got.map(String), ['barrier'], 'b was in an earlier batch: nothing for it but the barrier');
    assert.equal(io.counters().sendErrors.malformed, 1);
  } finally {
    a.socket.close();
    b.socket.close();
    await io.close();
  }
});

test('a record that runs past the end of its reply batch is not sent, nor read past the end: counted malformed, what came before it is sent', async () => {
  const io = await openDatagramIo(resolveConfig({ host: '127.0.0.1', port: 0, shards: 1, io: TEST_IO }), createLogger('silent'));
  const a = await udpClient('udp4', '127.0.13.3');
  try {
    const target = new KeepingTarget(io, 1);
    const batch = target.batches[0]!;
    io.start(target);
    a.socket.send('a1', io.addresses[0]!.port, '127.0.0.1');
    await until('a1', () => batch.count === 1);
    const good = replyBatch([0, 'ok']);
    const to = replyBatch([0, '127.0.13.3', a.socket.address().port, 'sent-to']);
    const cut = [
      good.subarray(0, 3), // a REPLY header cut short
      Buffer.concat([good.subarray(0, 3), Buffer.from([0xff, 0xff]), Buffer.from('short')]), // a REPLY whose length runs past the end
      to.subarray(0, 4), // a SEND_TO header cut short
      to.subarray(0, 5 + 10 + 1), // its address and length cut
      Buffer.concat([to.subarray(0, 5 + 10), Buffer.from([0xff, 0xff]), Buffer.from('short')]), // its payload runs past the end
      Buffer.from([7, 0, 0, 0, 0, 0]), // no such kind
    ];
    for (const [i, c] of cut.entries()) {
      assert.doesNotThrow(() => io.sendReplies(batch, Buffer.concat([good, c])), `case ${i}`);
      await until(`the good record of case ${i}`, () => a.got.length === i + 1);
    }
    // a barrier: anything the socket sent before this has arrived before it
    io.sendReplies(io.newBatch(), to);
    await until('the barrier', () => a.got.length > 0 && a.got.at(-1)!.toString() === 'sent-to');
    assert.deepEqual(a.got.map(String), [...cut.map(() => 'ok'), 'sent-to'], 'each good record was sent, nothing of the cut ones');
    assert.equal(io.counters().sendErrors.malformed, cut.length);
  } finally {
    a.socket.close();
    await io.close();
  }
});

// ---- several bound addresses on one DatagramIo (what a STUN server needs) ----

/** A reply batch (wire/frame.ts) from records: [index, payload] is a REPLY, [socket, address, port, payload] a SEND_TO. */
function replyBatch(...records: ([number, string] | [number, string, number, string])[]): Buffer {
  return Buffer.concat(records.map((r) => {
    if (r.length === 2) {
      const [index, payload] = r;
      const b = Buffer.alloc(5 + payload.length);
      b[0] = 0; b.writeUInt16BE(index, 1); b.writeUInt16BE(payload.length, 3); b.write(payload, 5);
      return b;
    }
    const [socket, address, port, payload] = r;
    const b = Buffer.alloc(7 + address.length + payload.length);
    b[0] = SEND_TO; b[1] = socket; b.writeUInt16BE(port, 2); b[4] = address.length; b.write(address, 5, 'latin1');
    b.writeUInt16BE(payload.length, 5 + address.length); b.write(payload, 7 + address.length);
    return b;
  }));
}

/** Socket byte, source port and payload of each request record of a batch. */
function requests(batch: Batch): { socket: number; port: number; payload: string }[] {
  const out = [];
  for (let o = 0; o < batch.len;) {
    const alen = batch.buf[o + 5]!;
    const len = batch.buf.readUInt16BE(o + 6 + alen);
    out.push({ socket: batch.buf[o]!, port: batch.buf.readUInt16BE(o + 1), payload: batch.buf.toString('latin1', o + 8 + alen, o + 8 + alen + len) });
    o += 8 + alen + len;
  }
  return out;
}

async function udpClientFrom(address: string): Promise<{ socket: dgram.Socket; got: { text: string; fromPort: number }[]; port: number }> {
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  const got: { text: string; fromPort: number }[] = [];
  socket.on('error', () => {});
  socket.on('message', (m, r) => got.push({ text: m.toString(), fromPort: r.port }));
  await new Promise<void>((r) => socket.bind(0, address, r));
  return { socket, got, port: socket.address().port };
}

test('two bound addresses on one DatagramIo: a request carries its socket\'s index, its REPLY leaves from that socket, a SEND_TO from the socket it names', async () => {
  const config = resolveConfig({ host: '127.0.0.1', port: 0, shards: 1, io: TEST_IO });
  const io = await openDatagramIo(config, createLogger('silent'), [{ host: '127.0.0.1', port: 0 }]);
  const a = await udpClientFrom('127.0.14.1');
  const b = await udpClientFrom('127.0.14.2');
  try {
    assert.equal(io.addresses.length, 2);
    assert.deepEqual(io.socketTypes, ['udp4', 'udp4']);
    const [port0, port1] = io.addresses.map((x) => x.port) as [number, number];
    assert.notEqual(port0, port1);
    const target = new KeepingTarget(io, 1);
    const batch = target.batches[0]!;
    io.start(target);
    a.socket.send('a to socket 1', port1, '127.0.0.1');
    await until('a\'s request', () => batch.count === 1);
    b.socket.send('b to socket 0', port0, '127.0.0.1');
    await until('b\'s request', () => batch.count === 2);
    assert.deepEqual(requests(batch), [
      { socket: 1, port: a.port, payload: 'a to socket 1' },
      { socket: 0, port: b.port, payload: 'b to socket 0' },
    ]);
    io.sendReplies(batch, replyBatch(
      [0, 'reply to a'], [1, 'reply to b'],
      [1, '127.0.14.2', b.port, 'to b from socket 1'], [0, '127.0.14.1', a.port, 'to a from socket 0'],
      [7, '127.0.14.1', a.port, 'from no such socket'],
    ));
    await until('the replies', () => a.got.length === 2 && b.got.length === 2);
    // a barrier from each socket: what either sent a before this has arrived before it
    io.sendReplies(io.newBatch(), replyBatch([0, '127.0.14.1', a.port, 'barrier'], [1, '127.0.14.1', a.port, 'barrier']));
    await until('the barriers at a', () => a.got.filter((g) => g.text === 'barrier').length === 2);
    const seen = (c: typeof a) => c.got.map((g) => `${g.text} @${g.fromPort === port0 ? 0 : g.fromPort === port1 ? 1 : g.fromPort}`).sort();
    assert.deepEqual(seen(a), ['barrier @0', 'barrier @1', 'reply to a @1', 'to a from socket 0 @0']);
    assert.deepEqual(seen(b), ['reply to b @0', 'to b from socket 1 @1']);
    assert.deepEqual(io.counters().sendErrors, { malformed: 1 });
  } finally {
    a.socket.close();
    b.socket.close();
    await io.close();
  }
});

test('socket 0 on "::" (dual-stack) and socket 1 on 127.0.0.1: each receives and sends with its own family', async () => {
  const config = resolveConfig({ host: '::', port: 0, shards: 2, io: TEST_IO });
  const io = await openDatagramIo(config, createLogger('silent'), [{ host: '127.0.0.1', port: 0 }]);
  const v4 = await udpClientFrom('127.0.15.1');
  const v6 = await udpClientFrom('::1');
  try {
    assert.deepEqual(io.socketTypes, ['udp6', 'udp4']);
    const [port0, port1] = io.addresses.map((x) => x.port) as [number, number];
    const target = new KeepingTarget(io, 2);
    io.start(target);
    v4.socket.send('v4 to socket 0', port0, '127.0.0.1');
    v4.socket.send('v4 to socket 1', port1, '127.0.0.1');
    v6.socket.send('v6 to socket 0', port0, '::1');
    await until('three requests', () => target.batches.reduce((n, x) => n + x.count, 0) === 3);
    for (const [shard, batch] of target.batches.entries()) {
      const replies = requests(batch).map((_, i): [number, string] => [i, `reply ${shard}/${i}`]);
      if (replies.length > 0) io.sendReplies(batch, replyBatch(...replies));
    }
    await until('the replies', () => v4.got.length === 2 && v6.got.length === 1);
    assert.deepEqual(v4.got.map((g) => g.fromPort).sort(), [port0, port1].sort(), 'each reply from the socket its request came in on');
    assert.equal(v6.got[0]!.fromPort, port0);
    // an IPv6 destination cannot be reached from the IPv4 socket: counted, not thrown
    const before = Object.values(io.counters().sendErrors).reduce((n, x) => n + x, 0);
    io.sendReplies(io.newBatch(), replyBatch([1, '::1', v6.port, 'v6 from socket 1'], [0, '::1', v6.port, 'v6 from socket 0']));
    await until('the SEND_TO from socket 0', () => v6.got.length === 2);
    await until('the refused one counted', () => Object.values(io.counters().sendErrors).reduce((n, x) => n + x, 0) === before + 1);
    // a barrier from socket 0 (socket 1, IPv4, cannot reach v6 at all)
    io.sendReplies(io.newBatch(), replyBatch([0, '::1', v6.port, 'barrier']));
    await until('the barrier at v6', () => v6.got.some((g) => g.text === 'barrier'));
    assert.equal(v6.got.length, 3);
    assert.deepEqual(v6.got.filter((g) => g.text.startsWith('v6 from')).map((g) => [g.text, g.fromPort]), [['v6 from socket 0', port0]]);
  } finally {
    v4.socket.close();
    v6.socket.close();
    await io.close();
  }
});

test('extra endpoints: at most 3; one that cannot be bound fails the whole open and leaves nothing bound', async () => {
  const config = resolveConfig({ host: '127.0.0.1', port: 0, shards: 1, io: TEST_IO });
  const log = createLogger('silent');
  const any = { host: '127.0.0.1', port: 0 };
  await assert.rejects(openDatagramIo(config, log, [any, any, any, any]), RangeError);
  const taken = await udpClientFrom('127.0.0.1');
  const primary = await udpClientFrom('127.0.0.1');
  const primaryPort = primary.port;
  await new Promise<void>((r) => primary.socket.close(r)); // free a moment ago: the open must bind it, then give it back
  try {
    await assert.rejects(openDatagramIo({ ...config, port: primaryPort }, log, [any, { host: '127.0.0.1', port: taken.port }]),
      (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE');
    const again = await openDatagramIo({ ...config, port: primaryPort }, log, [any, any, any]);
    assert.equal(again.addresses.length, 4);
    assert.equal(again.addresses[0]!.port, primaryPort, 'the failed open released socket 0');
    await again.close();
  } finally {
    taken.socket.close();
  }
});
