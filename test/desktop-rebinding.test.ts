// A NAT rebinding under the desktop client's v0.1.2 (issue 24): after sleep its NAT
// gives it a new port on the same public IP. Its every alive carries its "id" (8 hex,
// known to it and the tracker only), so the session follows it to the new port: the
// same shareId, pushes return the new port, income goes there. Raw datagrams, the
// client's exact bytes, each client on its own loopback IP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WirePeer, withTracker } from './helpers/wire.js';

const ID = '0a1b2c3d';
const ANNOUNCE = `{"id":"${ID}","action":"announce"}`;
const ALIVE = `{"id":"${ID}","action":"alive"}`;

test('desktop v0.1.2 on a new port of the same IP keeps its session by its id; a wrong id, another IP or no id moves nothing', async () => {
  await withTracker({}, async (_t, target) => {
    const before = await WirePeer.open(target, '127.0.9.1');
    const pusher = await WirePeer.open(target, '127.0.9.2');
    const after = await WirePeer.open(target, '127.0.9.1'); // the NAT's new mapping: same IP, another port
    const stranger = await WirePeer.open(target, '127.0.9.3');
    const guesser = await WirePeer.open(target, '127.0.9.1');
    try {
      const shareId = (await before.request(ANNOUNCE, 'announced')).data!.shareId as string;
      await before.request(ALIVE, 'alived');
      await pusher.request('{"id":"99999999","action":"announce"}', 'announced');
      await pusher.request('{"id":"99999999","action":"alive"}', 'alived');
      const pushedTo = async (): Promise<string> => (await pusher.request(`{"shareId":"${shareId}","action":"push"}`, 'pushed')).data!.peeraddr as string;
      assert.equal(await pushedTo(), `127.0.9.1:${before.port}`);
      await before.settle(); // the income of that push

      // not followed: another IP with the right id, the same IP with a wrong id or without one
      await stranger.request(ALIVE, 'expired');
      await guesser.request(`{"id":"0a1b2c3e","action":"alive"}`, 'expired');
      await guesser.request('{"action":"alive"}', 'expired');
      assert.equal(await pushedTo(), `127.0.9.1:${before.port}`, 'nothing moved');
      await before.settle();

      // the rebinding: the same id from the same IP's new port
      await after.request(ALIVE, 'alived');
      assert.equal(await pushedTo(), `127.0.9.1:${after.port}`, 'pushes return the new port');
      const income = await after.next('income');
      assert.equal(income.data!.peeraddr, `127.0.9.2:${pusher.port}`);
      // the old port stops resolving (a later build's alive there: no session)
      await before.request('{"action":"alive"}', 'expired');
      await after.request(ALIVE, 'alived');
    } finally {
      for (const p of [before, pusher, after, stranger, guesser]) p.close();
    }
  });
});
