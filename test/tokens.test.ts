// Session tokens on the wire (docs/security.md): a token announce, token requests
// with tagged replies and income, a wrong token, and requests without the token
// from a token session's address, which change nothing. Real tracker, real UDP,
// raw datagrams. A datagram "forged" from a session's address is sent here from
// that session's own socket: the tracker sees the same source address and port
// and the same bytes, which is all a forger can control.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { secretOfToken, verifyTagged } from '../src/auth/tag.js';
import { WirePeer, withTracker, wireBytes, type Reply } from './helpers/wire.js';

const TOKEN_ANNOUNCE = '{"action":"announce","token":true}';
const SECRET = 'the-secret-coturn-has';
const RELAY = { turnUrl: 'turn:127.0.0.1:3478', turnSecret: SECRET };

/** A token session: its shareId, token and the key its tags are checked with. */
interface TokenSession { shareId: string; token: string; key: Uint32Array }

async function tokenAnnounce(p: WirePeer): Promise<TokenSession & { reply: Reply }> {
  const reply = await p.request(TOKEN_ANNOUNCE, 'announceReceived');
  const data = reply.data as { shareId: string; token: string };
  const key = secretOfToken(data.token)!;
  assert.ok(key !== null, 'the token is <shareId>.<22 characters>');
  return { shareId: data.shareId, token: data.token, key, reply };
}

const tagged = (r: Reply, key: Uint32Array): boolean => verifyTagged(Buffer.from(r.raw, 'utf8'), key);
const pulse = (token: string, extra: Record<string, unknown> = {}): string => JSON.stringify({ action: 'pulse', token, ...extra });

test('a token announce gets its shareId and token, tagged; token pulses are answered tagged with what the tracker sees', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target, '127.0.60.1');
    const s = await tokenAnnounce(p);
    assert.match(s.token, new RegExp(`^${s.shareId}\\.[A-Za-z0-9_-]{22}$`));
    // the bare token announce (34 bytes): "observed" does not fit its 3x, the rest does
    assert.equal(s.reply.raw, `{"action":"announceReceived","data":{"shareId":"${s.shareId}","token":"${s.token}"},"tag":"${s.reply.raw.slice(-13, -2)}"}`);
    assert.ok(tagged(s.reply, s.key), 'the announce reply is tagged with the session secret');
    assert.deepEqual(await p.settle(), [], 'the token announce is answered in the documented form only');
    // with its NAT type, it also learns what the tracker sees; a retry gets the same shareId and token
    const again = await p.request('{"action":"announce","token":true,"nat":"endpoint-independent"}', 'announceReceived');
    assert.equal(again.raw, `{"action":"announceReceived","data":{"shareId":"${s.shareId}","token":"${s.token}","observed":"${p.address}"},"tag":"${again.raw.slice(-13, -2)}"}`);
    assert.ok(tagged(again, s.key));
    // the fast path's exact bytes, and a parsed token pulse
    for (const req of [`{"action":"pulse","token":"${s.token}"}`, pulse(s.token, { nat: 'endpoint-independent' })]) {
      const r = await p.request(req, 'pulseReceived');
      assert.deepEqual(r.data, { status: '0', overriden: 'false', shareId: s.shareId, observed: p.address });
      assert.ok(tagged(r, s.key), req);
    }
    p.close();
  }));

test('a wrong token is refused untagged (TOKEN_INVALID); a malformed one is INVALID_FIELD; a token in announce is INVALID_FIELD', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target, '127.0.60.2');
    const s = await tokenAnnounce(p);
    const last = s.token.at(-2) === 'A' ? 'B' : 'A';
    const wrong = s.token.slice(0, -2) + last + s.token.at(-1);
    const r = await p.request(pulse(wrong), 'error');
    assert.equal(r.data!.code, 'TOKEN_INVALID');
    assert.ok(!r.raw.includes('"tag"'), 'untagged');
    assert.equal((await p.request(pulse(s.token + 'x'), 'error')).data!.code, 'INVALID_FIELD');
    assert.equal((await p.request(JSON.stringify({ action: 'announce', token: s.token }), 'error')).data!.code, 'INVALID_FIELD');
    // a valid token for a shareId with no live session: NO_SESSION, tagged (a pulse: status "1")
    p.close();
  }));

