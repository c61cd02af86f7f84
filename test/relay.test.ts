// The tracker's side of the relay, over real UDP with raw datagrams: relay
// credentials minted in coturn's use-auth-secret scheme for proved sessions only,
// every limit hit, and a relayed address carried from a push into the target's
// income. (That coturn accepts what is minted: test/relay-coturn.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTracker } from '../src/tracker.js';
import { relayAllowed, relayIpsOf } from '../src/relay/allowed.js';
import { TrackerClient, TrackerError, type IncomeEvent } from '../src/client/index.js';
import { freePort, httpGet, sample } from './helpers/ops.js';
import { EXPECT_MS, PADDED_ANNOUNCE, TEST_IO, WirePeer, withTracker } from './helpers/wire.js';

const SECRET = 'the-secret-coturn-has';
/** The relayed addresses the tests push are on 198.51.100.9 and 2001:db8::7: a relay that relays on other IPs than it listens on (relayIps). */
const RELAY = { turnUrl: 'turn:127.0.0.1:3478,turn:[::1]:3479', turnSecret: SECRET, relayIps: '198.51.100.9, 2001:db8::7' };

/** A documented session that proved it receives. */
async function proved(p: WirePeer): Promise<string> {
  return p.announce();
}

/** A session that announced but never proved it receives. */
async function unproved(p: WirePeer): Promise<string> {
  const id = (await p.request(PADDED_ANNOUNCE, 'announceReceived')).data!.shareId as string;
  await p.settle(); // the legacy form too
  return id;
}

const hmac = (username: string) => createHmac('sha1', SECRET).update(username).digest('base64');

/** Waits until unix second `s` has begun (on the wall clock the tracker reads too). */
async function untilSecond(s: number): Promise<void> {
  while (Date.now() < s * 1000) await sleep(s * 1000 - Date.now());
}

test('without a relay configured, a relay request gets RELAY_NOT_CONFIGURED', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target, '127.0.62.1');
    await proved(p);
    const r = await p.request({ action: 'relay' }, 'error');
    assert.equal(r.data!.code, 'RELAY_NOT_CONFIGURED');
    p.close();
  }));

test('a proved session gets credentials coturn\'s use-auth-secret checks: "<expiry>:<shareId>", base64(HMAC-SHA1(secret, username))', () =>
  withTracker(RELAY, async (_t, target) => {
    const p = await WirePeer.open(target, '127.0.62.2');
    const shareId = await proved(p);
    const before = Math.floor(Date.now() / 1000);
    const r = await p.request({ action: 'relay' }, 'relayReceived');
    const after = Math.floor(Date.now() / 1000); // the tracker minted it between the two
    const d = r.data as { urls: string[]; username: string; credential: string; ttl: number };
    assert.deepEqual(d.urls, ['turn:127.0.0.1:3478', 'turn:[::1]:3479']);
    const [expiry, id] = d.username.split(':');
    assert.equal(id, shareId);
    assert.ok(Number(expiry) >= before + 600 && Number(expiry) <= after + 600, `expiry ${expiry}, asked at ${before}, answered at ${after}`);
    assert.equal(d.credential, hmac(d.username));
    assert.equal(d.ttl, 600);
    p.close();
  }));

test('no session, or a session that never proved it receives: no credentials', () =>
  withTracker(RELAY, async (_t, target) => {
    const stranger = await WirePeer.open(target, '127.0.62.3');
    assert.equal((await stranger.request({ action: 'relay' }, 'error')).data!.code, 'NO_SESSION');
    const p = await WirePeer.open(target, '127.0.62.4');
    await unproved(p);
    const r = await p.request({ action: 'relay' }, 'error');
    assert.equal(r.data!.code, 'PROOF_REQUIRED');
    assert.ok(!r.raw.includes('credential'));
    stranger.close(); p.close();
  }));

