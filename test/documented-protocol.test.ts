// The documented API (seed README) end to end: real UDP on loopback, real shard threads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PADDED_ANNOUNCE, WirePeer, withTracker, wireBytes } from './helpers/wire.js';

const SHARE_ID = /^[0-9A-Za-z_-]{12}$/;

test('announce answers announceReceived with a 12-character URL-safe shareId (and the legacy form by default)', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target);
    p.send(PADDED_ANNOUNCE); // padded: both forms fit 3x the request (see amplification.test.ts)
    const documented = await p.next('announceReceived');
    const legacy = await p.next('announced');
    assert.match(documented.data!.shareId as string, SHARE_ID);
    assert.equal(legacy.data!.shareId, documented.data!.shareId);
    p.close();
  }));

test('announce retried before any keep-alive returns the same shareId; after keep-alive it replaces the session', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target);
    const first = await p.announce({ verify: false });
    assert.equal(await p.announce({ verify: false }), first, 'a retry must not orphan the id the client may already show');
    await p.request({ action: 'pulse' }, 'pulseReceived');
    const second = await p.announce();
    assert.notEqual(second, first);
    const q = await WirePeer.open(target);
    await q.announce();
    const err = await q.request({ action: 'push', shareId: first }, 'error');
    assert.equal(err.data!.code, 'UNKNOWN_SHARE_ID', 'the replaced shareId stops resolving');
    p.close(); q.close();
  }));

test('pulse refreshes a live session: status "0", overriden "false", and the shareId', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target);
    const id = await p.announce();
    const r = await p.request({ action: 'pulse' }, 'pulseReceived');
    assert.deepEqual(r.data, { status: '0', overriden: 'false', shareId: id });
    assert.equal(r.raw, `{"action":"pulseReceived","data":{"status":"0","overriden":"false","shareId":"${id}"}}`);
    p.close();
  }));

test('pulse from an address with no live session answers status "1" (announce again)', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target);
    const r = await p.request({ action: 'pulse' }, 'pulseReceived');
    assert.deepEqual(r.data, { status: '1', overriden: 'false' }, 'every field the seed README requires');
    assert.ok(wireBytes(r.raw) <= 3 * wireBytes('{"action":"pulse"}'), 'no amplification to an unverified source');
    p.close();
  }));

test('push gives the requester the target\'s ip:port and tells the target the requester\'s, at once', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target);
    const b = await WirePeer.open(target);
    const idA = await a.announce();
    const idB = await b.announce();
    await a.request({ action: 'pulse' }, 'pulseReceived');
    await b.request({ action: 'pulse' }, 'pulseReceived');
    b.send({ action: 'push', shareId: idA });
    const pushed = await b.next('pushReceived');
    assert.deepEqual(pushed.data, { peeraddr: a.address, peerShareId: idA });
    const income = await a.next('income');
    assert.deepEqual(income.data, { peeraddr: b.address, peerShareId: idB });
    assert.deepEqual((await b.settle()).map((r) => r.action), [], 'a documented requester gets exactly one reply');
    a.close(); b.close();
  }));

test('push for an unknown shareId is an error, and one for a malformed shareId too', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target);
    await p.announce();
    for (const shareId of ['AAAAAAAAAAAA', 'x', '!!!!!!!!!!!!']) {
      const r = await p.request({ action: 'push', shareId }, 'error');
      assert.equal(r.data!.code, 'UNKNOWN_SHARE_ID', shareId);
      assert.equal(typeof r.data!.message, 'string');
    }
    p.close();
  }));

test('push to your own shareId is SELF_PUSH', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target);
    const id = await p.announce();
    assert.equal((await p.request({ action: 'push', shareId: id }, 'error')).data!.code, 'SELF_PUSH');
    p.close();
  }));

test('push from an address with no live session reveals nothing and notifies nobody', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target);
    const idA = await a.announce();
    const stranger = await WirePeer.open(target);
    stranger.send({ action: 'push', shareId: idA });
    const replies = await stranger.settle();
    assert.deepEqual(replies.map((r) => r.action).sort(), ['error', 'expired']);
    assert.equal(replies.find((r) => r.action === 'error')!.data!.code, 'NO_SESSION');
    assert.ok(!replies.some((r) => r.raw.includes(a.address.split(':')[1]!)), 'no address revealed');
    // the stranger's replies are in: its push was handled, in its own shard (no session,
    // so nothing is forwarded), which is a's too (one IP): a's barrier comes after it
    assert.deepEqual(await a.settle(), [], 'the target is not notified');
    a.close(); stranger.close();
  }));
