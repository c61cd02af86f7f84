// Snapshots: sessions survive a restart into another shard count; a bad file
// costs one log line and an empty start, never a crash.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { startTracker, type Tracker } from '../src/tracker.js';
import type { Config } from '../src/config.js';
import { decodeSnapshot, SNAPSHOT_FORMAT, type SnapshotHeader } from '../src/ops/snapshot.js';
import type { SessionBlock } from '../src/wire/messages.js';
import { ADDR_BYTES, formatIp } from '../src/protocol/address.js';
import { addressBucket, bucketOfShareId, shardOfBucket } from '../src/routing.js';
import { TEST_IO, WirePeer } from './helpers/wire.js';
import { captureLogger } from './helpers/ops.js';

const ID_LENGTH = 12;
const dir = mkdtempSync(join(tmpdir(), 'sobani-snapshot-'));
let files = 0;
const newFile = (): string => join(dir, `s${files++}.snapshot`);

async function start(config: Partial<Config>): Promise<{ tracker: Tracker; lines: Record<string, unknown>[] }> {
  const { log, lines } = captureLogger();
  const tracker = await startTracker({ host: '127.0.0.1', port: 0, shards: 2, io: TEST_IO, ...config }, log);
  return { tracker, lines };
}

type Session = { key: string; id: string; dialect: number; ttlMs: number };
function sessionsOf(block: SessionBlock): Session[] {
  const ports = new DataView(block.port.buffer, block.port.byteOffset);
  const ttls = new DataView(block.ttlMs.buffer, block.ttlMs.byteOffset);
  return Array.from({ length: block.count }, (_, i) => {
    const ip = formatIp(block.addr, i * ADDR_BYTES);
    const port = ports.getUint16(i * 2);
    return { key: `${ip}:${port}`, id: Buffer.from(block.ids.subarray(i * ID_LENGTH, (i + 1) * ID_LENGTH)).toString('latin1'),
      dialect: block.dialect[i]!, ttlMs: ttls.getUint32(i * 4) };
  });
}

const restoreLine = (lines: Record<string, unknown>[]): Record<string, unknown>[] =>
  lines.filter((l) => /snapshot/.test(String(l.msg)) && l.msg !== 'snapshot written');

test('100 k sessions round-trip through a snapshot into another shard count, each landing in the shard its address routes to', async (t) => {
  const file = newFile();
  const a = await start({ shards: 3, snapshot: file });
  await a.tracker.fill(100_000);
  const filled = (await a.tracker.stats()).peers;
  assert.ok(filled >= 100_000);
  let at = performance.now();
  await a.tracker.close();
  const closeMs = performance.now() - at;
  const written = decodeSnapshot(readFileSync(file), ID_LENGTH);
  assert.equal(written.header.sessions, filled);
  assert.equal(written.header.parts, 3);
  assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp')), [], 'no temporary file left behind');

  at = performance.now();
  const b = await start({ shards: 2, snapshot: file });
  const startMs = performance.now() - at;
  assert.equal((await b.tracker.stats()).peers, filled);
  assert.equal(restoreLine(b.lines).length, 1);
  assert.equal(restoreLine(b.lines)[0]!.restored, filled);
  await b.tracker.close();
  t.diagnostic(`${filled} sessions: close+write ${closeMs.toFixed(0)} ms, start+restore ${startMs.toFixed(0)} ms, ${readFileSync(file).length} bytes`);

  // The second file holds the same sessions, split by the new shard count.
  const rewritten = decodeSnapshot(readFileSync(file), ID_LENGTH);
  assert.equal(rewritten.header.parts, 2);
  const before = new Map(written.blocks.flatMap(sessionsOf).map((s) => [s.key, s]));
  let n = 0;
  rewritten.blocks.forEach((block, shard) => {
    for (const s of sessionsOf(block)) {
      const old = before.get(s.key);
      assert.ok(old, s.key);
      assert.equal(s.id, old.id);
      assert.equal(s.dialect, old.dialect);
      assert.ok(s.ttlMs <= old.ttlMs && s.ttlMs > 0);
      assert.equal(bucketOfShareId(s.id), addressBucket(s.key.slice(0, s.key.lastIndexOf(':'))));
      assert.equal(shardOfBucket(bucketOfShareId(s.id), 2), shard);
      n++;
    }
  });
  assert.equal(n, filled);
});