test('per session: asked again within relayInterval, the same credentials with less ttl; after it, new ones', () =>
  // The interval counts whole seconds of the credential's expiry (unix seconds, as
  // coturn reads it): a credential minted at second T is handed out again until
  // second T + relayInterval. T is read off the first credential (its expiry less the
  // 600 s ttl). Asked again as second T+1 begins (so with less ttl), the request has
  // 4 s to be served inside the 5 s interval; asked once second T+5 has begun, it is
  // outside, however long it takes.
  withTracker({ ...RELAY, relayInterval: 5 }, async (tracker, target) => {
    const p = await WirePeer.open(target, '127.0.62.5');
    await proved(p);
    const first = (await p.request({ action: 'relay' }, 'relayReceived')).data!;
    const minted = Number((first.username as string).split(':')[0]) - 600;
    await untilSecond(minted + 1);
    const again = (await p.request({ action: 'relay' }, 'relayReceived')).data!;
    assert.equal(again.username, first.username);
    assert.equal(again.credential, first.credential);
    assert.ok((again.ttl as number) < (first.ttl as number), `ttl ${again.ttl} after ${first.ttl}`);
    await untilSecond(minted + 5);
    const fresh = (await p.request({ action: 'relay' }, 'relayReceived')).data!;
    assert.notEqual(fresh.username, first.username);
    assert.equal(fresh.credential, hmac(fresh.username as string));
    const c = (await tracker.stats()).shards.reduce((n, s) => ({ minted: n.minted + s.counters.relayMinted, reused: n.reused + s.counters.relayReused }), { minted: 0, reused: 0 });
    assert.deepEqual(c, { minted: 2, reused: 1 });
    p.close();
  }));

test('per IP: past relayRate (with its burst) a request gets RELAY_RATE_LIMITED', () =>
  withTracker({ ...RELAY, relayRate: 1, relayBurst: 2 }, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.62.6');
    const b = await WirePeer.open(target, '127.0.62.6'); // a second session behind the same IP
    await proved(a);
    await proved(b);
    // Sent back to back, the three are served together (one batch, one reading of the
    // clock), so no token comes back in between, however slow the machine.
    a.send({ action: 'relay' }); b.send({ action: 'relay' }); a.send({ action: 'relay' });
    await a.next('relayReceived');
    await b.next('relayReceived');
    const limited = await a.next('error');
    assert.equal(limited.data!.code, 'RELAY_RATE_LIMITED');
    await sleep(1100); // a token comes back
    await b.request({ action: 'relay' }, 'relayReceived');
    a.close(); b.close();
  }));

test('a push carrying a relayed address: the target finds it in income; only a proved requester may send one, and only an ip:port', () =>
  withTracker(RELAY, async (_t, target) => {
    const t = await WirePeer.open(target, '127.0.62.7');
    const r = await WirePeer.open(target, '127.0.62.8');
    const idT = await proved(t);
    await proved(r);
    const pushed = await r.request({ action: 'push', shareId: idT, relay: '198.51.100.9:49160' }, 'pushReceived');
    assert.equal(pushed.data!.peerShareId, idT);
    const income = await t.next('income');
    assert.equal(income.data!.relay, '198.51.100.9:49160');
    // an IPv6 relayed address, canonical
    await r.request({ action: 'push', shareId: idT, relay: '[2001:DB8:0:0::7]:3000' }, 'pushReceived');
    assert.equal((await t.next('income')).data!.relay, '[2001:db8::7]:3000');
    for (const bad of ['198.51.100.9', 'relay.example:3478', '198.51.100.9:0', '[::1:3478', 7]) {
      const e = await r.request({ action: 'push', shareId: idT, relay: bad }, 'error');
      assert.equal(e.data!.code, 'INVALID_FIELD', String(bad));
    }
    // a requester that never proved where it is cannot send anyone to an address of its choice
    const u = await WirePeer.open(target, '127.0.62.9');
    await unproved(u);
    assert.equal((await u.request({ action: 'push', shareId: idT, relay: '198.51.100.9:49160' }, 'error')).data!.code, 'PROOF_REQUIRED');
    // u's push was refused in u's shard, before any forwarding. Two barriers: a push
    // forwarded to t's shard could ride in the batch of t's first Binding, and the
    // shard handles a batch's requests before its forwards.
    const heard = [...await t.settle(), ...await t.settle()];
    assert.equal(heard.filter((x) => x.action === 'income').length, 0, 'and the target heard nothing of it');
    for (const p of [t, r, u]) p.close();
  }));

