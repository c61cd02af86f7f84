// The documented dialect's optional `local` field (issue 25), over real UDP with raw
// datagrams: its limits get clear errors; the candidates reach the paired peer
// alone (pushReceived: the target's, income: the requester's), and only a client
// whose own session sent candidates; nobody else ever sees them; the legacy
// dialect and clients that never send the field see nothing new.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PADDED_ANNOUNCE, WirePeer, ipInShard, withTracker, type Reply } from './helpers/wire.js';

/** Announces (padded) with `local` when given, then proves with a pulse. */
async function announceWith(p: WirePeer, local?: unknown): Promise<string> {
  const msg = JSON.parse(PADDED_ANNOUNCE) as Record<string, unknown>;
  if (local !== undefined) msg.local = local;
  const r = await p.request(msg, 'announceReceived');
  const shareId = r.data!.shareId as string;
  await p.settle(); // the legacy form, when it comes too
  await p.request({ action: 'pulse', shareId }, 'pulseReceived');
  return shareId;
}

test('the field\'s limits: each bad value gets INVALID_FIELD or FIELD_TOO_LONG with a message that says what is wrong', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.63.1');
    await announceWith(a);
    const cases: [unknown, string, RegExp][] = [
      ['10.0.0.1:5', 'INVALID_FIELD', /"local" must be an array/],
      [{ a: 1 }, 'INVALID_FIELD', /"local" must be an array/],
      [['10.0.0.1:1', '10.0.0.2:1', '10.0.0.3:1', '10.0.0.4:1', '10.0.0.5:1'], 'FIELD_TOO_LONG', /at most 4 addresses; it has 5/],
      [['10.0.0.1'], 'INVALID_FIELD', /"local"\[0\] is not "ip:port"/],
      [['laptop.local:4000'], 'INVALID_FIELD', /"local"\[0\] is not "ip:port"/],
      [['2001:db8::5:4000'], 'INVALID_FIELD', /"local"\[0\] is not "ip:port"/],
      [['[10.0.0.1]:4000'], 'INVALID_FIELD', /in brackets/],
      [['10.0.0.1:4000', 7], 'INVALID_FIELD', /"local"\[1\] is not a string/],
      [['10.0.0.1:0'], 'INVALID_FIELD', /port outside 1-65535/],
      [['10.0.0.1:65536'], 'INVALID_FIELD', /port outside 1-65535/],
      [['10.0.0.256:4000'], 'INVALID_FIELD', /is not "ip:port"/],
      [['127.0.0.1:4000'], 'INVALID_FIELD', /"local"\[0\] is a loopback address/],
      [['[::1]:4000'], 'INVALID_FIELD', /is a loopback address/],
      [['[fe80::1]:4000'], 'INVALID_FIELD', /is a link-local IPv6 address/],
      [['[fe80::1%eth0]:4000'], 'INVALID_FIELD', /is not "ip:port"/],
      [['0.0.0.0:4000'], 'INVALID_FIELD', /unspecified/],
      [['[::]:4000'], 'INVALID_FIELD', /unspecified/],
      [['224.0.0.251:5353'], 'INVALID_FIELD', /multicast/],
      [['[ff02::1]:4000'], 'INVALID_FIELD', /multicast/],
      [['10.0.0.1:4000', '10.0.0.1:4000'], 'INVALID_FIELD', /"local"\[1\] repeats 10\.0\.0\.1:4000/],
      [['[2001:DB8::5]:4000', '[2001:db8:0::5]:4000'], 'INVALID_FIELD', /"local"\[1\] repeats \[2001:db8::5\]:4000/],
      [[`[${'0'.repeat(60)}:1]:4000`], 'FIELD_TOO_LONG', /"local"\[0\] is longer than 53 characters/],
    ];
    for (const [local, code, message] of cases) {
      for (const action of ['pulse', 'announce']) {
        // padded: an error's full message is larger than 3x a short request, the most an unauthenticated request gets
        const r = await a.request({ action, local, pad: 'x'.repeat(80) }, 'error');
        assert.equal(r.data!.code, code, `${action} ${JSON.stringify(local)}: ${r.raw}`);
        assert.match(r.data!.message as string, message, `${action} ${JSON.stringify(local)}`);
      }
    }
    // nothing else came: no reply but the errors
    assert.deepEqual((await a.settle()).map((r) => r.action), []);
    a.close();
  }));

