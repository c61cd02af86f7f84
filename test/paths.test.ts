// A token session moves with its client (issue 24, docs/security.md "Paths"): a
// token request from a new address is answered there within the 3x budget with what
// the tracker sees and a path challenge, and nothing moves; the same request with
// that challenge from that address moves the session: pushes return the new
// address, income goes there, the old address stops resolving. Also across shards
// (the new IP routes to another shard than the session's), and a replayed token
// request from a victim's address moves nothing and gets at most 3x there. Real
// tracker, real UDP; the replay is sent from the victim's own socket (the tracker
// sees exactly what a forged source would give it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { secretOfToken, verifyTagged } from '../src/auth/tag.js';
import { WirePeer, ipInShard, withTracker, wireBytes, type Reply } from './helpers/wire.js';

const tagged = (r: Reply, key: Uint32Array): boolean => verifyTagged(Buffer.from(r.raw, 'utf8'), key);
const pulse = (token: string, extra: Record<string, unknown> = {}): string => JSON.stringify({ action: 'pulse', token, ...extra });

async function tokenSession(p: WirePeer): Promise<{ shareId: string; token: string; key: Uint32Array }> {
  const r = await p.request('{"action":"announce","token":true,"nat":"endpoint-independent"}', 'announceReceived');
  const { shareId, token } = r.data as { shareId: string; token: string };
  await p.request(pulse(token), 'pulseReceived');
  return { shareId, token, key: secretOfToken(token)! };
}


for (const shards of [1, 4]) {
  test(`a token request from a new address gets a challenge and moves nothing; with the challenge the session moves there (${shards} shard${shards > 1 ? 's' : ''})`, () =>
    withTracker({ shards }, async (t, target) => {
      const oldIp = ipInShard('127.0.71', shards, 0);
      // with 4 shards, the new IP routes to another shard than the session's: the request is forwarded there
      const newIp = shards === 1 ? '127.0.72.2' : ipInShard('127.0.71', shards, 0, true);
      const before = await WirePeer.open(target, oldIp);
      const s = await tokenSession(before);
      const friend = await WirePeer.open(target, '127.0.72.9');
      await friend.announce();
      const after = await WirePeer.open(target, newIp);
      // 1. from the new address: observed + challenge, tagged, within 3x; nothing moves
      const req = pulse(s.token);
      const ask = await after.request(req, 'pulseReceived');
      const data = ask.data as Record<string, string>;
      assert.equal(data.observed, after.address);
      assert.match(data.challenge!, /^[A-Za-z0-9_-]{11}$/);
      assert.ok(tagged(ask, s.key), 'tagged');
      assert.ok(wireBytes(ask.raw) <= 3 * wireBytes(req), `${wireBytes(ask.raw)} B for a ${wireBytes(req)} B request`);
      let pushed = await friend.request({ action: 'push', shareId: s.shareId }, 'pushReceived');
      assert.equal(pushed.data!.peeraddr, before.address, 'the push still returns the old address');
      await before.next('income');
      // a wrong challenge moves nothing either
      await after.request(pulse(s.token, { challenge: 'AAAAAAAAAAA' }), 'pulseReceived');
      pushed = await friend.request({ action: 'push', shareId: s.shareId }, 'pushReceived');
      assert.equal(pushed.data!.peeraddr, before.address);
      await before.next('income');
      // 2. with the challenge: it moves
      const moved = await after.request(pulse(s.token, { challenge: data.challenge }), 'pulseReceived');
      assert.deepEqual(moved.data, { status: '0', overriden: 'false', shareId: s.shareId, observed: after.address });
      assert.ok(tagged(moved, s.key));
      pushed = await friend.request({ action: 'push', shareId: s.shareId }, 'pushReceived');
      assert.equal(pushed.data!.peeraddr, after.address, 'the push returns the new address');
      const income = await after.next('income');
      assert.ok(tagged(income, s.key), 'income goes to the new address, tagged');
      assert.deepEqual(await before.settle(), [], 'nothing more for the old address');
      // the old address no longer resolves: a plain pulse from it finds no session
      assert.equal((await before.request('{"action":"pulse"}', 'pulseReceived')).data!.status, '1');
      // and token requests from the new address are served as the session's own
      assert.equal((await after.request(pulse(s.token), 'pulseReceived')).data!.observed, after.address);
      const stats = await t.stats();
      const sum = (k: 'moved' | 'tokenForwarded'): number => stats.shards.reduce((n, sh) => n + ((sh.counters as unknown as Record<string, number>)[k] ?? 0), 0);
      assert.equal(sum('moved'), 1);
      if (shards > 1) assert.ok(sum('tokenForwarded') >= 4, 'the new IP\'s shard forwarded every token request');
      before.close(); after.close(); friend.close();
    }));
}

test('a replayed token request from a victim\'s address moves nothing and gets at most 3x its bytes there', () =>
  withTracker({}, async (_t, target) => {
    const client = await WirePeer.open(target, '127.0.73.1');
    const s = await tokenSession(client);
    const friend = await WirePeer.open(target, '127.0.73.2');
    await friend.announce();
    const victim = await WirePeer.open(target, '127.0.73.3');
    // the attacker replays the client's token pulses (and pushes) "from" the victim
    const replay = [pulse(s.token), pulse(s.token, { override: true, multiaddr: 'x'.repeat(200) }),
      JSON.stringify({ action: 'push', shareId: 'AAAAAAAAAAAA', token: s.token }), JSON.stringify({ action: 'relay', token: s.token })];
    for (let i = 0; i < 5; i++) for (const r of replay) victim.send(r);
    // one reply each (a challenge), some from the session's shard if the victim's IP routes elsewhere: waited for, then the rest
    const got: Reply[] = [];
    for (let i = 0; i < 20; i++) got.push(await victim.next());
    got.push(...await victim.settle());
    const sent = wireBytes(...Array(5).fill(replay).flat() as string[]);
    const received = wireBytes(...got.map((r) => r.raw));
    assert.ok(received <= 3 * sent, `victim got ${received} B for ${sent} B forged`);
    // the smallest request replayed is the bare token pulse: no reply exceeds 3x even that one
    for (const r of got) assert.ok(wireBytes(r.raw) <= 3 * wireBytes(replay[0]!), `a ${wireBytes(r.raw)} B reply: ${r.raw}`);
    const pushed = await friend.request({ action: 'push', shareId: s.shareId }, 'pushReceived');
    assert.equal(pushed.data!.peeraddr, client.address, 'the session did not move');
    assert.equal(pushed.data!.multiaddr, undefined, 'nor took an override');
    client.close(); friend.close(); victim.close();
  }));