test('a legacy target gets its usual income, without the relayed address it could not use', () =>
  withTracker(RELAY, async (_t, target) => {
    const legacy = await WirePeer.open(target, '127.0.62.10');
    const idL = (await legacy.request('{"action":"announce"}', 'announceReceived')).data!.shareId as string;
    await legacy.request('{"action":"alive"}', 'alived');
    const r = await WirePeer.open(target, '127.0.62.11');
    await proved(r);
    await r.request({ action: 'push', shareId: idL, relay: '198.51.100.9:49160' }, 'pushReceived');
    assert.deepEqual(Object.keys((await legacy.next('income')).data!), ['peeraddr', 'peerShareId']);
    legacy.close(); r.close();
  }));

test('the relay state of a session survives a restart from a snapshot', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'sobani-relay-')), 's.snapshot');
  const config = { host: '127.0.0.1', port: 0, shards: 2, logLevel: 'silent' as const, io: TEST_IO, snapshot: file, ...RELAY };
  const first = await startTracker(config);
  const p = await WirePeer.open({ address: '127.0.0.1', port: first.addresses[0]!.port }, '127.0.62.12');
  await proved(p);
  const before = (await p.request({ action: 'relay' }, 'relayReceived')).data!;
  const port = p.port;
  p.close();
  await first.close();
  await sleep(1100); // a credential minted now would carry another expiry
  const second = await startTracker(config);
  try {
    const q = await WirePeer.open({ address: '127.0.0.1', port: second.addresses[0]!.port }, '127.0.62.12', port);
    const after = (await q.request({ action: 'relay' }, 'relayReceived')).data!;
    assert.equal(after.username, before.username, 'within relayInterval: the same credentials, across the restart');
    q.close();
  } finally {
    await second.close();
  }
});

test('/metrics counts relay credentials minted and reused, and relayed addresses forwarded', async () => {
  const metricsPort = await freePort();
  await withTracker({ ...RELAY, metricsPort }, async (_t, target) => {
    const a = await WirePeer.open(target, '127.0.62.13');
    const b = await WirePeer.open(target, '127.0.62.14');
    const idA = await proved(a);
    await proved(b);
    await b.request({ action: 'relay' }, 'relayReceived');
    await b.request({ action: 'relay' }, 'relayReceived');
    await b.request({ action: 'push', shareId: idA, relay: '198.51.100.9:49160' }, 'pushReceived');
    await a.next('income');
    const m = (await httpGet(metricsPort, '/metrics')).body;
    assert.equal(sample(m, 'sobani_relay_credentials_total', { result: 'minted' }), 1);
    assert.equal(sample(m, 'sobani_relay_credentials_total', { result: 'reused' }), 1);
    assert.equal(sample(m, 'sobani_relay_forwarded_total'), 1);
    assert.equal(sample(m, 'sobani_datagrams_in_total', { action: 'relay' }), 2);
    a.close(); b.close();
  });
});

test('the client library: relayCredentials(), push with relay, and income carrying it', () =>
  withTracker(RELAY, async (_t, target) => {
    const a = new TrackerClient({ tracker: { host: target.address, port: target.port }, socket: { host: '127.0.62.15' } });
    const b = new TrackerClient({ tracker: { host: target.address, port: target.port }, socket: { host: '127.0.62.16' } });
    try {
      const idA = await a.announce();
      await b.announce();
      const creds = await b.relayCredentials({ timeoutMs: EXPECT_MS });
      assert.deepEqual(creds.urls, RELAY.turnUrl.split(','));
      assert.equal(creds.credential, hmac(creds.username));
      const income = new Promise<IncomeEvent>((resolve) => a.once('income', resolve));
      await b.push(idA, { relay: '198.51.100.9:49160', timeoutMs: EXPECT_MS });
      assert.equal((await income).relay, '198.51.100.9:49160');
      const none = new TrackerClient({ tracker: { host: target.address, port: target.port }, socket: { host: '127.0.62.17' }, dialect: 'legacy' });
      await none.announce();
      await assert.rejects(none.relayCredentials({ timeoutMs: EXPECT_MS }), (e: unknown) => e instanceof TrackerError && e.code === 'PROOF_REQUIRED');
      await none.close();
    } finally {
      await a.close(); await b.close();
    }
  }));

