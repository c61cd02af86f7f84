// End to end: the real process, 500 peers over UDP, SIGTERM, a restart with
// another shard count; every shareId still resolves and every peer still pulses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WirePeer } from './helpers/wire.js';
import { runTracker } from './helpers/process.js';

const PEERS = 500;

async function inChunks<T, R>(items: T[], size: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  // A few dozen at a time: 500 simultaneous announces would overflow a socket buffer somewhere.
  for (let i = 0; i < items.length; i += size) out.push(...await Promise.all(items.slice(i, i + size).map(fn)));
  return out;
}

test('sessions survive SIGTERM and a restart with another --shards', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'sobani-restart-')), 'sessions.snapshot');
  const first = await runTracker(['--host', '127.0.0.1', '--port', '0', '--shards', '2', '--snapshot', file]);
  const target = { address: '127.0.0.1', port: first.port };
  // The peers' sockets stay open across the restart: to the tracker they are the same clients.
  const peers = await inChunks(Array.from({ length: PEERS }), 50, () => WirePeer.open(target));
  let second: Awaited<ReturnType<typeof runTracker>> | null = null;
  try {
    const ids = await inChunks(peers, 50, (p) => p.announce());
    assert.equal(new Set(ids).size, PEERS);
    // A third of them speak the documented dialect, a third legacy, a third have not said yet.
    await inChunks(peers.filter((_, i) => i % 3 === 0), 50, (p) => p.request({ action: 'pulse' }, 'pulseReceived'));
    await inChunks(peers.filter((_, i) => i % 3 === 1), 50, (p) => p.request({ action: 'alive' }, 'alived'));

    first.child.kill('SIGTERM');
    assert.equal((await first.exited).code, 0);
    assert.ok(existsSync(file));
    assert.match(first.output(), new RegExp(`"sessions":${PEERS},.*"msg":"snapshot written"`));

    // All 500 peers share one IP (127.0.0.1): lift the per-IP push limit, which is not what this tests.
    second = await runTracker(['--host', '127.0.0.1', '--port', String(first.port), '--shards', '3', '--snapshot', file,
      '--push-rate', '100000', '--push-burst', '100000']);
    assert.match(second.output(), new RegExp(`"restored":${PEERS},"expired":0,.*"msg":"snapshot restored"`));

    // Every shareId resolves to its peer, asked by a newcomer.
    const asker = await WirePeer.open(target);
    await asker.announce();
    await asker.request({ action: 'pulse' }, 'pulseReceived');
    for (let i = 0; i < PEERS; i++) {
      const r = await asker.request({ action: 'push', shareId: ids[i] }, 'pushReceived');
      assert.equal(r.data!.peeraddr, peers[i]!.address, `peer ${i}`);
    }
    asker.close();
    // The legacy ones are still known as legacy (the session and its dialect came back).
    const legacy = await inChunks(peers.filter((_, i) => i % 3 === 1), 50, (p) => p.request({ action: 'alive' }, 'alived'));
    assert.equal(legacy.length, Math.floor(PEERS / 3) + (PEERS % 3 > 1 ? 1 : 0));
    // Every peer pulses without announcing again, and keeps its shareId.
    const pulses = await inChunks(peers, 50, (p) => p.request({ action: 'pulse' }, 'pulseReceived'));
    pulses.forEach((r, i) => {
      assert.equal(r.data!.status, '0', `peer ${i}`);
      assert.equal(r.data!.shareId, ids[i], `peer ${i}`);
    });
  } finally {
    for (const p of peers) p.close();
    first.child.kill('SIGTERM');
    if (second) { second.child.kill('SIGTERM'); await second.exited; }
  }
});