test('a restored peer keeps pulsing without announcing, keeps its shareId and its override', async () => {
  const file = newFile();
  const a = await start({ shards: 2, snapshot: file });
  // The peer's socket stays open across the restart, and the tracker comes back on the same port.
  const target = { address: '127.0.0.1', port: a.tracker.addresses[0]!.port };
  const peer = await WirePeer.open(target);
  const other = await WirePeer.open(target);
  const id = await peer.announce();
  const over = await peer.request({ action: 'pulse', override: true, ip: '203.0.113.7', port: 4242, multiaddr: '/ip4/203.0.113.7/udp/4242' }, 'pulseReceived');
  assert.equal(over.data!.overriden, 'true');
  await a.tracker.close();

  const b = await start({ shards: 3, snapshot: file, port: target.port });
  try {
    const pulse = await peer.request({ action: 'pulse' }, 'pulseReceived');
    assert.equal(pulse.data!.status, '0');
    assert.equal(pulse.data!.shareId, id);
    await other.announce();
    const push = await other.request({ action: 'push', shareId: id }, 'pushReceived');
    assert.equal(push.data!.peeraddr, '203.0.113.7:4242');
    assert.equal(push.data!.multiaddr, '/ip4/203.0.113.7/udp/4242');
  } finally {
    peer.close();
    other.close();
    await b.tracker.close();
  }
});

async function expectSkipped(bytes: Buffer | null, reason: RegExp, config: Partial<Config> = {}): Promise<void> {
  const file = newFile();
  if (bytes !== null) writeFileSync(file, bytes);
  const { tracker, lines } = await start({ snapshot: file, ...config });
  try {
    assert.equal((await tracker.stats()).peers, 0);
    const said = restoreLine(lines);
    assert.equal(said.length, 1, JSON.stringify(said));
    assert.match(String(said[0]!.msg), reason);
    // and it serves
    const p = await WirePeer.open({ address: '127.0.0.1', port: tracker.addresses[0]!.port });
    await p.announce();
    p.close();
  } finally {
    await tracker.close();
  }
  assert.ok(existsSync(file), 'the shutdown write replaces it with a good one');
  assert.equal(decodeSnapshot(readFileSync(file), config.shareIdLength ?? ID_LENGTH).header.sessions, 1);
}

async function goodSnapshot(peers = 1000): Promise<Buffer> {
  const file = newFile();
  const { tracker } = await start({ snapshot: file });
  await tracker.fill(peers);
  await tracker.close();
  return readFileSync(file);
}

const packr = new Packr({ useRecords: false });
const reheader = (good: Buffer, change: Partial<SnapshotHeader>): Buffer => {
  let first = {} as SnapshotHeader;
  let headerLength = 0;
  packr.unpackMultiple(good, (value: unknown, _start?: number, end?: number) => { first = value as SnapshotHeader; headerLength = end!; return false; });
  return Buffer.concat([Buffer.from(packr.pack({ ...first, ...change })), good.subarray(headerLength)]);
};

test('a missing snapshot: one line, an empty start', () => expectSkipped(null, /no snapshot to restore yet/));

test('a corrupt snapshot: one line, an empty start', async () => {
  const good = await goodSnapshot();
  await expectSkipped(Buffer.from('this is not msgpack at all, just some text\n'), /snapshot skipped: not a sobani-tracker-snapshot file/);
  await expectSkipped(Buffer.alloc(0), /snapshot skipped: the file is empty/);
  const flipped = Buffer.from(good);
  // from the first part's first byte on (the header's length varies: version 3 may hold a session key)
  let headerEnd = 0;
  packr.unpackMultiple(good, (_v: unknown, _start?: number, end?: number) => { headerEnd = end!; return false; });
  for (let i = headerEnd; i < flipped.length; i += 97) flipped[i] = 0xc1; // 0xc1 is never valid msgpack
  await expectSkipped(flipped, /snapshot skipped: the file is (corrupt|truncated)/);
  await expectSkipped(reheader(good, { sessions: 5 }), /snapshot skipped: the file is corrupt: it holds 10\d\d sessions, its header says 5/);
});

test('a truncated snapshot: one line, an empty start', async () => {
  const good = await goodSnapshot();
  await expectSkipped(good.subarray(0, Math.floor(good.length / 2)), /snapshot skipped: the file is truncated/);
  await expectSkipped(good.subarray(0, 20), /snapshot skipped: (the file is truncated|not a sobani)/);
  // cut exactly between parts
  const { header, blocks } = decodeSnapshot(good, ID_LENGTH);
  const oneBlock = Buffer.concat([Buffer.from(packr.pack(header)), Buffer.from(packr.pack(blocks[0]))]);
  await expectSkipped(oneBlock, /snapshot skipped: the file is truncated: 1 of 2 parts/);
});

