// Credentials the tracker mints, against coturn itself (a real turnserver on free
// ports, use-auth-secret with the secret the tracker holds): what a proved session
// gets from {"action":"relay"} allocates; past its ttl, or altered, coturn refuses
// it; and coturn's own turnutils_uclient relays with it. Never a mock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import dgram from 'node:dgram';
import { TrackerClient, TrackerError, TurnClient, TurnError, socketTransport, trackerTransport } from '../src/client/index.js';
import { turnServer } from '../src/client/relay-punch.js';
import { coturnUnavailableReason, withCoturn, type Coturn } from './helpers/coturn.js';
import { EXPECT_MS, onceInNativePass, withTracker } from './helpers/wire.js';

const skip = coturnUnavailableReason() ?? onceInNativePass('what coturn accepts does not depend on how the tracker moved the request');

/** A tracker that mints for `coturn`, and a proved client of it on `ip`. */
async function withRelayTracker(coturn: Coturn, extra: Record<string, unknown>, ip: string, fn: (client: TrackerClient) => Promise<void>): Promise<void> {
  await withTracker({ turnUrl: `turn:${coturn.host}:${coturn.port}`, turnSecret: coturn.secret, ...extra }, async (_t, target) => {
    const client = new TrackerClient({ tracker: { host: target.address, port: target.port }, socket: { host: ip } });
    try {
      await client.announce(); // and its proving pulse
      await fn(client);
    } finally {
      await client.close();
    }
  });
}

type Creds = { urls: string[]; username: string; credential: string };
const allocate = (client: TrackerClient, creds: Creds) =>
  TurnClient.allocate(trackerTransport(client), { server: turnServer(creds.urls[0]!), username: creds.username, password: creds.credential, timeoutMs: EXPECT_MS });

/**
 * An Allocate from a socket of its own: coturn ties a 5-tuple to the first username it
 * saw (a later one gets 437), so each refused attempt needs a fresh socket.
 */
async function allocateFromFreshSocket(creds: Creds): Promise<TurnClient> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.63.9', () => r()));
  try {
    const turn = await TurnClient.allocate(socketTransport(socket), { server: turnServer(creds.urls[0]!), username: creds.username, password: creds.credential, timeoutMs: EXPECT_MS });
    await turn.close();
    return turn;
  } finally {
    socket.close();
  }
}

test('coturn accepts what the tracker mints: the proved session allocates a relayed address with it', { skip }, () =>
  withCoturn({}, (coturn) => withRelayTracker(coturn, {}, '127.0.63.1', async (client) => {
    const creds = await client.relayCredentials({ timeoutMs: EXPECT_MS });
    assert.deepEqual(creds.urls, [`turn:${coturn.host}:${coturn.port}`]);
    const turn = await allocate(client, creds);
    assert.equal(turn.relayed.address, coturn.relayIp);
    assert.equal(turn.mapped.address, '127.0.63.1', 'from the session\'s own socket');
    await turn.close();
  })));

test('a tracker credential past its ttl is refused (401), and so is one with a character changed', { skip }, () =>
  // a ttl of 5 s: the two Allocates below must be made before it ends, however slow the machine
  withCoturn({}, (coturn) => withRelayTracker(coturn, { turnTtl: 5, relayInterval: 0 }, '127.0.63.2', async (client) => {
    const askedAt = Math.floor(Date.now() / 1000);
    const creds = await client.relayCredentials({ timeoutMs: EXPECT_MS });
    const expiry = Number(creds.username.slice(0, creds.username.indexOf(':')));
    assert.ok(expiry >= askedAt + 5 && expiry <= Math.floor(Date.now() / 1000) + 5, `minted to expire 5 s on: ${creds.username} (asked at ${askedAt})`);
    const tampered = { ...creds, credential: (creds.credential[0] === 'A' ? 'B' : 'A') + creds.credential.slice(1) };
    await assert.rejects(allocateFromFreshSocket(tampered), (e: unknown) => e instanceof TurnError && e.code === 401);
    await allocateFromFreshSocket(creds); // while valid, it is accepted
    // past its expiry by our clock, then until coturn's (updated about once a second) is too
    await sleep(Math.max(0, (expiry + 1) * 1000 - Date.now()));
    for (const end = Date.now() + EXPECT_MS; ;) {
      const err = await allocateFromFreshSocket(creds).then(() => null, (e: unknown) => e);
      if (err !== null) {
        assert.ok(err instanceof TurnError && err.code === 401, `expired: ${String(err)}`);
        break;
      }
      assert.ok(Date.now() < end, `coturn still accepts ${creds.username} ${EXPECT_MS} ms past its expiry`);
      await sleep(250);
    }
    const fresh = await client.relayCredentials({ timeoutMs: EXPECT_MS });
    assert.notEqual(fresh.username, creds.username);
    const turn = await allocate(client, fresh);
    await turn.close();
  })));

test('a session that never proved it receives gets no credential to try', { skip }, () =>
  withCoturn({}, (coturn) => withTracker({ turnUrl: `turn:${coturn.host}:${coturn.port}`, turnSecret: coturn.secret }, async (_t, target) => {
    // the legacy dialect cannot send the proof
    const client = new TrackerClient({ tracker: { host: target.address, port: target.port }, socket: { host: '127.0.63.3' }, dialect: 'legacy' });
    try {
      await client.announce();
      await assert.rejects(client.relayCredentials({ timeoutMs: EXPECT_MS }), (e: unknown) => e instanceof TrackerError && e.code === 'PROOF_REQUIRED');
    } finally {
      await client.close();
    }
  })));

test('coturn\'s own turnutils_uclient relays with a credential the tracker minted (-u USER -w PASSWORD)', { skip }, () =>
  withCoturn({}, (coturn) => withRelayTracker(coturn, {}, '127.0.63.4', async (client) => {
    const creds = await client.relayCredentials({ timeoutMs: EXPECT_MS });
    // -y: the client is its own peer (two allocations talking), -m 1 client, -n 5 messages of -l 100 bytes;
    // killed after 60 s, which only bounds a failing run
    const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
      const child = execFile('turnutils_uclient', ['-y', '-m', '1', '-n', '5', '-l', '100', '-e', '127.0.0.1', '-p', String(coturn.port),
        '-u', creds.username, '-w', creds.credential, coturn.host], { timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, text: `${stdout}${stderr}` }));
      void child;
    });
    assert.equal(out.code, 0, out.text);
    assert.match(out.text, /Total lost packets 0 \(0\.0+%\)/, out.text);
  })));
