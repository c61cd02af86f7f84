// The package as npm ships it, installed the way a user installs it: `npm pack`, then
// `npm install -g --ignore-scripts` of the tarball into a fresh prefix with no usable
// compiler (CC=/bin/false CXX=/bin/false; npm 11 skips a global package's install
// scripts anyway unless the user allows them). The installed `sobani-tracker` must serve
// on the native path from the prebuild the package carries (found by node-gyp-build),
// and its `punch` command must connect two peers. Then the install script: nothing to
// compile while a prebuild loads; without one, a warning and dgram where nothing
// compiles, a source build where something does.
//
// What is packed is a copy of this checkout's files as git sees them (tracked, plus
// untracked ones not ignored: what a commit of the working tree holds), with this
// checkout's node_modules linked in: a fresh clone minus its `yarn install`, and the
// working tree's own dist/ and prebuilds/ are left alone. npm resolves the package's
// dependencies from the registry (--prefer-offline: the local cache first), so the test
// skips, saying so, when the registry cannot be reached. It is about the native path,
// so it runs once, in the SOBANI_IO=native run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { TEST_IO, WirePeer } from './helpers/wire.js';
import { ROOT, runCli, runTracker, type Running } from './helpers/process.js';
import { freePort, httpGet } from './helpers/ops.js';
import { jsonLines } from './helpers/netns.js';

const skip = TEST_IO === 'dgram' && 'SOBANI_IO=dgram: the package is tested once, in the native run (its fallback to dgram included)';

// A user's environment: none of the npm_config_* that `yarn test` exports (its registry
// is yarn's mirror), and no SOBANI_IO, so the installed tracker chooses its path itself.
// (Unset as undefined, which spawn leaves out, so that it also unsets over process.env.)
const userEnv: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).map(([k, v]) => [k, /^(npm_|SOBANI_)/i.test(k) ? undefined : v]));
const noCompiler = { CC: '/bin/false', CXX: '/bin/false' };

/** How long one npm command may take: `npm pack` compiles (tsc, the prebuild), an install fetches; it only ends a hung one. */
const NPM_MS = 20 * 60 * 1000;
/** A punch's own give-up time (its --timeout, in seconds), and how long the test waits for its announce: they only end a failing run. */
const PUNCH_TIMEOUT_S = 60;

function npm(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): { code: number | null; out: string } {
  const r = spawnSync('npm', args, { cwd, env: { ...userEnv, ...env }, encoding: 'utf8', timeout: NPM_MS });
  return { code: r.status, out: `${r.stdout}${r.stderr}${r.error ? String(r.error) : ''}` };
}

/** This checkout's files, as a commit of the working tree would hold them, copied into `dir`. */
function copySources(dir: string): void {
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' })
    .split('\0')
    .filter((f) => f !== '' && existsSync(join(ROOT, f))); // a tracked file deleted in the working tree is not there
  for (const f of files) {
    mkdirSync(dirname(join(dir, f)), { recursive: true });
    cpSync(join(ROOT, f), join(dir, f));
  }
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
}

type Line = { level?: number; msg?: string; io?: string };
const logLines = (output: string): Line[] => output.trim().split('\n').map((l) => JSON.parse(l) as Line);