test('the paired peer alone sees the candidates: the target\'s in pushReceived, the requester\'s in income, canonical', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.63.2');
    const b = await WirePeer.open(target, '127.0.63.3');
    const idA = await announceWith(a, ['10.0.1.2:41000']);
    await announceWith(b);
    // b reports its candidates in a later pulse (an IPv4-mapped and an uncanonical IPv6 literal)
    await b.request({ action: 'pulse', local: ['[::ffff:10.0.1.3]:41001', '[2001:DB8:0::5]:41001'] }, 'pulseReceived');
    const pushed = await b.request({ action: 'push', shareId: idA }, 'pushReceived');
    assert.deepEqual(pushed.data!.local, ['10.0.1.2:41000']);
    const income = await a.next('income');
    assert.deepEqual(income.data!.local, ['10.0.1.3:41001', '[2001:db8::5]:41001']);
    // "local": [] clears them: a's next pair sees none
    await a.request({ action: 'pulse', local: [] }, 'pulseReceived');
    const again = await b.request({ action: 'push', shareId: idA }, 'pushReceived');
    assert.equal(again.data!.local, undefined, again.raw);
    const income2 = await a.next('income');
    assert.equal(income2.data!.local, undefined, 'a sent no candidates now, so it is shown none');
    a.close(); b.close();
  }));

test('a client that never sends the field sees nothing new, and is shown to nobody with candidates', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.63.4');
    const c = await WirePeer.open(target, '127.0.63.5');
    const idA = await announceWith(a, ['10.0.1.2:41000', '[2001:db8::2]:41000']);
    const idC = await announceWith(c);
    const pushed = await c.request({ action: 'push', shareId: idA }, 'pushReceived');
    assert.deepEqual(Object.keys(pushed.data!).sort(), ['peerShareId', 'peeraddr']);
    const income = await a.next('income');
    assert.equal(income.data!.local, undefined);
    // and the other way round: c's income from a peer with candidates shows none of them
    await a.request({ action: 'push', shareId: idC }, 'pushReceived');
    const incomeC = await c.next('income');
    assert.deepEqual(Object.keys(incomeC.data!).sort(), ['peerShareId', 'peeraddr']);
    a.close(); c.close();
  }));

test('a legacy client is shown no candidates: pushed and its income are as before', () =>
  withTracker({}, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.63.6');
    const l = await WirePeer.open(target, '127.0.63.7');
    const idA = await announceWith(a, ['10.0.1.2:41000']);
    const rl = await l.request({ action: 'announce', id: 'abcd1234' }, 'announced');
    const idL = rl.data!.shareId as string;
    await l.request({ action: 'alive' }, 'alived');
    const pushed = await l.request({ action: 'push', shareId: idA }, 'pushed');
    assert.equal(pushed.raw, `{"action":"pushed","data":{"peeraddr":"127.0.63.6:${a.port}","peerShareId":"${idA}"}}`);
    await a.next('income');
    await a.request({ action: 'push', shareId: idL }, 'pushReceived');
    const income = await l.next('income');
    assert.equal(income.raw, `{"action":"income","data":{"peeraddr":"127.0.63.6:${a.port}","peerShareId":"${idA}"}}`);
    a.close(); l.close();
  }));

test('a third party that pushes to nobody never receives anyone\'s local addresses', () =>
  withTracker({ pushBurst: 1000, pushRate: 1000 }, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.63.8');
    const idA = await announceWith(a, ['10.0.1.2:41000']);
    const x = await WirePeer.open(target, '127.0.63.9');
    await announceWith(x, ['10.9.9.9:4000']);
    const noSession = await WirePeer.open(target, '127.0.63.10');
    // shareIds of a's bucket that are not a's, and random ones
    const guesses = Array.from({ length: 40 }, (_, i) => i < 20 ? idA.slice(0, 2) + String(i).padStart(10, 'x') : 'zz' + String(i).padStart(10, '0'));
    for (const g of guesses) { x.send({ action: 'push', shareId: g }); noSession.send({ action: 'push', shareId: g }); }
    const seen: Reply[] = [...await x.settle(), ...await noSession.settle()];
    assert.ok(seen.length > 0);
    for (const r of seen) assert.doesNotMatch(r.raw, /10\.0\.1\.2|"local"/, r.raw);
    assert.ok(seen.every((r) => r.action === 'error' || r.action === 'expired'), seen.map((r) => r.raw).join(' | '));
    // and a was told of no one
    assert.deepEqual((await a.settle()).map((r) => r.action), []);
    a.close(); x.close(); noSession.close();
  }));

test('the candidates travel with a push forwarded to another shard', () =>
  withTracker({ shards: 2 }, async (_t, target) => {
    // two addresses whose sessions live in different shards
    const ipA = ipInShard('127.0.64', 2, 0), ipB = ipInShard('127.0.64', 2, 1);
    const a = await WirePeer.open(target, ipA);
    const b = await WirePeer.open(target, ipB);
    const idA = await announceWith(a, ['10.0.1.2:41000']);
    await announceWith(b, ['[2001:db8::3]:41001']);
    const pushed = await b.request({ action: 'push', shareId: idA }, 'pushReceived');
    assert.deepEqual(pushed.data!.local, ['10.0.1.2:41000']);
    const income = await a.next('income');
    assert.deepEqual(income.data!.local, ['[2001:db8::3]:41001']);
    a.close(); b.close();
  }));