test('without its token, a token session\'s address changes nothing: pulse, override, regeneration, announce, push as it, relay', () =>
  withTracker({ ...RELAY }, async (t, target) => {
    const v = await WirePeer.open(target, '127.0.60.3');
    const friend = await WirePeer.open(target, '127.0.60.4');
    const friendId = await friend.announce();
    const s = await tokenAnnounce(v);
    await v.request(pulse(s.token), 'pulseReceived'); // it has used its token
    const forged = [
      '{"action":"pulse"}',
      '{"action":"alive"}',
      '{"action":"pulse","override":true,"multiaddr":"/ip4/6.6.6.6/udp/1"}',
      '{"action":"pulse","shareId":true}',
      '{"action":"announce"}',
      '{"action":"announce","token":true}',
      `{"action":"push","shareId":"${friendId}"}`,
      '{"action":"relay"}',
    ];
    for (const f of forged) {
      const r = await v.request(f, 'error');
      assert.equal(r.data!.code, 'TOKEN_REQUIRED', f);
      assert.ok(!r.raw.includes('"tag"'), f);
    }
    assert.deepEqual(await friend.settle(), [], 'the friend was told nothing');
    // the session is as it was: same shareId, no override, no relay credential
    const pushed = await friend.request({ action: 'push', shareId: s.shareId }, 'pushReceived');
    assert.equal(pushed.data!.peeraddr, v.address);
    assert.equal(pushed.data!.multiaddr, undefined);
    const stats = await t.stats();
    const minted = stats.shards.reduce((n, sh) => n + (sh.counters?.relayMinted ?? 0), 0);
    assert.equal(minted, 0, 'no relay credential was minted');
    // and the token still works
    const income = await v.next('income');
    assert.ok(tagged(income, s.key), 'income to a token session is tagged');
    const r = await v.request(pulse(s.token), 'pulseReceived');
    assert.equal(r.data!.shareId, s.shareId);
    v.close(); friend.close();
  }));

test('token push and relay: replies tagged, income to the token target tagged, the requester shown at its address', () =>
  withTracker({ ...RELAY }, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.60.5');
    const b = await WirePeer.open(target, '127.0.60.6');
    const sa = await tokenAnnounce(a), sb = await tokenAnnounce(b);
    await a.request(pulse(sa.token), 'pulseReceived');
    await b.request(pulse(sb.token), 'pulseReceived');
    const pr = await a.request(JSON.stringify({ action: 'push', shareId: sb.shareId, token: sa.token }), 'pushReceived');
    assert.equal(pr.data!.peeraddr, b.address);
    assert.ok(tagged(pr, sa.key), 'pushReceived tagged with the requester\'s secret');
    const inc = await b.next('income');
    assert.equal(inc.data!.peeraddr, a.address);
    assert.ok(tagged(inc, sb.key), 'income tagged with the target\'s secret');
    assert.ok(!tagged(inc, sa.key));
    const rr = await a.request(JSON.stringify({ action: 'relay', token: sa.token }), 'relayReceived');
    assert.ok(tagged(rr, sa.key), 'relayReceived tagged');
    assert.equal(typeof rr.data!.credential, 'string');
    a.close(); b.close();
  }));

test('a token whose session ended gets NO_SESSION, tagged (pulse: status "1")', () =>
  withTracker({ ttl: 1 }, async (t, target) => {
    const p = await WirePeer.open(target, '127.0.60.7');
    const s = await tokenAnnounce(p);
    await p.request(pulse(s.token), 'pulseReceived');
    // polled: the session expires on the tracker's clock
    while ((await t.stats()).shards.some((sh) => sh.peers > 0)) await new Promise((res) => setTimeout(res, 100));
    const r = await p.request(pulse(s.token), 'pulseReceived');
    assert.equal(r.data!.status, '1');
    assert.ok(tagged(r, s.key), 'tagged');
    const e = await p.request(JSON.stringify({ action: 'push', shareId: 'AAAAAAAAAAAA', token: s.token }), 'error');
    assert.equal(e.data!.code, 'NO_SESSION');
    assert.ok(tagged(e, s.key));
    p.close();
  }));

