// The token client (docs/security.md): TrackerClient asks for a session token,
// sends it on every request, and trusts from the tracker's address only what is
// tagged under it; a TOKEN_INVALID (never tagged) only after a session timeout
// without tags; it reports where the tracker sees it, and follows a path
// challenge when its address changes. Real tracker, real UDP; forged datagrams
// from the tracker's address come from a raw socket (root).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import type { RemoteInfo, Socket } from 'node:dgram';
import { once } from 'node:events';
import { TrackerClient, type IncomeEvent } from '../src/client/index.js';
import { startTracker } from '../src/tracker.js';
import { canForge, forge } from './helpers/forge.js';
import { TEST_IO, until, withTracker } from './helpers/wire.js';
import { redisMissing, startRedis } from './helpers/redis.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const skip = canForge ? false : 'forging a source address needs root (raw sockets)';
const TOKEN = /^([A-Za-z0-9_-]{12})\.[A-Za-z0-9_-]{22}$/;

async function bound(host = '127.0.0.1'): Promise<Socket> {
  const s = dgram.createSocket('udp4');
  s.on('error', () => undefined);
  await new Promise<void>((r) => s.bind(0, host, () => r()));
  return s;
}

/**
 * One client's UDP proxy in front of a tracker: `move()` sends on from a new
 * socket (a NAT that gave us a new port), `switchTo()` to another tracker.
 */
async function proxy(target: { address: string; port: number }) {
  const front = await bound();
  let back = await bound();
  let client: RemoteInfo | undefined;
  let upstream = target;
  const listen = (s: Socket): void => {
    s.on('message', (msg, from) => {
      if (s !== back || from.port !== upstream.port || from.address !== upstream.address) return;
      if (client) front.send(msg, client.port, client.address);
    });
  };
  listen(back);
  /** Client datagrams that contain this text are lost, the next `dropping` of them. */
  let drop = { text: '', dropping: 0 };
  front.on('message', (msg, from) => {
    client = from;
    if (drop.dropping > 0 && msg.includes(drop.text)) { drop.dropping--; return; }
    back.send(msg, upstream.port, upstream.address);
  });
  return {
    lose(text: string, count = 1) { drop = { text, dropping: count }; },
    address: { host: '127.0.0.1', port: front.address().port },
    backAddress: () => `127.0.0.1:${back.address().port}`,
    async move() { const old = back; back = await bound(); listen(back); old.close(); },
    switchTo(t: { address: string; port: number }) { upstream = t; },
    close() { front.close(); back.close(); },
  };
}

test('a token client gets a token at announce, sends it on pulse, push and relay, and every message it takes is tagged', () =>
  withTracker({ io: TEST_IO, turnUrl: 'turn:127.0.0.1:3478', turnSecret: 'the-secret-coturn-has' }, async (_t, tracker) => {
    const at = { host: tracker.address, port: tracker.port };
    const a = new TrackerClient({ tracker: at, socket: { host: '127.0.101.1' } });
    const b = new TrackerClient({ tracker: at, socket: { host: '127.0.101.2' } });
    const untrusted: string[] = [];
    for (const c of [a, b]) c.on('untrusted', (m, why) => untrusted.push(`${why}: ${m}`));
    const observed: string[] = [];
    a.on('observed', (o) => observed.push(o));
    const [idA, idB] = await Promise.all([a.announce(), b.announce()]);
    assert.equal(TOKEN.exec(a.token ?? '')?.[1], idA, `a's token names its shareId: ${a.token}`);
    assert.equal(TOKEN.exec(b.token ?? '')?.[1], idB);
    const local = await a.ready();
    assert.equal(a.observed, `${local.address}:${local.port}`, 'the tracker says where it sees us');
    const pulse = await a.pulse();
    assert.equal(pulse.status, '0');
    assert.ok(observed.length >= 2 && observed.every((o) => o === `${local.address}:${local.port}`), JSON.stringify(observed));
    const income = once(b, 'income') as Promise<[IncomeEvent]>;
    const pushed = await a.push(idB);
    assert.equal(pushed.authenticated, true);
    assert.equal(pushed.peerShareId, idB);
    const [inc] = await income;
    assert.equal(inc.authenticated, true);
    assert.equal(inc.peerShareId, idA);
    const creds = await a.relayCredentials();
    assert.ok(creds.username.endsWith(`:${idA}`));
    // regenerating the shareId brings a new token, tagged under the old one
    const regen = await a.pulse({ regenerateShareId: true });
    assert.ok(regen.shareId !== undefined && regen.shareId !== idA);
    assert.equal(TOKEN.exec(a.token ?? '')?.[1], regen.shareId, 'the new token names the new shareId');
    assert.equal((await a.pulse()).status, '0', 'and the tracker takes it');
    assert.deepEqual(untrusted, []);
    assert.deepEqual([a.stats.untrusted, b.stats.untrusted], [0, 0]);
    await Promise.all([a.close(), b.close()]);
  }));