test('a snapshot from a future version, or with another shareId length: one line, an empty start', async () => {
  const good = await goodSnapshot();
  await expectSkipped(reheader(good, { version: 4 }), /snapshot skipped: it is format version 4, written by a newer sobani-tracker; this one reads version 3/);
  await expectSkipped(reheader(good, { version: 0 }), /snapshot skipped: format version 0 is not supported/);
  await expectSkipped(reheader(good, { format: 'something-else' }), new RegExp(`not a ${SNAPSHOT_FORMAT} file`));
  await expectSkipped(good, /snapshot skipped: its shareIds are 12 characters, this tracker's are 16/, { shareIdLength: 16 });
});

test('sessions whose ttl ran out while the tracker was down are dropped', async () => {
  const good = await goodSnapshot(100);
  const file = newFile();
  writeFileSync(file, reheader(good, { writtenAt: Date.now() - 301_000 }));
  const { tracker, lines } = await start({ snapshot: file });
  assert.equal((await tracker.stats()).peers, 0);
  const line = restoreLine(lines)[0]!;
  assert.equal(line.restored, 0);
  assert.ok((line.expired as number) >= 100);
  await tracker.close();
});

test('--snapshot-interval also writes the file while running', async () => {
  const file = newFile();
  const { tracker } = await start({ snapshot: file, snapshotInterval: 1 });
  try {
    const p = await WirePeer.open({ address: '127.0.0.1', port: tracker.addresses[0]!.port });
    await p.announce();
    p.close();
    // until a periodic write holds the session (every second; the bound only ends a failing test)
    let sessions = -1;
    const deadline = Date.now() + 60_000;
    while (sessions !== 1 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      if (existsSync(file)) sessions = decodeSnapshot(readFileSync(file), ID_LENGTH).header.sessions;
    }
    assert.equal(sessions, 1);
  } finally {
    await tracker.close();
  }
});

// test/fixtures/snapshot-v1.bin was written by the previous release (format version 1,
// commit b4a371a) from three clients: 127.0.90.1:40001 documented, proved, with a
// multiaddr override; 127.0.90.2:40002 legacy, kept alive; 127.0.90.3:40003 announced only.
const V1 = { documented: '8r2GTMpc2DJY', legacy: 'nifggXSOEzMb', unknown: 'pVckbsrAQ8K9' };

/**
 * A tracker restored from a fixture an earlier release wrote (only its clock moved:
 * the sessions are that release's bytes), its three sessions restored, and the
 * fixture's three clients at their own addresses.
 */
async function fromFixture(name: string, fn: (c: { documented: WirePeer; legacy: WirePeer; unknown: WirePeer; tracker: Tracker }) => Promise<void>): Promise<void> {
  const file = newFile();
  writeFileSync(file, reheader(readFileSync(new URL(`./fixtures/${name}`, import.meta.url)), { writtenAt: Date.now() }));
  const { tracker, lines } = await start({ snapshot: file });
  const target = { address: '127.0.0.1', port: tracker.addresses[0]!.port };
  try {
    assert.equal(restoreLine(lines)[0]!.restored, 3);
    const [documented, legacy, unknown] = await Promise.all([
      WirePeer.open(target, '127.0.90.1', 40001), WirePeer.open(target, '127.0.90.2', 40002), WirePeer.open(target, '127.0.90.3', 40003)]);
    try {
      await fn({ documented, legacy, unknown, tracker });
    } finally {
      for (const p of [documented, legacy, unknown]) p.close();
    }
  } finally {
    await tracker.close();
  }
}

test('a snapshot written by the previous release (format version 1) restores every session as it was', () =>
  fromFixture('snapshot-v1.bin', async ({ documented, legacy, unknown, tracker }) => {
    assert.equal((await tracker.stats()).peers, 3);
    // the proved documented session gets its full pulseReceived, and push still reports its multiaddr
    const pulse = await documented.request({ action: 'pulse' }, 'pulseReceived');
    assert.equal(pulse.data!.shareId, V1.documented);
    const pushed = await legacy.request({ action: 'push', shareId: V1.documented }, 'pushed');
    assert.equal(pushed.data!.peerShareId, V1.documented);
    const income = await documented.next('income');
    assert.equal(income.data!.peerShareId, V1.legacy);
    const pushReceived = await unknown.request({ action: 'push', shareId: V1.documented }, 'pushReceived');
    assert.equal(pushReceived.data!.multiaddr, '/ip4/1.2.3.4/udp/5');
    // the legacy session had kept alive: a new announce from its address replaces it
    const renewed = await legacy.request('{"action":"announce"}', 'announceReceived');
    assert.notEqual(renewed.data!.shareId, V1.legacy);
    // the session that had only announced gets its shareId again, as any retried announce
    const retried = await unknown.request('{"action":"announce"}', 'announceReceived');
    assert.equal(retried.data!.shareId, V1.unknown);
  }));

// test/fixtures/snapshot-v2.bin was written by the release before local candidates (format
// version 2, commit 3db787c) from three clients: 127.0.90.1:40001 documented, nat
// endpoint-independent, proved, with a multiaddr override; 127.0.90.2:40002 legacy, kept
// alive; 127.0.90.3:40003 announced only.
const V2 = { documented: '8rD2daVTzk5K', legacy: 'nighxyhaSQDJ', unknown: 'pV83T1IyLcTm' };

test('a snapshot written by the release before local candidates (format version 2) restores every session as it was', () =>
  fromFixture('snapshot-v2.bin', async ({ documented, legacy, unknown }) => {
    const pulse = await documented.request({ action: 'pulse' }, 'pulseReceived');
    assert.equal(pulse.data!.shareId, V2.documented);
    const pushed = await legacy.request({ action: 'push', shareId: V2.documented }, 'pushed');
    assert.equal(pushed.data!.peerShareId, V2.documented);
    assert.equal((await documented.next('income')).data!.peerShareId, V2.legacy);
    // the nat it reported and its override survive; no local candidates (version 2 had none)
    await unknown.request({ action: 'pulse', nat: 'endpoint-independent', local: ['10.0.90.3:40003'] }, 'pulseReceived');
    const pushReceived = await unknown.request({ action: 'push', shareId: V2.documented }, 'pushReceived');
    assert.equal(pushReceived.data!.multiaddr, '/ip4/1.2.3.4/udp/5');
    assert.equal(pushReceived.data!.nat, 'endpoint-independent');
    assert.equal(pushReceived.data!.local, undefined);
    const renewed = await legacy.request('{"action":"announce"}', 'announceReceived');
    assert.notEqual(renewed.data!.shareId, V2.legacy);
  }));

test('local candidates survive a restart: the restored session still shows them to its paired peer', async () => {
  const file = newFile();
  const a = await start({ snapshot: file, shards: 3 });
  const target = (t: Tracker) => ({ address: '127.0.0.1', port: t.addresses[0]!.port });
  const first = await WirePeer.open(target(a.tracker), '127.0.91.1', 40011);
  const r = await first.request({ action: 'announce', local: ['10.0.91.1:40011', '[2001:db8::91]:40011'], pad: 'x'.repeat(18) }, 'announceReceived');
  const id = r.data!.shareId as string;
  await first.request({ action: 'pulse', shareId: id }, 'pulseReceived');
  first.close();
  await a.tracker.close();
  const written = decodeSnapshot(readFileSync(file), ID_LENGTH);
  assert.equal(written.header.version, 3);
  assert.deepEqual(written.blocks.flatMap((b) => b.local.map(([, l]) => l)), [['10.0.91.1:40011', '[2001:db8::91]:40011']]);

  const b = await start({ snapshot: file, shards: 2 });
  try {
    const again = await WirePeer.open(target(b.tracker), '127.0.91.1', 40011);
    const peer = await WirePeer.open(target(b.tracker), '127.0.91.2', 40012);
    const rp = await peer.request({ action: 'announce', local: ['10.0.91.2:40012'], pad: 'x'.repeat(18) }, 'announceReceived');
    await peer.request({ action: 'pulse', shareId: rp.data!.shareId }, 'pulseReceived');
    const pushed = await peer.request({ action: 'push', shareId: id }, 'pushReceived');
    assert.deepEqual(pushed.data!.local, ['10.0.91.1:40011', '[2001:db8::91]:40011']);
    assert.deepEqual((await again.next('income')).data!.local, ['10.0.91.2:40012']);
    again.close(); peer.close();
  } finally {
    await b.tracker.close();
  }
});

test('a version 3 snapshot whose local candidates are not ones this tracker would keep: one line, an empty start', async () => {
  const good = await goodSnapshot();
  const { header, blocks } = decodeSnapshot(good, ID_LENGTH);
  const bad = (local: unknown): Buffer => Buffer.concat([Buffer.from(packr.pack(header)),
    ...blocks.map((b, i) => Buffer.from(packr.pack(i === 0 ? { ...b, local } : b)))]);
  await expectSkipped(bad([[0, ['127.0.0.1:5']]]), /snapshot skipped: the file is corrupt: part 0 is not a session block/);
  await expectSkipped(bad([[0, ['10.0.0.1:5', '10.0.0.1:5']]]), /part 0 is not a session block/);
  await expectSkipped(bad([[-1, ['10.0.0.1:5']]]), /part 0 is not a session block/);
  await expectSkipped(bad(undefined), /part 0 is not a session block/);
});