test('the token survives a restart from the snapshot (the random session key is kept in it); a session key file gives the same tokens on every start', async () => {
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { startTracker } = await import('../src/tracker.js');
  const { TEST_IO } = await import('./helpers/wire.js');
  const dir = mkdtempSync(join(tmpdir(), 'sobani-tokens-'));
  const base = { host: '127.0.0.1', port: 0, shards: 2, logLevel: 'silent' as const, io: TEST_IO };
  for (const keyed of [false, true]) {
    const snapshot = join(dir, `s-${keyed}.snapshot`);
    const keyFile = join(dir, 'session.key');
    writeFileSync(keyFile, 'a secret of more than sixteen characters\n');
    const config = { ...base, snapshot, ...(keyed ? { sessionKeyFile: keyFile } : {}) };
    let tracker = await startTracker(config);
    let p = await WirePeer.open({ address: '127.0.0.1', port: tracker.addresses[0]!.port }, '127.0.61.1');
    const s = await tokenAnnounce(p);
    await p.request(pulse(s.token), 'pulseReceived');
    const port = p.port;
    p.close();
    await tracker.close();
    tracker = await startTracker(config);
    try {
      p = await WirePeer.open({ address: '127.0.0.1', port: tracker.addresses[0]!.port }, '127.0.61.1', port);
      const r = await p.request(pulse(s.token), 'pulseReceived');
      assert.equal(r.data!.status, '0', keyed ? 'key file' : 'random key from the snapshot');
      assert.equal(r.data!.shareId, s.shareId);
      assert.ok(tagged(r, s.key));
      // and the session is still a token session: without the token, nothing
      assert.equal((await p.request('{"action":"pulse"}', 'error')).data!.code, 'TOKEN_REQUIRED');
      p.close();
    } finally {
      await tracker.close();
    }
  }
});

test('forged pushes from a proven address to a session with a large multiaddr: at most 3x on the wire at the victim (issue 23, finding 2)', () =>
  withTracker({}, async (_t, target) => {
    const attacker = await WirePeer.open(target, '127.0.62.1');
    const tId = await attacker.announce();
    await attacker.request({ action: 'pulse', override: true, multiaddr: 'm'.repeat(256) }, 'pulseReceived');
    const victim = await WirePeer.open(target, '127.0.62.2');
    await victim.announce(); // proven: it sent its shareId back from its address
    await victim.settle();
    // 100 pushes to T "from" the victim's address and port
    const forged = JSON.stringify({ action: 'push', shareId: tId });
    for (let i = 0; i < 100; i++) victim.send(forged);
    // T may live in another shard: its shard answers (settle() is no barrier for that), one reply per push
    const got: Reply[] = [];
    for (let i = 0; i < 100; i++) got.push(await victim.next('pushReceived'));
    got.push(...await victim.settle());
    const atVictim = wireBytes(...got.map((r) => r.raw));
    const sent = wireBytes(...Array(100).fill(forged) as string[]);
    assert.ok(got.length > 0, 'the pushes are answered');
    assert.ok(atVictim <= 3 * sent, `${atVictim} B at the victim for ${sent} B forged`);
    if (process.env.SOBANI_SHOW_BYTES) console.log(`finding 2: ${got.length} datagrams, ${atVictim} B at the victim for ${sent} B forged`);
    for (const r of got) assert.ok(wireBytes(r.raw) <= 3 * wireBytes(forged), `a ${wireBytes(r.raw)} B reply`);
    attacker.close(); victim.close();
  }));
