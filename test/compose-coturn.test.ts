// The coturn service of docker-compose.yml, run here with a real turnserver (no
// Docker engine on this machine): its flags read from the compose file itself, so
// the file and this test cannot drift apart. Deployment-specific ones (ports, the
// external IP) are replaced by free loopback ones; the rest must be accepted by
// turnserver and do what the comments there say: private and loopback peers are
// denied, a credential holds at most user-quota allocations at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TurnClient, TurnError, socketTransport } from '../src/client/index.js';
import { mintTurnCredential } from '../src/relay/credentials.js';
import { coturnUnavailableReason, withCoturn } from './helpers/coturn.js';
import { ROOT } from './helpers/process.js';
import { EXPECT_MS, onceInNativePass } from './helpers/wire.js';

const skip = coturnUnavailableReason() ?? onceInNativePass('coturn\'s flags have no tracker in them');
const SECRET = 'compose-test-secret';

/** The turnserver flags of the compose file's coturn command, secret and public IP filled in. */
function composeFlags(): string[] {
  const compose = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');
  const m = /exec turnserver ([\s\S]*?)\n\s*\n/.exec(compose.slice(compose.indexOf('coturn:')));
  assert.ok(m, 'the coturn service runs turnserver');
  return m[1]!.replace(/"\$\$\(cat \/run\/secrets\/turn_secret\)"/, SECRET).replace(/\$\{PUBLIC_IP\}/g, '127.0.0.1')
    .split(/\s+/).filter((f) => f !== '');
}

/** What the test's coturn (test/helpers/coturn.ts) sets itself: the compose file's values for these are the deployment's. */
const SET_BY_THE_TEST = /^(-n|--log-file=.*|--simple-log|--no-cli|--listening-port=.*|--min-port=.*|--max-port=.*|--external-ip=.*|--realm=.*|--use-auth-secret|--static-auth-secret=.*|--no-tcp-relay|--no-tcp|--no-tls|--no-dtls)$/;

async function bound(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return s;
}

test('the compose file\'s coturn flags: turnserver accepts them; loopback, private and CGNAT peers are denied, public ones permitted; user-quota holds', { skip }, async () => {
  const flags = composeFlags();
  assert.ok(flags.includes(`--static-auth-secret=${SECRET}`), 'the secret comes from the compose secret');
  for (const f of ['--use-auth-secret', '--no-tcp-relay', '--user-quota=4', '--total-quota=2000', '--max-bps=32000']) assert.ok(flags.includes(f), f);
  const extra = flags.filter((f) => !SET_BY_THE_TEST.test(f));
  await withCoturn({ secret: SECRET, allowLoopbackPeers: false, extra }, async (coturn) => {
    const creds = mintTurnCredential(SECRET, 'compose-test', 600);
    const sockets: dgram.Socket[] = [];
    const allocate = async (): Promise<TurnClient> => {
      const s = await bound();
      sockets.push(s);
      return TurnClient.allocate(socketTransport(s), { server: { host: coturn.host, port: coturn.port }, username: creds.username, password: creds.credential, timeoutMs: EXPECT_MS });
    };
    try {
      const turn = await allocate();
      for (const ip of ['127.0.0.5', '10.1.2.3', '172.16.0.9', '192.168.1.1', '100.64.1.1', '169.254.1.1']) {
        await assert.rejects(turn.createPermission(ip), (e: unknown) => e instanceof TurnError && e.code === 403, `${ip} is denied`);
      }
      await turn.createPermission('198.51.100.7'); // a public address: permitted
      // user-quota=4: a fifth allocation with the same credential is refused (486)
      const more = [await allocate(), await allocate(), await allocate()];
      await assert.rejects(allocate(), (e: unknown) => e instanceof TurnError && e.code === 486, 'over the user quota');
      for (const t of [turn, ...more]) await t.close();
    } finally {
      for (const s of sockets) s.close();
    }
  });
});
