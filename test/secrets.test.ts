// Secrets stay out of everything the tracker says: its log lines (at every level),
// --print-config, /metrics, /healthz and its error messages. The session directory's
// password is the secret here, given in the URL or in a file; a real redis-server
// that requires it proves the tracker really used it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, httpGet } from './helpers/ops.js';
import { runCli, runTracker, type Running } from './helpers/process.js';
import { redisMissing, startRedis } from './helpers/redis.js';
import { TEST_IO } from './helpers/wire.js';

const skip = redisMissing() ?? false;
const dir = mkdtempSync(join(tmpdir(), 'sobani-secrets-'));
/** A password nothing else could print by chance. */
const secret = (): string => `pw-${randomBytes(12).toString('hex')}`;

/** Polls /healthz until it matches (the tracker talks to Redis in the background); the bound only ends a failing test. */
async function waitForHealth(metricsPort: number, want: RegExp, ms = 60_000): Promise<string> {
  const deadline = Date.now() + ms;
  let body = '';
  for (;;) {
    body = (await httpGet(metricsPort, '/healthz').catch(() => ({ body: '' }))).body;
    if (want.test(body)) return body;
    if (Date.now() > deadline) throw new Error(`/healthz did not match ${want} within ${ms} ms: ${body}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts the tracker, lets it talk to Redis, scrapes it, stops it; returns everything it said and served. */
async function everythingSaid(args: string[], healthy: RegExp, env: NodeJS.ProcessEnv = {}): Promise<string> {
  const metricsPort = await freePort();
  const t: Running = await runTracker(['--host', '127.0.0.1', '--port', '0', '--shards', '1', '--io', TEST_IO,
    '--log-level', 'trace', '--metrics-port', String(metricsPort), ...args], env);
  const health = await waitForHealth(metricsPort, healthy);
  const metrics = (await httpGet(metricsPort, '/metrics')).body;
  t.child.kill('SIGTERM');
  await t.exited;
  return [t.output(), health, metrics].join('\n');
}

test('a directory password in the URL is used, and never logged, printed or served', { skip, timeout: 300_000 }, async () => {
  const password = secret();
  const redis = await startRedis({ requirepass: password });
  try {
    const url = `redis://default:${password}@127.0.0.1:${redis.port}`;
    // "ok" only once Redis answered: the tracker authenticated with the password
    const said = await everythingSaid(['--directory', url], /^ok/);
    assert.match(said, /"directory":"redis:\/\/default:<redacted>@127\.0\.0\.1:\d+"/, 'the start-up line shows that a password is set');
    assert.ok(!said.includes(password), 'the password appears nowhere');

    const printed = await runCli(['--print-config', '--directory', url]);
    assert.equal(printed.code, 0);
    assert.match(printed.stdout, /"directory": "redis:\/\/default:<redacted>@127\.0\.0\.1:\d+"/);
    assert.ok(!(printed.stdout + printed.stderr).includes(password));

    // a wrong password: the directory stays unreachable, and says so without quoting it
    // ("unreachable": Redis refused it; "not connected yet" is before the tracker asked)
    const wrong = secret();
    const refused = await everythingSaid(['--directory', `redis://default:${wrong}@127.0.0.1:${redis.port}`], /^degraded: the session directory is unreachable/);
    assert.match(refused, /session directory unreachable/);
    assert.ok(!refused.includes(wrong), 'a wrong password is a secret too');

    // a URL that does not parse is refused, without echoing the password in it
    const bad = await runCli(['--directory', `redis://default:${password}@`]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /directory \(--directory\) is "<redacted>": it must be a redis/);
    assert.ok(!(bad.stdout + bad.stderr).includes(password));
  } finally {
    await redis.stop();
  }
});

test('--directory-password-file: the password comes from a file (as Docker and Kubernetes secrets are), and stays out of the output', { skip, timeout: 300_000 }, async () => {
  const password = secret();
  const redis = await startRedis({ requirepass: password });
  try {
    const file = join(dir, 'redis-password');
    writeFileSync(file, `${password}\n`); // secret files usually end with a newline
    const said = await everythingSaid(['--directory', redis.url, '--directory-password-file', file], /^ok/);
    assert.ok(!said.includes(password));
    const fromEnv = await everythingSaid([], /^ok/, { SOBANI_DIRECTORY: redis.url, SOBANI_DIRECTORY_PASSWORD_FILE: file });
    assert.ok(!fromEnv.includes(password));

    const both = await runCli(['--host', '127.0.0.1', '--port', '0', '--directory', `redis://default:${password}@127.0.0.1:${redis.port}`, '--directory-password-file', file]);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /the directory URL holds a password and directoryPasswordFile names another/);
    assert.ok(!(both.stdout + both.stderr).includes(password));

    const missing = await runCli(['--host', '127.0.0.1', '--port', '0', '--directory', redis.url, '--directory-password-file', join(dir, 'nope')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /directoryPasswordFile: cannot read .*nope: ENOENT/);
  } finally {
    await redis.stop();
  }
});

test('the TURN secret, from a flag or a file, is never logged, printed or served', { timeout: 300_000 }, async () => {
  const secretText = secret();
  const file = join(dir, 'turn-secret');
  writeFileSync(file, `${secretText}\n`);
  for (const given of [['--turn-secret', secretText], ['--turn-secret-file', file]]) {
    const said = await everythingSaid(['--turn-url', 'turn:127.0.0.1:3478', ...given], /^ok/);
    assert.ok(!said.includes(secretText), `${given[0]}: the secret appears nowhere`);
    const printed = await runCli(['--print-config', '--turn-url', 'turn:127.0.0.1:3478', ...given]);
    assert.equal(printed.code, 0);
    assert.ok(!(printed.stdout + printed.stderr).includes(secretText));
    if (given[0] === '--turn-secret') assert.match(printed.stdout, /"turnSecret": "<redacted>"/);
  }
  const both = await runCli(['--turn-url', 'turn:127.0.0.1:3478', '--turn-secret', secretText, '--turn-secret-file', file]);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /turnSecret and turnSecretFile are both set/);
  assert.ok(!(both.stdout + both.stderr).includes(secretText));
});
