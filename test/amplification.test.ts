// No amplification: a source that has not shown it receives at its address never
// gets more than 3x the bytes it sent, summed over time and counted on the wire
// (payload + 28 bytes of IPv4 and UDP headers per datagram), per request kind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { WirePeer, ipInShard, withTracker, wireBytes } from './helpers/wire.js';

const ANNOUNCE = '{"action":"announce"}';

/**
 * Sends each datagram in turn and returns [wire bytes sent, wire bytes received]:
 * every reply, up to the settle() barrier sent last (so its Binding's own credit
 * funds nothing counted here).
 */
async function exchange(peer: WirePeer, datagrams: string[]): Promise<[number, number]> {
  for (const d of datagrams) { peer.send(d); await sleep(5); }
  const got = await peer.settle();
  return [wireBytes(...datagrams), wireBytes(...got.map((r) => r.raw))];
}

test('per request kind, an unverified source gets at most 3x its wire bytes back', () =>
  withTracker({}, async (_t, target) => {
    const kinds: Record<string, string[]> = {
      announce: [ANNOUNCE],
      'announce x3': Array(3).fill(ANNOUNCE),
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
      assert.ok(got <= 3 * sent, `${kind}: sent ${sent} B, got ${got} B on the wire`);
      p.close();
    }
  }));

test('a bare announce gets announceReceived at once; the legacy form follows on the retry', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target, '127.0.51.1');
    p.send(ANNOUNCE);
    const first = await p.settle();
    // 49 wire bytes in: 147 of credit covers announceReceived (91), not announced (84) too
    assert.deepEqual(first.map((r) => r.action), ['announceReceived'], 'the documented form first');
    p.send(ANNOUNCE); // the desktop client resends every second until it sees `announced`
    const second = await p.settle();
    assert.deepEqual(second.map((r) => r.action), ['announceReceived', 'announced']);
    assert.ok(second.every((r) => r.data!.shareId === first[0]!.data!.shareId), 'one shareId');
    assert.ok(wireBytes(...first.map((r) => r.raw), ...second.map((r) => r.raw)) <= 3 * wireBytes(ANNOUNCE, ANNOUNCE));
    // the older desktop release's 37-byte announce carries "id", which marks it legacy: its own form at once
    const old = await WirePeer.open(target, '127.0.51.2');
    old.send('{"id":"0123abcd","action":"announce"}');
    assert.deepEqual((await old.settle()).map((r) => r.action), ['announced']);
    p.close(); old.close();
  }));

test('income is never charged to the target: a client that has only just announced gets it', () =>
  withTracker({}, async (tracker, target) => {
    const fresh = await WirePeer.open(target, '127.0.52.1');
    const friend = await WirePeer.open(target, '127.0.52.2');
    fresh.send(ANNOUNCE);
    // No barrier here: its Binding would add credit, and the point is that there is too little.
    const id = (await fresh.next('announceReceived')).data!.shareId as string;
    await friend.announce();
    const amplificationDrops = async (): Promise<number> =>
      (await tracker.stats()).shards.reduce((n, s) => n + (s.counters.drops.amplification ?? 0), 0);
    const before = await amplificationDrops(); // the legacy form of the fresh client's announce did not fit
    // The fresh client's IP has 147 - 91 = 56 bytes of credit left: less than an income (~112 on the wire).
    for (let i = 0; i < 5; i++) {
      friend.send({ action: 'push', shareId: id });
      await friend.next('pushReceived');
      assert.equal((await fresh.next('income')).data!.peeraddr, friend.address, `push ${i}`);
    }
    assert.equal(await amplificationDrops(), before, 'nothing withheld');
    fresh.close(); friend.close();
  }));

test('a proven address is not exempt: its bare pulses stay within 3x each (32-character shareIds: the seed form); a token pulse from it gets the full reply', () =>
  withTracker({ shareIdLength: 32 }, async (_t, target) => {
    const p = await WirePeer.open(target, '127.0.53.1');
    const id = await p.announce();
    const proof = await p.request({ action: 'pulse', shareId: id }, 'pulseReceived');
    assert.deepEqual(proof.data, { status: '0', overriden: 'false', shareId: id });
    // it proved it receives at its address, but a datagram from that address may be forged
    for (let i = 0; i < 30; i++) {
      const r = await p.request({ action: 'pulse' }, 'pulseReceived');
      assert.deepEqual(r.data, { status: '0', overriden: 'false' }, `pulse ${i}`);
      assert.ok(wireBytes(r.raw) <= 3 * wireBytes('{"action":"pulse"}'));
    }
    p.close();
    const q = await WirePeer.open(target, '127.0.53.2');
    const a = await q.request('{"action":"announce","token":true,"nat":"endpoint-independent"}', 'announceReceived');
    const { shareId, token } = a.data as { shareId: string; token: string };
    for (let i = 0; i < 30; i++) {
      const r = await q.request({ action: 'pulse', token }, 'pulseReceived');
      assert.deepEqual(r.data, { status: '0', overriden: 'false', shareId, observed: q.address }, `token pulse ${i}`);
    }
    q.close();
  }));

