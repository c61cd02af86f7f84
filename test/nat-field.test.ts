// The documented dialect's optional `nat` field, over real UDP with raw datagrams:
// a client that reports its NAT is told its peer's, and whether the peer proved it
// receives where it is reached (peerVerified); a client that never reports one sees
// nothing new; the legacy dialect is unchanged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTracker } from '../src/tracker.js';
import { PADDED_ANNOUNCE, TEST_IO, WirePeer, withTracker } from './helpers/wire.js';

/** Announces (padded, as a careful client does) with `nat`, then proves with a pulse unless told not to. */
async function announceWith(p: WirePeer, nat: string | null, { prove = true } = {}): Promise<string> {
  const msg = JSON.parse(PADDED_ANNOUNCE) as Record<string, unknown>;
  if (nat !== null) msg.nat = nat;
  const r = await p.request(msg, 'announceReceived');
  const shareId = r.data!.shareId as string;
  await p.settle(); // announced, when it comes too
  if (prove) await p.request({ action: 'pulse', shareId }, 'pulseReceived');
  return shareId;
}

test('two clients that report their NAT are told each other\'s, and that each proved it receives', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.61.1');
    const b = await WirePeer.open(target, '127.0.61.2');
    const idA = await announceWith(a, 'address-and-port-dependent');
    await announceWith(b, 'endpoint-independent');
    const pushed = await b.request({ action: 'push', shareId: idA }, 'pushReceived');
    assert.deepEqual(pushed.data, { peeraddr: `127.0.61.1:${a.port}`, peerShareId: idA, nat: 'address-and-port-dependent', peerVerified: true });
    const income = await a.next('income');
    assert.equal(income.data!.nat, 'endpoint-independent');
    assert.equal(income.data!.peerVerified, true);
    a.close(); b.close();
  }));

test('nat can be reported or changed by a later pulse; "unknown" is a value too', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.61.3');
    const b = await WirePeer.open(target, '127.0.61.4');
    const idA = await announceWith(a, null);
    await announceWith(b, 'unknown');
    await a.request({ action: 'pulse', nat: 'address-dependent' }, 'pulseReceived');
    const pushed = await b.request({ action: 'push', shareId: idA }, 'pushReceived');
    assert.equal(pushed.data!.nat, 'address-dependent');
    const income = await a.next('income');
    assert.equal(income.data!.nat, 'unknown');
    a.close(); b.close();
  }));

test('peerVerified is false for a requester that never proved it receives, and for a target whose address is an override', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.61.5');
    const b = await WirePeer.open(target, '127.0.61.6');
    const idA = await announceWith(a, 'endpoint-independent');
    await announceWith(b, 'endpoint-independent', { prove: false });
    await b.request({ action: 'push', shareId: idA }, 'pushReceived');
    const income = await a.next('income');
    assert.equal(income.data!.peerVerified, false, 'the push came from an address that never proved it receives');
    // A now tells the tracker to report another address for it: nobody proved that one
    await a.request({ action: 'pulse', override: true, ip: '198.51.100.7', port: 4000 }, 'pulseReceived');
    const pushed = await b.request({ action: 'push', shareId: idA }, 'pushReceived');
    assert.equal(pushed.data!.peeraddr, '198.51.100.7:4000');
    assert.equal(pushed.data!.peerVerified, false);
    a.close(); b.close();
  }));

test('a client that never reports nat sees nothing new, and neither does the desktop client', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.61.7');
    const b = await WirePeer.open(target, '127.0.61.8');
    const legacy = await WirePeer.open(target, '127.0.61.9');
    const idA = await announceWith(a, 'address-and-port-dependent');
    await announceWith(b, null);
    const pushed = await b.request({ action: 'push', shareId: idA }, 'pushReceived');
    assert.deepEqual(Object.keys(pushed.data!), ['peeraddr', 'peerShareId'], 'the seed README\'s fields and peerShareId, as before');
    const income = await a.next('income');
    assert.equal(income.data!.nat, undefined, 'b never reported one');
    assert.equal(income.data!.peerVerified, true, 'a reported one, so it learns whether b proved it receives');
    // the desktop client, pushed to by a NAT-aware client
    const idLegacy = (await legacy.request('{"action":"announce"}', 'announceReceived')).data!.shareId as string;
    await legacy.request('{"action":"alive"}', 'alived'); // its dialect is known now: legacy
    await a.request({ action: 'push', shareId: idLegacy }, 'pushReceived');
    const legacyIncome = await legacy.next('income');
    assert.deepEqual(Object.keys(legacyIncome.data!), ['peeraddr', 'peerShareId'], 'the legacy income is unchanged');
    for (const p of [a, b, legacy]) p.close();
  }));

test('the reported nat is kept in snapshots', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'sobani-nat-')), 's.snapshot');
  const config = { host: '127.0.0.1', port: 0, shards: 2, logLevel: 'silent' as const, io: TEST_IO, snapshot: file };
  const first = await startTracker(config);
  const target = { address: '127.0.0.1', port: first.addresses[0]!.port };
  const a = await WirePeer.open(target, '127.0.61.10');
  const idA = await announceWith(a, 'address-dependent');
  a.close();
  await first.close();
  const second = await startTracker(config);
  try {
    const b = await WirePeer.open({ address: '127.0.0.1', port: second.addresses[0]!.port }, '127.0.61.11');
    await announceWith(b, 'endpoint-independent');
    const pushed = await b.request({ action: 'push', shareId: idA }, 'pushReceived');
    assert.equal(pushed.data!.nat, 'address-dependent');
    assert.equal(pushed.data!.peerVerified, true, 'and that it proved it receives');
    b.close();
  } finally {
    await second.close();
  }
});
