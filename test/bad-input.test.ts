// Every kind of bad input gets its error code (or, where answering a source with
// no session would amplify, a counted drop), and never disturbs other sessions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WirePeer, withTracker, wireBytes } from './helpers/wire.js';

test('each malformed request from a client with a session gets its stable error code', () =>
  withTracker({ maxDatagram: 512 }, async (_t, target) => {
    const p = await WirePeer.open(target);
    await p.announce();
    const cases: [string | Buffer, string][] = [
      ['x'.repeat(513), 'DATAGRAM_TOO_LARGE'],
      ['hello', 'NOT_JSON'],
      ['{"action":"pulse"', 'NOT_JSON'],
      [Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), 'NOT_JSON'], // invalid UTF-8
      ['', 'NOT_JSON'],
      ['[1,2,3]', 'NOT_AN_OBJECT'],
      ['"announce"', 'NOT_AN_OBJECT'],
      ['null', 'NOT_AN_OBJECT'],
      ['{}', 'MISSING_ACTION'],
      ['{"action":"dance"}', 'UNKNOWN_ACTION'],
      ['{"action":"ANNOUNCE"}', 'UNKNOWN_ACTION'],
      ['{"action":5}', 'INVALID_FIELD'],
      ['{"action":"push"}', 'INVALID_FIELD'],
      ['{"action":"push","shareId":42}', 'INVALID_FIELD'],
      ['{"action":"pulse","shareId":"maybe"}', 'INVALID_FIELD'],
      [JSON.stringify({ action: 'push', shareId: 'A'.repeat(13) }), 'FIELD_TOO_LONG'],
      [JSON.stringify({ action: 'push', shareId: 'A'.repeat(400) }), 'FIELD_TOO_LONG'],
    ];
    // A session that proved it receives is not exempt from the 3x budget (a datagram
    // from its address may be forged): the message goes first (the code's own, then
    // an empty one), and a request too small even for the code alone gets nothing.
    let full = 0;
    for (const [bytes, code] of cases) {
      p.send(bytes);
      const got = await p.settle();
      const sent = wireBytes(bytes);
      const bare = wireBytes(`{"action":"error","data":{"code":"${code}","message":""}}`);
      if (bare > 3 * sent) { assert.deepEqual(got, [], `for ${String(bytes).slice(0, 40)}: too small to answer`); continue; }
      assert.equal(got.length, 1, `for ${String(bytes).slice(0, 40)}`);
      const r = got[0]!;
      assert.equal(r.data!.code, code, `for ${String(bytes).slice(0, 40)}`);
      assert.equal(typeof r.data!.message, 'string');
      assert.ok(wireBytes(r.raw) <= 3 * sent, `${wireBytes(r.raw)} B for ${sent} B`);
      if ((r.data!.message as string).length > 0) full++;
    }
    assert.ok(full >= 8, `${full} errors with their message`);
    p.close();
  }));

test('a datagram of exactly the size limit is accepted', () =>
  withTracker({ maxDatagram: 512 }, async (_t, target) => {
    const p = await WirePeer.open(target);
    const msg = JSON.stringify({ action: 'announce', pad: '' });
    const padded = JSON.stringify({ action: 'announce', pad: 'x'.repeat(512 - msg.length) });
    assert.equal(padded.length, 512);
    assert.equal((await p.request(padded, 'announceReceived')).action, 'announceReceived');
    p.close();
  }));

test('hostile JSON (deep nesting, __proto__, huge numbers, extra fields) is answered, not thrown on', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target);
    const id = await p.announce();
    assert.equal((await p.request('['.repeat(400) + ']'.repeat(400), 'error')).data!.code, 'NOT_AN_OBJECT');
    assert.equal((await p.request('{"__proto__":{"action":"announce"}}', 'error')).data!.code, 'MISSING_ACTION');
    assert.equal((await p.request('{"action":"pulse","constructor":1,"port":1e400,"extra":[1,2]}', 'pulseReceived')).data!.shareId, id);
    assert.equal((await p.request('  {"action" : "pulse"}\n', 'pulseReceived')).data!.status, '0');
    p.close();
  }));

