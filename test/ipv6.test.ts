// IPv6 and IPv4 on one dual-stack socket (the default host "::").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WirePeer, withTracker } from './helpers/wire.js';

test('on "::" an IPv6 peer and an IPv4 peer find each other; IPv4 shows as a dotted quad, IPv6 bracketed', () =>
  withTracker({ host: '::' }, async (tracker, target) => {
    assert.equal(tracker.addresses[0]!.family, 'IPv6');
    const v6 = await WirePeer.open({ address: '::1', port: target.port }, '::1');
    const v4 = await WirePeer.open({ address: '127.0.0.1', port: target.port }, '127.0.0.1');
    const id6 = await v6.announce();
    const id4 = await v4.announce();
    await v6.request({ action: 'pulse' }, 'pulseReceived');
    await v4.request({ action: 'pulse' }, 'pulseReceived');

    const toV6 = await v4.request({ action: 'push', shareId: id6 }, 'pushReceived');
    assert.equal(toV6.data!.peeraddr, `[::1]:${v6.port}`);
    assert.equal((await v6.next('income')).data!.peeraddr, `127.0.0.1:${v4.port}`, 'IPv4-mapped shown as IPv4');

    const toV4 = await v6.request({ action: 'push', shareId: id4 }, 'pushReceived');
    assert.equal(toV4.data!.peeraddr, `127.0.0.1:${v4.port}`);
    assert.equal((await v4.next('income')).data!.peeraddr, `[::1]:${v6.port}`);
    v6.close(); v4.close();
  }));

test('a tracker bound to ::1 alone serves IPv6', () =>
  withTracker({ host: '::1' }, async (_t, target) => {
    const a = await WirePeer.open(target, '::1');
    const b = await WirePeer.open(target, '::1');
    const idA = await a.announce();
    await b.announce();
    await a.request({ action: 'pulse' }, 'pulseReceived'); // known documented: may be shown IPv6
    await b.request({ action: 'pulse' }, 'pulseReceived');
    assert.equal((await b.request({ action: 'push', shareId: idA }, 'pushReceived')).data!.peeraddr, `[::1]:${a.port}`);
    a.close(); b.close();
  }));