test('npm pack, npm install -g --ignore-scripts with no compiler: the installed sobani-tracker serves natively and punches', { skip }, async (t) => {
  const ping = npm(['ping'], ROOT);
  if (ping.code !== 0) {
    t.skip(`the npm registry cannot be reached, so the package's dependencies cannot be installed: ${ping.out.trim().split('\n').at(-1)}`);
    return;
  }
  const tmp = mkdtempSync(join(tmpdir(), 'sobani-npm-package-'));
  try {
    const src = join(tmp, 'src');
    const prefix = join(tmp, 'prefix');
    const bin = [join(prefix, 'bin', 'sobani-tracker')];
    const pkg = join(prefix, 'lib', 'node_modules', 'sobani-tracker');
    const prebuildDir = `prebuilds/${process.platform}-${process.arch}`;

    await t.test('npm pack: dist/src, the prebuild and the addon\'s sources; no tests, no bench, no build/', () => {
      copySources(src);
      const packed = npm(['pack', '--pack-destination', tmp], src);
      assert.equal(packed.code, 0, packed.out);
      const tarballs = readdirSync(tmp).filter((f) => f.endsWith('.tgz'));
      assert.equal(tarballs.length, 1, packed.out);
      const files = execFileSync('tar', ['-tzf', join(tmp, tarballs[0]!)], { encoding: 'utf8' }).trim().split('\n').map((f) => f.replace(/^package\//, ''));
      for (const f of ['package.json', 'dist/src/cli.js', 'dist/src/io/native-io.js', 'dist/src/index.d.ts', `${prebuildDir}/sobani_udp.glibc.node`,
        'binding.gyp', 'src/io/native/common.gypi', 'src/io/native/udp.c', 'src/io/native/napi-helpers.h', 'src/io/native/build.cjs']) {
        assert.ok(files.includes(f), `${f} is not in the tarball: ${files.join(' ')}`);
      }
      assert.deepEqual(files.filter((f) => f.endsWith('.node')), [`${prebuildDir}/sobani_udp.glibc.node`], 'one addon: the prebuild');
      assert.deepEqual(files.filter((f) => /^(test|bench|build|dist\/test|dist\/bench|node_modules)\//.test(f) || f.endsWith('.ts') && !f.endsWith('.d.ts')), []);

      const installed = npm(['install', '-g', '--ignore-scripts', '--prefer-offline', '--prefix', prefix, join(tmp, tarballs[0]!)], tmp, noCompiler);
      assert.equal(installed.code, 0, installed.out);
      assert.ok(existsSync(bin[0]!), installed.out);
      assert.ok(!existsSync(join(pkg, 'build')), 'nothing was compiled');
    });

    await t.test('the installed bin serves on the native path (start-up line, /metrics), with no warning', async () => {
      const metricsPort = await freePort();
      const tracker = await runTracker(['--host', '127.0.0.1', '--port', '0', '--shards', '1', '--metrics-port', String(metricsPort)], { ...userEnv, ...noCompiler }, tmp, bin);
      try {
        const peer = await WirePeer.open({ address: '127.0.0.1', port: tracker.port });
        await peer.announce();
        peer.close();
        assert.match((await httpGet(metricsPort, '/metrics')).body, /^sobani_io_path\{path="native"\} 1$/m);
      } finally {
        tracker.child.kill('SIGTERM');
      }
      assert.equal((await tracker.exited).code, 0);
      const lines = logLines(tracker.output());
      assert.equal(lines.find((l) => l.msg === 'sobani-tracker listening')?.io, 'native', tracker.output());
      assert.deepEqual(lines.filter((l) => (l.level ?? 0) >= 40), []);
    });

    await t.test('the installed bin\'s punch command connects two peers through the installed tracker', async () => {
      const tracker = await runTracker(['--host', '127.0.0.1', '--port', '0', '--shards', '2'], userEnv, tmp, bin);
      try {
        const punch = (extra: string[]) => jsonLines(spawn(bin[0]!, ['punch', '--tracker', `127.0.0.1:${tracker.port}`, '--timeout', String(PUNCH_TIMEOUT_S), ...extra], { cwd: tmp, env: userEnv }));
        const b = punch([]);
        const announced = await b.waitFor(['announced'], PUNCH_TIMEOUT_S * 1000);
        const a = punch(['--peer', String(announced.shareId)]);
        const [exitA, exitB] = await Promise.all([a.exited, b.exited]);
        assert.ok(a.lines.some((l) => l.event === 'connected'), `A: ${JSON.stringify(a.lines)} ${a.stderr()}`);
        assert.ok(b.lines.some((l) => l.event === 'connected'), `B: ${JSON.stringify(b.lines)} ${b.stderr()}`);
        assert.equal(exitA.code, 0);
        assert.equal(exitB.code, 0);
      } finally {
        tracker.child.kill('SIGTERM');
        await tracker.exited;
      }
    });

    /** The package's own install script, run by npm as an install with scripts allowed would. */
    const installScript = (env: NodeJS.ProcessEnv) => npm(['run-script', 'install'], pkg, env);

    await t.test('the install script compiles nothing while the prebuild loads', () => {
      const run = installScript(noCompiler);
      assert.equal(run.code, 0, run.out);
      assert.match(run.out, new RegExp(`native UDP addon ${prebuildDir}/sobani_udp\\.glibc\\.node loads, nothing to compile`));
      assert.ok(!existsSync(join(pkg, 'build')), run.out);
    });

    /** The installed bin serves one client's announce, then stops (SIGTERM). */
    const servedOneClient = async (args: string[]): Promise<Running> => {
      const tracker = await runTracker(['--host', '127.0.0.1', '--port', '0', '--shards', '1', ...args], userEnv, tmp, bin);
      try {
        const peer = await WirePeer.open({ address: '127.0.0.1', port: tracker.port });
        await peer.announce();
        peer.close();
      } finally {
        tracker.child.kill('SIGTERM');
        await tracker.exited;
      }
      return tracker;
    };

    await t.test('no prebuild that fits and no compiler: the install warns and succeeds; auto serves on dgram, --io native refuses', async () => {
      rmSync(join(pkg, 'prebuilds'), { recursive: true });
      const run = installScript(noCompiler);
      assert.equal(run.code, 0, run.out);
      assert.match(run.out, /warning: sobani-tracker: native UDP addon not built \(.*see build\/native-build\.log\); the tracker will use Node dgram/);
      const tracker = await servedOneClient([]);
      const lines = logLines(tracker.output());
      assert.equal(lines.find((l) => l.msg === 'sobani-tracker listening')?.io, 'dgram');
      const warnings = lines.filter((l) => l.level === 40);
      assert.equal(warnings.length, 1, tracker.output());
      assert.match(warnings[0]!.msg!, /native UDP path is unavailable.*the sobani_udp addon is not there/);
      const refused = await runCli(['--host', '127.0.0.1', '--port', '0', '--io', 'native'], userEnv, tmp, bin);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /--io native: the sobani_udp addon is not there/);
    });

    await t.test('no prebuild that fits, a compiler: the install builds the addon from the package\'s sources, and it serves', async () => {
      const run = installScript({});
      assert.equal(run.code, 0, run.out);
      assert.match(run.out, /sobani-tracker: built build\/Release\/sobani_udp\.node\n/);
      const tracker = await servedOneClient(['--io', 'native']);
      assert.equal((await tracker.exited).code, 0);
      assert.equal(logLines(tracker.output()).find((l) => l.msg === 'sobani-tracker listening')?.io, 'native');
    });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