test('errors that would amplify toward a source with no session are dropped and counted', () =>
  withTracker({}, async (tracker, target) => {
    const p = await WirePeer.open(target);
    p.send(''); // 28 bytes on the wire; the NOT_JSON error is 86 even with no message: more than 3x
    assert.deepEqual(await p.settle(), []);
    const q = await WirePeer.open(target, '127.0.0.2');
    q.send('{}'); // 30 bytes on the wire; the MISSING_ACTION error is 91 even with no message
    assert.deepEqual(await q.settle(), []);
    // a long enough bad request is answered: the error is under 3x its wire bytes
    const long = 'this datagram is not JSON at all';
    assert.equal((await q.request(long, 'error')).data!.code, 'NOT_JSON');
    const stats = await tracker.stats();
    const drops = stats.shards.reduce((n, s) => n + (s.counters.drops.amplification ?? 0), 0);
    assert.equal(drops, 2);
    q.close();
    p.close();
  }));

test('garbage from one client never touches another client\'s session', () =>
  withTracker({}, async (_t, target) => {
    const victim = await WirePeer.open(target);
    const friend = await WirePeer.open(target);
    const attacker = await WirePeer.open(target);
    const victimId = await victim.announce();
    await friend.announce();
    await attacker.announce();
    for (const junk of ['{"action":"pulse","override":true,"ip":"6.6.6.6","port":6666}', '{"action":"pulse","shareId":true}',
      JSON.stringify({ action: 'push', shareId: victimId }), '\u0000\u0001', '{"action":"announce","shareId":"' + victimId + '"}']) {
      attacker.send(junk);
    }
    await attacker.settle(); // every piece of junk has been handled
    await victim.next('income'); // the attacker's legitimate push produced an income
    const r = await victim.request({ action: 'pulse' }, 'pulseReceived');
    assert.deepEqual(r.data, { status: '0', overriden: 'false', shareId: victimId });
    const pushed = await friend.request({ action: 'push', shareId: victimId }, 'pushReceived');
    assert.equal(pushed.data!.peeraddr, victim.address);
    victim.close(); friend.close(); attacker.close();
  }));

test('the largest UDP datagram (65507 bytes) and a truncated request are answered, and the session goes on', () =>
  withTracker({}, async (tracker, target) => {
    const p = await WirePeer.open(target);
    const id = await p.announce();
    assert.equal((await p.request(Buffer.alloc(65507, 0x78), 'error')).data!.code, 'DATAGRAM_TOO_LARGE');
    assert.equal((await p.request(`{"action":"push","shareId":"${id.slice(0, 5)}`, 'error')).data!.code, 'NOT_JSON');
    assert.equal((await p.request({ action: 'pulse' }, 'pulseReceived')).data!.shareId, id);
    assert.equal((await tracker.stats()).main.tooLarge, 1);
    p.close();
  }));

test('a burst larger than one 64 KiB batch is carried over several batches, every request answered', () =>
  withTracker({ shards: 1 }, async (tracker, target) => {
    const p = await WirePeer.open(target);
    const id = await p.announce();
    p.socket.setRecvBufferSize(4 << 20); // room for every reply at once on the client's side
    const before = (await tracker.stats()).main.batches;
    // 1000 padded pulses of ~130 bytes: about twice what one batch holds
    const pulse = JSON.stringify({ action: 'pulse', pad: 'x'.repeat(100) });
    for (let i = 0; i < 1000; i++) p.send(pulse);
    for (let i = 0; i < 1000; i++) assert.equal((await p.next('pulseReceived')).data!.shareId, id, `reply ${i}`);
    const { main } = await tracker.stats();
    assert.ok(main.batches - before >= 2, `${main.batches - before} batches`);
    assert.equal(main.shardBusy, 0);
    p.close();
  }));
