// pulse override (ip / port / multiaddr) and shareId regeneration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WirePeer, withTracker } from './helpers/wire.js';

test('override changes what push reports (ip, port as number or string, multiaddr), never where income goes', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target);
    const b = await WirePeer.open(target);
    const idA = await a.announce();
    await b.announce();
    const r = await a.request({ action: 'pulse', override: true, ip: '203.0.113.7', port: '4567', multiaddr: '/ip4/203.0.113.7/udp/4567' }, 'pulseReceived');
    assert.deepEqual(r.data, { status: '0', overriden: 'true', shareId: idA });
    await b.request({ action: 'pulse' }, 'pulseReceived');
    const pushed = await b.request({ action: 'push', shareId: idA }, 'pushReceived');
    assert.deepEqual(pushed.data, { peeraddr: '203.0.113.7:4567', peerShareId: idA, multiaddr: '/ip4/203.0.113.7/udp/4567' });
    // The target still gets income at its observed address, not at the override.
    const income = await a.next('income');
    assert.equal(income.data!.peeraddr, b.address);

    // A later override of only the port keeps the ip; a port as a number works too.
    await a.request({ action: 'pulse', override: true, port: 9 }, 'pulseReceived');
    assert.equal((await b.request({ action: 'push', shareId: idA }, 'pushReceived')).data!.peeraddr, '203.0.113.7:9');
    // An IPv6 override is shown bracketed.
    await a.request({ action: 'pulse', override: true, ip: '2001:DB8::0:1' }, 'pulseReceived');
    assert.equal((await b.request({ action: 'push', shareId: idA }, 'pushReceived')).data!.peeraddr, '[2001:db8::1]:9');
    // override:true with no fields clears it.
    const cleared = await a.request({ action: 'pulse', override: true }, 'pulseReceived');
    assert.equal(cleared.data!.overriden, 'false');
    assert.equal((await b.request({ action: 'push', shareId: idA }, 'pushReceived')).data!.peeraddr, a.address);
    a.close(); b.close();
  }));

test('override fields are ignored unless override is true', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target);
    const b = await WirePeer.open(target);
    const idA = await a.announce();
    await b.announce();
    const r = await a.request({ action: 'pulse', ip: '203.0.113.7', port: 1 }, 'pulseReceived');
    assert.equal(r.data!.overriden, 'false');
    assert.equal((await b.request({ action: 'push', shareId: idA }, 'pushReceived')).data!.peeraddr, a.address);
    a.close(); b.close();
  }));

test('invalid override values are rejected with their own codes and change nothing', () =>
  withTracker({ maxMultiaddr: 16 }, async (_t, target) => {
    const a = await WirePeer.open(target);
    const b = await WirePeer.open(target);
    const idA = await a.announce();
    await b.announce();
    const cases: [Record<string, unknown>, string][] = [
      [{ ip: '300.1.1.1' }, 'INVALID_IP'],
      [{ ip: 'example.com' }, 'INVALID_IP'],
      [{ ip: 17 }, 'INVALID_IP'],
      [{ ip: '1'.repeat(65) }, 'FIELD_TOO_LONG'],
      [{ port: 0 }, 'INVALID_PORT'],
      [{ port: 65536 }, 'INVALID_PORT'],
      [{ port: '12a' }, 'INVALID_PORT'],
      [{ port: 1.5 }, 'INVALID_PORT'],
      [{ multiaddr: 5 }, 'INVALID_FIELD'],
      [{ multiaddr: 'x'.repeat(17) }, 'FIELD_TOO_LONG'],
      [{ override: 'yes' }, 'INVALID_FIELD'],
    ];
    for (const [fields, code] of cases) {
      const r = await a.request({ action: 'pulse', override: true, ...fields }, 'error');
      assert.equal(r.data!.code, code, JSON.stringify(fields));
    }
    // the longest allowed multiaddr is accepted
    assert.equal((await a.request({ action: 'pulse', override: true, multiaddr: 'x'.repeat(16) }, 'pulseReceived')).data!.overriden, 'true');
    const pushed = await b.request({ action: 'push', shareId: idA }, 'pushReceived');
    assert.equal(pushed.data!.peeraddr, a.address, 'rejected overrides left the session as it was');
    a.close(); b.close();
  }));

test('shareId: true mints a new shareId, returns it, and retires the old one at once', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target);
    const b = await WirePeer.open(target);
    const oldId = await a.announce();
    await b.announce();
    const r = await a.request({ action: 'pulse', shareId: true }, 'pulseReceived');
    const newId = r.data!.shareId as string;
    assert.notEqual(newId, oldId);
    assert.equal(newId.length, 12);
    assert.equal(newId.slice(0, 2), oldId.slice(0, 2), 'same address, same bucket');
    assert.equal((await b.request({ action: 'push', shareId: oldId }, 'error')).data!.code, 'UNKNOWN_SHARE_ID');
    assert.equal((await b.request({ action: 'push', shareId: newId }, 'pushReceived')).data!.peerShareId, newId);
    // and a plain pulse now reports the new id
    assert.equal((await a.request({ action: 'pulse' }, 'pulseReceived')).data!.shareId, newId);
    a.close(); b.close();
  }));