test('an unverified client\'s bare pulse gets the full reply within 3x (default shareId length)', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target, '127.0.54.1');
    p.send(ANNOUNCE);
    const id = (await p.next('announceReceived')).data!.shareId as string;
    const sent = [ANNOUNCE], got = [`{"action":"announceReceived","data":{"shareId":"${id}"}}`];
    for (let i = 0; i < 30; i++) {
      const msg = '{"action":"pulse"}';
      sent.push(msg);
      const r = await p.request(msg, 'pulseReceived');
      got.push(r.raw);
      assert.deepEqual(r.data, { status: '0', overriden: 'false', shareId: id }, `pulse ${i}`);
    }
    // and whatever else came (the announce's legacy form, had it fitted): the barrier goes last
    got.push(...(await p.settle()).map((r) => r.raw));
    assert.ok(wireBytes(...got) <= 3 * wireBytes(...sent), `sent ${wireBytes(...sent)}, got ${wireBytes(...got)}`);
    p.close();
  }));

test('when the full pulse reply does not fit (32-character shareIds), the seed README\'s own form is sent, never less', () =>
  withTracker({ shareIdLength: 32 }, async (_t, target) => {
    const p = await WirePeer.open(target, '127.0.54.2');
    p.send(ANNOUNCE);
    const id = (await p.next('announceReceived')).data!.shareId as string;
    const sent = [ANNOUNCE], got = [`{"action":"announceReceived","data":{"shareId":"${id}"}}`];
    let seedForm = 0;
    for (let i = 0; i < 30; i++) {
      const msg = '{"action":"pulse"}';
      sent.push(msg);
      const r = await p.request(msg, 'pulseReceived');
      got.push(r.raw);
      if (r.data!.shareId === undefined) {
        assert.equal(r.raw, '{"action":"pulseReceived","data":{"status":"0","overriden":"false"}}');
        seedForm++;
      } else {
        assert.deepEqual(r.data, { status: '0', overriden: 'false', shareId: id });
      }
    }
    got.push(...(await p.settle()).map((r) => r.raw)); // the rest, if any: the barrier goes last
    assert.ok(seedForm > 0, 'a 141-byte reply to a 46-byte pulse does not always fit');
    assert.ok(wireBytes(...got) <= 3 * wireBytes(...sent), `sent ${wireBytes(...sent)}, got ${wireBytes(...got)}`);
    // a regeneration's reply must carry the new id: it is only minted when that reply fits
    const regen = await p.request({ action: 'pulse', shareId: true }, 'pulseReceived');
    assert.equal((regen.data!.shareId as string).length, 32);
    assert.notEqual(regen.data!.shareId, id);
    p.close();
  }));

test('an unverified requester\'s push to another shard carries its budget along: answered, and within 3x', () =>
  withTracker({ shards: 2 }, async (tracker, target) => {
    // two source IPs that route to different shards
    const requesterIp = ipInShard('127.0.55', 2, 0), targetIp = ipInShard('127.0.55', 2, 1);
    const owner = await WirePeer.open(target, targetIp);
    owner.send(ANNOUNCE);
    const id = (await owner.next('announceReceived')).data!.shareId as string;
    const requester = await WirePeer.open(target, requesterIp);
    const push = JSON.stringify({ action: 'push', shareId: id });
    requester.send(ANNOUNCE);
    const got = [(await requester.next('announceReceived')).raw];
    requester.send(push);
    const r = await requester.next('pushReceived');
    // The replies to the push come from the owner's shard, in one batch: pushReceived is
    // in, so the rest of it is too; the barrier (last, so its credit funds nothing counted)
    // covers what the requester's own shard sent.
    got.push(r.raw, ...(await requester.settle()).map((x) => x.raw));
    assert.equal(r.data!.peerShareId, id);
    assert.equal((await owner.next('income')).data!.peeraddr, requester.address);
    assert.ok(wireBytes(...got) <= 3 * wireBytes(ANNOUNCE, push), `sent ${wireBytes(ANNOUNCE, push)}, got ${wireBytes(...got)}`);
    const stats = await tracker.stats();
    assert.equal(stats.shards[0]!.counters.forwarded, 1, 'the push crossed shards');
    requester.close(); owner.close();
  }));