test('datagrams forged from the tracker\'s address are dropped and counted: no re-announce, no income, no error, the session is kept', { skip }, () =>
  withTracker({ io: TEST_IO }, async (_t, tracker) => {
    const c = new TrackerClient({ tracker: { host: tracker.address, port: tracker.port }, socket: { host: '127.0.101.3' }, pulseIntervalMs: 60_000 });
    const shareId = await c.announce();
    const token = c.token;
    assert.match(token ?? '', TOKEN);
    const seen: string[] = [];
    c.on('income', () => seen.push('income'));
    c.on('announced', () => seen.push('announced'));
    c.on('pulse', () => seen.push('pulse'));
    c.on('error', (e) => seen.push(`error ${e.message}`));
    const local = await c.ready();
    const from = { address: tracker.address, port: tracker.port }, to = { address: local.address, port: local.port };
    const forged = [
      '{"action":"pulseReceived","data":{"status":"1","overriden":"false"}}', // would make it re-announce
      '{"action":"announceReceived","data":{"shareId":"BBBBBBBBBBBB"}}',
      '{"action":"income","data":{"peeraddr":"127.0.101.9:5555","peerShareId":"AAAAAAAAAAAA","peerVerified":true}}',
      '{"action":"error","data":{"code":"TOKEN_INVALID","message":"announce again"}}', // tagged replies came just now
      `{"action":"income","data":{"peeraddr":"127.0.101.9:5555","peerShareId":"AAAAAAAAAAAA"},"tag":"AAAAAAAAAAA"}`, // a tag, not ours
    ];
    await forge(...forged.map((payload) => ({ from, to, payload })));
    await until('every forged datagram counted', () => c.stats.untrusted === forged.length);
    assert.equal((await c.pulse()).status, '0', 'the session is alive, under the same token');
    assert.deepEqual(seen, ['pulse']);
    assert.equal(c.shareId, shareId);
    assert.equal(c.token, token);
    await c.close();
  }));

test('TOKEN_INVALID is believed once no tagged reply came for the session timeout: the client announces again and gets a new token', async () => {
  const first = await startTracker({ host: '127.0.0.1', port: 0, shards: 2, logLevel: 'silent', io: TEST_IO });
  const other = await startTracker({ host: '127.0.0.1', port: 0, shards: 2, logLevel: 'silent', io: TEST_IO });
  const p = await proxy(first.addresses[0]!);
  try {
    const c = new TrackerClient({ tracker: p.address, pulseIntervalMs: 50, retryIntervalMs: 100, sessionTimeoutMs: 500 });
    const id = await c.announce();
    const token = c.token;
    assert.match(token ?? '', TOKEN);
    // another tracker (another session key) at the same address: our token is not one it issued
    p.switchTo(other.addresses[0]!);
    const [again] = await once(c, 'announced');
    assert.notEqual(again, id);
    assert.equal(TOKEN.exec(c.token ?? '')?.[1], again, 'a token from the other tracker');
    assert.equal((await c.pulse()).status, '0');
    await c.close();
  } finally {
    p.close();
    await first.close();
    await other.close();
  }
});

