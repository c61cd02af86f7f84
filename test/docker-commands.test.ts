// The commands the Docker image runs, run here outside Docker (no engine on this
// machine), read from the Dockerfile itself so that the file and this test cannot drift
// apart:
// - both stages' COPY and RUN steps, each stage's /app a temp directory and the build
//   context this checkout (minus .dockerignore): the build stage packs the npm package,
//   the runtime stage unpacks it and installs its production dependencies, and with no
//   compiler there the image's ENTRYPOINT serves on the native path from the package's
//   prebuild. This machine plays the base image: the OS steps (apt-get; /data) are not run.
// - the ENTRYPOINT (docker/entrypoint.sh, which execs `node dist/src/cli.js`) with the
//   image's SOBANI_* environment, and the HEALTHCHECK while it serves. Here they run the
//   same CLI from source through tsx (a dist/src/cli.js that imports src/cli.ts), so they
//   need no build first. test/docker-entrypoint.test.ts tries the entrypoint's checks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { unknownEnvWarnings } from '../src/config.js';
import { ROOT, runTracker } from './helpers/process.js';
import { freePort, httpGet } from './helpers/ops.js';
import { TEST_IO, WirePeer } from './helpers/wire.js';

const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM ')); // the final stage

const env = Object.fromEntries([...runtime.matchAll(/^ENV (\w+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(runtime)![1]!) as string[];
const healthcheck = JSON.parse(/^\s*CMD (\[.*\])$/m.exec(runtime.slice(runtime.indexOf('HEALTHCHECK')))![1]!) as string[];
const compose = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');

/** `node dist/src/cli.js ...` -> the CLI args after the script. */
function cliArgs(argv: string[]): string[] {
  assert.deepEqual(argv.slice(0, 2), ['node', 'dist/src/cli.js']);
  return argv.slice(2);
}

/** PATH with this node first: the entrypoint runs `node`. */
const PATH = `${dirname(process.execPath)}:${process.env.PATH ?? ''}`;

/**
 * An /app whose dist/src/cli.js is this checkout's src/cli.ts (through tsx), with the
 * entrypoint where the Dockerfile COPYs it: the image's entrypoint, run from source.
 */
function sourceApp(dir: string): NodeJS.ProcessEnv {
  mkdirSync(join(dir, 'dist', 'src'), { recursive: true });
  mkdirSync(join(dir, 'docker'));
  cpSync(join(ROOT, 'docker', 'entrypoint.sh'), join(dir, 'docker', 'entrypoint.sh'));
  writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
  writeFileSync(join(dir, 'dist', 'src', 'cli.js'), `import ${JSON.stringify(pathToFileURL(join(ROOT, 'src', 'cli.ts')).href)};\n`);
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return { NODE_OPTIONS: '--import tsx', PATH };
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
  const build = dockerfile.slice(0, dockerfile.lastIndexOf('\nFROM '));
  assert.equal((dockerfile.match(/^FROM node:20-bookworm-slim/gm) ?? []).length, 2);
  assert.match(runtime, /yarn install --production --frozen-lockfile/);
  // the runtime gets the npm package the build stage packed, addon included, as an install with no scripts and no compiler does
  assert.match(dockerfile.slice(0, dockerfile.lastIndexOf('\nFROM ')), /^RUN npm pack /m);
  assert.match(runtime, /^RUN tar -xzf sobani-tracker\.tgz /m);
  assert.match(runtime, /--ignore-scripts/);
  assert.doesNotMatch(runtime, /apt-get|g\+\+|node-gyp|build\/Release/);
  assert.match(runtime, /^USER node$/m);
  assert.match(runtime, /^EXPOSE 3000\/udp$/m);
  assert.match(runtime, /^VOLUME \/data$/m);
  assert.equal(env.SOBANI_METRICS_PORT, '9100');
  assert.equal(env.SOBANI_SNAPSHOT, '/data/sessions.snapshot');
  // no port of its own: the healthcheck reads SOBANI_METRICS_PORT (and _HOST), as the tracker does
  assert.deepEqual(healthcheck, ['node', 'dist/src/cli.js', 'health']);
  // the entrypoint checks the secrets and /data, then execs the CLI (node, PID 1, gets SIGTERM)
  assert.deepEqual(entrypoint, ['/bin/sh', 'docker/entrypoint.sh']);
  assert.match(runtime, /^COPY docker\/entrypoint\.sh docker\/$/m);
  assert.equal(readFileSync(join(ROOT, 'docker', 'entrypoint.sh'), 'utf8').trimEnd().split('\n').at(-1), 'exec node dist/src/cli.js "$@"');
  // README and LICENSE go into the package (npm pack takes them), so into the image
  assert.ok(build.indexOf('COPY README.md LICENSE ./') >= 0 && build.indexOf('COPY README.md LICENSE ./') < build.indexOf('RUN npm pack'));
  // compose's tracker takes the image's healthcheck (no second copy to drift) and repeats its environment
  const tracker = compose.slice(compose.indexOf('\n  tracker:\n'), compose.indexOf('\n  coturn:\n'));
  assert.doesNotMatch(tracker, /^\s+healthcheck:/m);
  for (const [k, v] of Object.entries(env)) if (k.startsWith('SOBANI_')) assert.match(tracker, new RegExp(`${k}: "?${v}"?`), k);
  // every SOBANI_* variable the image and compose set is a setting: none draws the unknown-variable warning
  const composeEnv = Object.fromEntries([...tracker.matchAll(/^ {6}#? ?(SOBANI_\w+): /gm)].map((m) => [m[1]!, 'x']));
  assert.ok(Object.keys(composeEnv).length >= 8, Object.keys(composeEnv).join(' '));
  assert.deepEqual(unknownEnvWarnings({ ...env, ...composeEnv }), []);
});

test('the image\'s entrypoint serves with its env, its healthcheck follows the metrics port set and passes, SIGTERM saves the snapshot', async () => {
  // Outside the container: /data is a temp dir, the UDP port any free one, and the metrics
  // port set as a user would (SOBANI_METRICS_PORT): the healthcheck must find it there.
  const data = mkdtempSync(join(tmpdir(), 'sobani-docker-'));
  const snapshot = join(data, 'sessions.snapshot');
  const overrides = { SOBANI_SNAPSHOT: snapshot, SOBANI_PORT: '0', SOBANI_HOST: '127.0.0.1', SOBANI_METRICS_PORT: String(await freePort()) };
  const app = join(data, 'app');
  const appEnv = sourceApp(app);
  const tracker = await runTracker([], { ...env, ...overrides, ...appEnv }, app, entrypoint);
  try {
    const peer = await WirePeer.open({ address: '127.0.0.1', port: tracker.port });
    await peer.announce();
    peer.close();
    const health = await run(cliArgs(healthcheck), { ...env, ...overrides });
    assert.equal(health.code, 0, health.out);
    assert.match(health.out, /^ok/);
  } finally {
    tracker.child.kill('SIGTERM');
  }
  assert.equal((await tracker.exited).code, 0);
  assert.ok(existsSync(snapshot));
  assert.match(tracker.output(), /"sessions":1,.*"msg":"snapshot written"/);
  // And with the tracker gone, the healthcheck fails.
  assert.equal((await run(cliArgs(healthcheck), { ...env, ...overrides })).code, 1);
  rmSync(data, { recursive: true, force: true });
});

// ---- the stages' own steps ---------------------------------------------------------------

/** The Dockerfile's instructions, continuation lines joined, comments dropped, grouped by stage. */
function stages(): { name: string; steps: { op: string; arg: string }[] }[] {
  const out: { name: string; steps: { op: string; arg: string }[] }[] = [];
  for (const line of dockerfile.replace(/\\\n/g, ' ').split('\n')) {
    const m = /^([A-Z]+)\s+(.*)$/.exec(line.trim());
    if (m === null || line.trim().startsWith('#')) continue;
    const [, op, arg] = m as unknown as [string, string, string];
    if (op === 'FROM') out.push({ name: / AS (\w+)$/.exec(arg)?.[1] ?? 'runtime', steps: [] });
    else out.at(-1)!.steps.push({ op, arg: arg.trim() });
  }
  return out;
}

/** .dockerignore as Docker reads it: globs on the path from the context root, a match on a directory leaving out all it holds. */
const dockerignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
  .map((g) => new RegExp(`^${g.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')}(/|$)`));
const ignored = (path: string): boolean => dockerignore.some((re) => re.test(path));

// The steps this machine stands in for: the base image's OS, not the package.
const OS_STEPS = [/^apt-get update && apt-get install -y --no-install-recommends python3 make g\+\+ /, /^mkdir -p \/data && chown node:node \/data$/];

test('the build and runtime stages\' commands give an /app whose entrypoint serves natively from the package\'s prebuild, with no compiler', {
  skip: TEST_IO === 'dgram' && 'SOBANI_IO=dgram: the image is built and tried once, in the native run',
}, async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), 'sobani-docker-stages-'));
  try {
    const app: Record<string, string> = {};
    // a user's environment: not `yarn test`'s npm_config_* (its registry is yarn's mirror), nor its SOBANI_IO
    const baseEnv: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).map(([k, v]) => [k, /^(npm_|SOBANI_)/i.test(k) ? undefined : v]));
    for (const stage of stages()) {
      const dir = (app[stage.name] = join(tmp, stage.name));
      mkdirSync(dir);
      // the runtime image has no compiler: anything that tries one fails
      const stageEnv: NodeJS.ProcessEnv = { ...baseEnv, ...(stage.name === 'runtime' ? { CC: '/bin/false', CXX: '/bin/false' } : {}) };
      for (const { op, arg } of stage.steps) {
        if (op === 'WORKDIR') assert.equal(arg, '/app');
        else if (op === 'ENV') {
          const [k, v] = arg.split('=') as [string, string];
          stageEnv[k] = v;
        } else if (op === 'COPY') {
          // COPY [--from=STAGE] SRC... DEST: a file lands in DEST/ (or is DEST), a directory's contents in DEST
          const from = /^--from=(\w+)\s+/.exec(arg)?.[1];
          const parts = arg.replace(/^--from=\w+\s+/, '').split(/\s+/);
          const dest = parts.pop()!;
          for (const src of parts) {
            const source = from !== undefined ? join(app[from]!, relative('/app', src)) : join(ROOT, src);
            if (from === undefined) assert.ok(!ignored(src), `COPY ${src}: left out of the build context by .dockerignore`);
            const target = !statSync(source).isDirectory() && dest.endsWith('/') ? join(dir, dest, basename(src)) : join(dir, dest);
            cpSync(source, target, { recursive: true, filter: (f) => from !== undefined || !ignored(relative(ROOT, f)) });
          }
        } else if (op === 'RUN') {
          if (OS_STEPS.some((re) => re.test(arg))) {
            t.diagnostic(`${stage.name}: not run here (the base image's OS): RUN ${arg}`);
            continue;
          }
          const run = spawnSync('sh', ['-c', arg], { cwd: dir, env: stageEnv, encoding: 'utf8', timeout: 5 * 60 * 1000 });
          assert.equal(run.status, 0, `${stage.name}: RUN ${arg}\n${run.stdout}${run.stderr}`);
        } else {
          // what the image is when it runs; ENTRYPOINT and HEALTHCHECK are run below
          assert.ok(['USER', 'VOLUME', 'EXPOSE', 'HEALTHCHECK', 'ENTRYPOINT'].includes(op), `${op}: a step this test does not know how to run`);
        }
      }
    }
    const runtime = app.runtime!;
    const prebuild = join(runtime, 'prebuilds', `${process.platform}-${process.arch}`, 'sobani_udp.glibc.node');
    assert.ok(existsSync(prebuild), 'the package\'s prebuild is in the image');
    assert.ok(!existsSync(join(runtime, 'build')) && !existsSync(join(runtime, 'src', 'cli.ts')), 'no addon compiled, no TypeScript sources');
    for (const f of ['README.md', 'LICENSE']) assert.equal(readFileSync(join(runtime, f), 'utf8'), readFileSync(join(ROOT, f), 'utf8'), `${f} is in the image`);

    // The image's own entrypoint and healthcheck, from its /app, with its env (outside Docker: a
    // temp snapshot, any free UDP port, and a free metrics port for the image's 9100, which
    // another test run on this machine may hold: the healthcheck finds it in the environment)
    const metricsPort = await freePort();
    const overrides = { SOBANI_SNAPSHOT: join(tmp, 'sessions.snapshot'), SOBANI_PORT: '0', SOBANI_HOST: '127.0.0.1', SOBANI_METRICS_PORT: String(metricsPort) };
    const imageEnv = { ...baseEnv, ...env, ...overrides, CC: '/bin/false', CXX: '/bin/false', PATH };
    const tracker = await runTracker([], imageEnv, runtime, entrypoint);
    try {
      const peer = await WirePeer.open({ address: '127.0.0.1', port: tracker.port });
      await peer.announce();
      peer.close();
      assert.match((await httpGet(metricsPort, '/metrics')).body, /^sobani_io_path\{path="native"\} 1$/m);
      const health = spawnSync(process.execPath, healthcheck.slice(1), { cwd: runtime, env: imageEnv, encoding: 'utf8' });
      assert.equal(health.status, 0, `${health.stdout}${health.stderr}`);
    } finally {
      tracker.child.kill('SIGTERM');
    }
    assert.equal((await tracker.exited).code, 0);
    const listening = tracker.output().split('\n').find((l) => l.includes('"msg":"sobani-tracker listening"'))!;
    assert.equal((JSON.parse(listening) as { io: string }).io, 'native');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
