// No amplification: a source that has not shown it receives at its address never
// gets more than 3x the bytes it sent, summed over time, per request kind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { PADDED_ANNOUNCE, WirePeer, withTracker } from './helpers/wire.js';
import { addressBucket, shardOfBucket } from '../src/routing.js';

/** Sends each datagram from a fresh IP and returns [bytes sent, bytes received]. */
async function exchange(peer: WirePeer, datagrams: string[], settleMs = 250): Promise<[number, number]> {
  let sent = 0;
  for (const d of datagrams) { peer.send(d); sent += Buffer.byteLength(d); await sleep(5); }
  const got = await peer.drain(settleMs);
  return [sent, got.reduce((n, r) => n + Buffer.byteLength(r.raw), 0)];
}

test('per request kind, an unverified source gets at most 3x its bytes back', () =>
  withTracker({}, async (_t, target) => {
    const kinds: Record<string, string[]> = {
      announce: ['{"action":"announce"}'],
      'announce x3': Array(3).fill('{"action":"announce"}'),
      pulse: ['{"action":"pulse"}'],
      alive: ['{"action":"alive"}'],
      'push (no session)': ['{"action":"push","shareId":"AAAAAAAAAAAA"}'],
      junk: ['x', '{}', '[]', 'not json at all'],
      'pulse flood': Array(50).fill('{"action":"pulse"}'),
    };
    let octet = 10;
    for (const [kind, datagrams] of Object.entries(kinds)) {
      const p = await WirePeer.open(target, `127.0.50.${octet++}`);
      const [sent, got] = await exchange(p, datagrams);
      assert.ok(got <= 3 * sent, `${kind}: sent ${sent} B, got ${got} B`);
      p.close();
    }
  }));

test('a fresh client still gets both announce forms, one per try, within the 3x budget', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target, '127.0.51.1');
    p.send('{"action":"announce"}');
    const first = await p.drain(200);
    assert.deepEqual(first.map((r) => r.action), ['announced'], 'the deployed (legacy) form first');
    p.send('{"action":"announce"}'); // the retry both kinds of client make
    const second = await p.drain(200);
    assert.deepEqual(second.map((r) => r.action), ['announceReceived']);
    assert.equal(second[0]!.data!.shareId, first[0]!.data!.shareId);
    p.close();
  }));

test('legacy keep-alive earns credit: after a few alives a push reaches the legacy client as income', () =>
  withTracker({}, async (_t, target) => {
    const legacy = await WirePeer.open(target, '127.0.52.1');
    const friend = await WirePeer.open(target, '127.0.52.2');
    legacy.send('{"action":"announce"}');
    const id = (await legacy.next('announced')).data!.shareId as string;
    // Right after announcing, its credit is 63 - 57 = 6 bytes: an income (~80 bytes) would amplify.
    await friend.announce();
    friend.send({ action: 'push', shareId: id });
    await friend.next('pushReceived');
    assert.deepEqual(await legacy.drain(200), [], 'no income before the legacy client has earned credit');
    // Three alives (18 bytes in, 19 out, every 2 s in real life) earn 3 x 35 bytes.
    for (let i = 0; i < 3; i++) await legacy.request('{"action":"alive"}', 'alived');
    friend.send({ action: 'push', shareId: id });
    assert.equal((await legacy.next('income')).data!.peeraddr, friend.address);
    legacy.close(); friend.close();
  }));

test('a pulse carrying its own shareId proves the client receives: its replies are then never trimmed', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target, '127.0.53.1');
    const id = await p.announce();
    // Unverified, a documented pulse reply (~88 B for an 18 B request) may be trimmed to status only.
    const proof = await p.request({ action: 'pulse', shareId: id }, 'pulseReceived');
    assert.deepEqual(proof.data, { status: '0', overriden: 'false', shareId: id });
    for (let i = 0; i < 30; i++) {
      const r = await p.request({ action: 'pulse' }, 'pulseReceived');
      assert.deepEqual(r.data, { status: '0', overriden: 'false', shareId: id }, `pulse ${i}`);
    }
    p.close();
  }));

test('an unverified documented client that pulses gets status "0" even when the full reply would amplify', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target, '127.0.54.1');
    const announce = '{"action":"announce"}';
    let sent = 2 * announce.length, got = 0;
    p.send(announce); p.send(announce); // a client retrying until it sees announceReceived
    got += (await p.drain(200)).reduce((n, r) => n + r.raw.length, 0);
    let full = 0;
    for (let i = 0; i < 30; i++) {
      const msg = '{"action":"pulse"}';
      sent += msg.length;
      const r = await p.request(msg, 'pulseReceived');
      got += r.raw.length;
      assert.equal(r.data!.status, '0', 'the session is alive, whatever the reply size');
      if (r.data!.shareId !== undefined) full++;
    }
    assert.ok(got <= 3 * sent, `sent ${sent}, got ${got}`);
    assert.ok(full < 30, 'some replies were trimmed');
    p.close();
  }));

test('an unverified requester\'s push to another shard carries its budget along: answered, and within 3x', () =>
  withTracker({ shards: 2 }, async (tracker, target) => {
    // two source IPs that route to different shards
    const ips = Array.from({ length: 50 }, (_, i) => `127.0.55.${i + 1}`);
    const requesterIp = ips.find((ip) => shardOfBucket(addressBucket(ip), 2) === 0)!;
    const targetIp = ips.find((ip) => shardOfBucket(addressBucket(ip), 2) === 1)!;
    const owner = await WirePeer.open(target, targetIp);
    const id = await owner.announce(); // verified: may be sent income
    const requester = await WirePeer.open(target, requesterIp);
    const announce = PADDED_ANNOUNCE;
    const push = JSON.stringify({ action: 'push', shareId: id });
    requester.send(announce);
    let got = (await requester.drain(200)).reduce((n, r) => n + r.raw.length, 0);
    requester.send(push);
    const r = await requester.next('pushReceived');
    got += r.raw.length + (await requester.drain(200)).reduce((n, x) => n + x.raw.length, 0);
    assert.equal(r.data!.peerShareId, id);
    assert.equal((await owner.next('income')).data!.peeraddr, requester.address);
    assert.ok(got <= 3 * (announce.length + push.length), `sent ${announce.length + push.length}, got ${got}`);
    const stats = await tracker.stats();
    assert.equal(stats.shards[0]!.counters.forwarded, 1, 'the push crossed shards');
    requester.close(); owner.close();
  }));