test('when the client\'s address changes, the tracker\'s challenge is answered at once and the session moves: same shareId, pushes see the new address', () =>
  withTracker({ io: TEST_IO }, async (_t, tracker) => {
    const p = await proxy(tracker);
    const c = new TrackerClient({ tracker: p.address, pulseIntervalMs: 60_000, retryIntervalMs: 100 });
    const peer = new TrackerClient({ tracker: { host: tracker.address, port: tracker.port }, socket: { host: '127.0.101.4' } });
    const id = await c.announce();
    await peer.announce();
    assert.equal(c.observed, p.backAddress());
    await p.move();
    const moved = p.backAddress();
    const challenged = new Promise<string>((resolve) => c.on('reply', (r) => { const ch = (r.raw.data as { challenge?: string } | undefined)?.challenge; if (ch) resolve(ch); }));
    const pulses: { observed?: string; challenged: boolean }[] = [];
    c.on('reply', (r) => { if (r.kind === 'pulse') pulses.push({ ...(r.observed ? { observed: r.observed } : {}), challenged: r.challenge !== undefined }); });
    await c.pulse(); // from the new address: answered with what the tracker sees and a challenge, which the client echoes from here
    await challenged;
    // the echo's reply: from the session's new address, with no challenge
    await until('the challenge pulse answered', () => pulses.length === 2);
    assert.deepEqual(pulses, [{ observed: moved, challenged: true }, { observed: moved, challenged: false }]);
    assert.equal(c.observed, moved);
    assert.equal((await peer.push(id)).peeraddr, moved, 'pushes now get the new address');
    assert.equal(c.shareId, id);
    assert.equal(c.stats.untrusted, 0);
    await Promise.all([c.close(), peer.close()]);
    p.close();
  }));

test('the client follows its session to another instance when its tracker\'s address leads there, answering the challenge again when the first answer is lost', { skip: redisMissing() ?? false }, async () => {
  const redis = await startRedis();
  const sessionKeyFile = join(mkdtempSync(join(tmpdir(), 'sobani-key-')), 'session_key');
  writeFileSync(sessionKeyFile, 'a session key both instances share\n');
  const common = { host: '127.0.0.1', port: 0, shards: 2, logLevel: 'silent' as const, io: TEST_IO, directory: redis.url, sessionKeyFile };
  const [first, second] = await Promise.all([startTracker({ ...common, instanceId: 'first' }), startTracker({ ...common, instanceId: 'second' })]);
  const p = await proxy(first.addresses[0]!);
  const c = new TrackerClient({ tracker: p.address, pulseIntervalMs: 60_000, retryIntervalMs: 100 });
  const peer = new TrackerClient({ tracker: { host: '127.0.0.1', port: first.addresses[0]!.port }, socket: { host: '127.0.101.5' } });
  try {
    const id = await c.announce();
    await peer.announce();
    await until('the pointer of the session', () => redis.cli('get', `sobani:s:${id}`).startsWith('first\t'));
    // its tracker's address now leads to the other instance, and its first answer to the challenge is lost
    p.switchTo(second.addresses[0]!);
    p.lose('"challenge"');
    const replies: { challenged: boolean }[] = [];
    c.on('reply', (r) => { if (r.kind === 'pulse') replies.push({ challenged: r.challenge !== undefined }); });
    await c.pulse();
    assert.deepEqual(replies, [{ challenged: true }]);
    // later keep-alives are challenged again with the same challenge: answered again (at most once per
    // retryIntervalMs: no ping-pong), the session moves. Once answered only, it would never move.
    await until('the session moved to the other instance', async () => {
      await c.pulse();
      return redis.cli('get', `sobani:s:${id}`).startsWith('second\t');
    });
    assert.equal(c.shareId, id, 'the same shareId');
    assert.equal((await peer.push(id)).peerShareId, id, 'a peer on the first instance still reaches it');
    assert.equal(c.stats.untrusted, 0);
  } finally {
    await Promise.all([c.close(), peer.close()]);
    p.close();
    await Promise.all([first.close(), second.close()]);
    await redis.stop();
  }
});
