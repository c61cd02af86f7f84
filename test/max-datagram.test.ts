// The largest request: maxDatagram is capped so that any request's record (its
// header, up to 72 bytes with the source address, plus the payload) fits an empty
// 64 KiB shard batch, and a datagram whose record could not fit one is answered
// DATAGRAM_TOO_LARGE on both paths: never dropped as shardBusy, never a cut record.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, resolveConfig } from '../src/config.js';
import { openDatagramIo } from '../src/io/open-io.js';
import type { Batch, BatchTarget } from '../src/io/datagram-io.js';
import { createLogger } from '../src/log.js';
import { EXPECT_MS, TEST_IO, WirePeer, withTracker } from './helpers/wire.js';

const CAP = 65536 - (1 + 2 + 2 + 1 + 64 + 2); // 65,464

/** A padded announce of exactly `size` bytes. */
const announceOf = (size: number): string => {
  const head = '{"action":"announce","pad":"';
  return `${head}${'x'.repeat(size - head.length - 2)}"}`;
};

test('maxDatagram allows at most 65,464 bytes: the largest payload whose record fits an empty 64 KiB batch', () => {
  assert.equal(resolveConfig({ maxDatagram: CAP }).maxDatagram, CAP);
  assert.throws(() => resolveConfig({ maxDatagram: CAP + 1 }), ConfigError);
  assert.throws(() => resolveConfig({ maxDatagram: 65507 }), ConfigError);
});

test('at the limit, from ::1: a maxDatagram-byte announce is served, one byte more gets DATAGRAM_TOO_LARGE', () =>
  withTracker({ host: '::1', maxDatagram: CAP }, async (tracker, target) => {
    const p = await WirePeer.open(target, '::1');
    try {
      const r = await p.request(announceOf(CAP), 'announceReceived');
      assert.equal(typeof r.data?.shareId, 'string');
      const e = await p.request(announceOf(CAP + 1), 'error');
      assert.equal(e.data?.code, 'DATAGRAM_TOO_LARGE');
      const { main } = await tracker.stats();
      assert.equal(main.tooLarge, 1);
      assert.equal(main.shardBusy, 0);
    } finally {
      p.close();
    }
  }));

test('a record that cannot fit an empty batch (maxDatagram set past the cap, a 65,527-byte IPv6 datagram) is answered DATAGRAM_TOO_LARGE, not dropped or cut', async () => {
  // openDatagramIo takes the config as given: past the cap, as an addon or dgram user could
  const config = { ...resolveConfig({ host: '::1', port: 0, shards: 1, io: TEST_IO }), maxDatagram: 65535 };
  const io = await openDatagramIo(config, createLogger('silent'));
  const p = await WirePeer.open({ address: '::1', port: io.addresses[0]!.port }, '::1');
  try {
    const batch = io.newBatch();
    let full = 0;
    const target: BatchTarget = {
      batchFor: (_s: number, f: boolean): Batch | null => { if (f) full++; return batch; },
      received: () => {},
    };
    io.start(target);
    p.send(Buffer.alloc(65527, 0x61)); // 8 + 3 ("::1") + 65,527 bytes: 2 more than a batch
    const e = await p.next('error');
    assert.equal(e.data?.code, 'DATAGRAM_TOO_LARGE');
    p.send(Buffer.alloc(CAP, 0x62)); // fits
    for (const deadline = Date.now() + EXPECT_MS; batch.count === 0 && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 5));
    assert.equal(batch.count, 1);
    assert.equal(batch.len, 8 + 3 + CAP);
    assert.equal(batch.buf.toString('latin1', 6, 9), '::1');
    assert.equal(batch.buf.readUInt16BE(9), CAP);
    assert.ok(batch.buf.subarray(11, 11 + CAP).every((b) => b === 0x62), 'the payload, whole');
    const c = io.counters();
    assert.equal(c.tooLarge, 1);
    assert.equal(c.shardBusy, 0);
    assert.equal(full, 0);
  } finally {
    p.close();
    await io.close();
  }
});
