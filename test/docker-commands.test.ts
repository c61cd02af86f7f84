// The commands the Docker image runs, run here outside Docker (no engine on this
// machine): the ENTRYPOINT with the image's SOBANI_* environment, and the
// HEALTHCHECK while it serves. They are read from the Dockerfile itself, so the
// file and this test cannot drift apart. The image runs the compiled
// `node dist/src/cli.js`; this test runs the same CLI from source through tsx
// (`node --import tsx src/cli.ts`), so it needs no build first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, runTracker } from './helpers/process.js';
import { WirePeer } from './helpers/wire.js';

const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM ')); // the final stage

const env = Object.fromEntries([...runtime.matchAll(/^ENV (\w+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(runtime)![1]!) as string[];
const healthcheck = JSON.parse(/^\s*CMD (\[.*\])$/m.exec(runtime.slice(runtime.indexOf('HEALTHCHECK')))![1]!) as string[];

/** `node dist/src/cli.js ...` -> the CLI args after the script. */
function cliArgs(argv: string[]): string[] {
  assert.deepEqual(argv.slice(0, 2), ['node', 'dist/src/cli.js']);
  return argv.slice(2);
}

function run(args: string[], extraEnv: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: ROOT, env: { ...process.env, ...extraEnv } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d; });
    child.stderr.on('data', (d: Buffer) => { out += d; });
    child.on('exit', (code) => resolve({ code, out }));
  });
}

test('the Dockerfile is what the issue asks for: multi-stage, production deps, non-root, udp port, volume, healthcheck', () => {
  assert.equal((dockerfile.match(/^FROM node:20-bookworm-slim/gm) ?? []).length, 2);
  assert.match(runtime, /yarn install --production --frozen-lockfile/);
  assert.match(runtime, /^USER node$/m);
  assert.match(runtime, /^EXPOSE 3000\/udp$/m);
  assert.match(runtime, /^VOLUME \/data$/m);
  assert.equal(env.SOBANI_METRICS_PORT, '9100');
  assert.equal(env.SOBANI_SNAPSHOT, '/data/sessions.snapshot');
  assert.deepEqual(healthcheck, ['node', 'dist/src/cli.js', 'health', '--metrics-port', env.SOBANI_METRICS_PORT]);
  const compose = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');
  assert.ok(compose.includes(`test: ${JSON.stringify(['CMD', ...healthcheck]).replace(/,/g, ', ')}`), 'compose runs the same healthcheck');
  for (const [k, v] of Object.entries(env)) if (k.startsWith('SOBANI_')) assert.match(compose, new RegExp(`${k}: "?${v}"?`), k);
});

test('the image\'s entrypoint serves with its env, its healthcheck passes, SIGTERM saves the snapshot', async () => {
  // Outside the container: /data is a temp dir, and the UDP port is any free one.
  const data = mkdtempSync(join(tmpdir(), 'sobani-docker-'));
  const snapshot = join(data, 'sessions.snapshot');
  const overrides = { SOBANI_SNAPSHOT: snapshot, SOBANI_PORT: '0', SOBANI_HOST: '127.0.0.1' };
  const tracker = await runTracker(cliArgs(entrypoint), { ...env, ...overrides });
  try {
    const peer = await WirePeer.open({ address: '127.0.0.1', port: tracker.port });
    await peer.announce();
    peer.close();
    const health = await run(cliArgs(healthcheck), env);
    assert.equal(health.code, 0, health.out);
    assert.match(health.out, /^ok/);
  } finally {
    tracker.child.kill('SIGTERM');
  }
  assert.equal((await tracker.exited).code, 0);
  assert.ok(existsSync(snapshot));
  assert.match(tracker.output(), /"sessions":1,.*"msg":"snapshot written"/);
  // And with the tracker gone, the healthcheck fails.
  assert.equal((await run(cliArgs(healthcheck), env)).code, 1);
});