test('a push\'s relayed address must be on a relay the tracker hands out (turnUrl\'s hosts by default): another gets RELAY_NOT_ALLOWED, and the target hears nothing', () =>
  withTracker({ turnUrl: 'turn:127.0.0.1:3478', turnSecret: SECRET }, async (_t, target) => {
    const t = await WirePeer.open(target, '127.0.62.20');
    const r = await WirePeer.open(target, '127.0.62.21');
    const idT = await proved(t);
    await proved(r);
    // on the relay's IP: forwarded
    await r.request({ action: 'push', shareId: idT, relay: '127.0.0.1:49160' }, 'pushReceived');
    assert.equal((await t.next('income')).data!.relay, '127.0.0.1:49160');
    // the requester's own address, or any other: refused before anything is sent to the target
    for (const own of ['127.0.62.21:40000', '198.51.100.9:49160', '[::1]:49160']) {
      const e = await r.request({ action: 'push', shareId: idT, relay: own }, 'error');
      assert.equal(e.data!.code, 'RELAY_NOT_ALLOWED', own);
      assert.equal(e.data!.message, 'that relay address is not on a relay this tracker hands out');
    }
    const heard = [...await t.settle(), ...await t.settle()];
    assert.equal(heard.filter((x) => x.action === 'income').length, 0, 'the target heard nothing of them');
    t.close(); r.close();
  }));

test('relayIps replaces turnUrl\'s hosts; without any relay, every relayed address is refused', async () => {
  await withTracker(RELAY, async (_t, target) => {
    const t = await WirePeer.open(target, '127.0.62.22');
    const r = await WirePeer.open(target, '127.0.62.23');
    const idT = await proved(t);
    await proved(r);
    assert.equal((await r.request({ action: 'push', shareId: idT, relay: '127.0.0.1:49160' }, 'error')).data!.code, 'RELAY_NOT_ALLOWED');
    await r.request({ action: 'push', shareId: idT, relay: '198.51.100.9:49160' }, 'pushReceived');
    t.close(); r.close();
  });
  await withTracker({}, async (_t, target) => {
    const t = await WirePeer.open(target, '127.0.62.24');
    const r = await WirePeer.open(target, '127.0.62.25');
    const idT = await proved(t);
    await proved(r);
    assert.equal((await r.request({ action: 'push', shareId: idT, relay: '198.51.100.9:49160' }, 'error')).data!.code, 'RELAY_NOT_ALLOWED');
    // a push without a relayed address is served as ever
    await r.request({ action: 'push', shareId: idT }, 'pushReceived');
    t.close(); r.close();
  });
});

test('the relay IPs: relayIps as given, else turnUrl\'s hosts, literals as they are and names looked up once', async () => {
  assert.deepEqual(await relayIpsOf({ relayIps: '', turnUrl: '' }), []);
  assert.deepEqual(await relayIpsOf({ relayIps: '', turnUrl: 'turn:198.51.100.4,turn:[2001:DB8:0::1]:3479?transport=udp,turn:198.51.100.4:3480' }), ['198.51.100.4', '2001:db8::1']);
  assert.deepEqual(await relayIpsOf({ relayIps: ' 203.0.113.5,2001:db8::9 ', turnUrl: 'turn:198.51.100.4' }), ['203.0.113.5', '2001:db8::9']);
  const named = await relayIpsOf({ relayIps: '', turnUrl: 'turn:localhost:3478' });
  assert.ok(named.includes('127.0.0.1'), `localhost resolved: ${named.join(', ')}`);
  const warnings: string[] = [];
  assert.deepEqual(await relayIpsOf({ relayIps: '', turnUrl: 'turn:no-such-relay.invalid:3478,turn:198.51.100.4' }, (w) => warnings.push(w)), ['198.51.100.4']);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /no-such-relay\.invalid does not resolve.*RELAY_NOT_ALLOWED until relayIps is set/);
  await assert.rejects(relayIpsOf({ relayIps: '1.2.3.400', turnUrl: '' }), /relayIps: "1\.2\.3\.400" is not an IP address literal/);
  assert.equal(relayAllowed(['198.51.100.4', '2001:db8::1'], '[2001:db8::1]:5'), true);
  assert.equal(relayAllowed(['198.51.100.4', '2001:db8::1'], '198.51.100.4:5'), true);
  assert.equal(relayAllowed(['198.51.100.4'], '198.51.100.40:5'), false);
  assert.equal(relayAllowed([], '198.51.100.4:5'), false);
});
