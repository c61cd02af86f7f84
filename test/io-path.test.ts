// Which datagram I/O path serves, and the fallback: `--io native` (the sobani_udp
// addon, recvmmsg/sendmmsg), `--io dgram`, and `--io auto`, which uses the addon
// where it is built and otherwise warns once and uses dgram.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TEST_IO, WirePeer, withTracker } from './helpers/wire.js';
import { ROOT, runCli, runTracker } from './helpers/process.js';
import { freePort, httpGet } from './helpers/ops.js';
import { resolveConfig } from '../src/config.js';
import { openDatagramIo } from '../src/io/open-io.js';
import { createLogger } from '../src/log.js';
import { SEND_TO } from '../src/wire/frame.js';

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
    await new Promise((r) => setTimeout(r, 50)); // dgram reports a send's outcome asynchronously
    const c = io.counters();
    assert.deepEqual(c.sendErrors, { EACCES: 1 });
    assert.equal(c.datagramsOut, 1);
  } finally {
    await io.close();
  }
});
