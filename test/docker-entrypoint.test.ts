// The checks compose and the image make before anything serves, run here without a
// Docker engine (and without `docker compose`): the image's entrypoint
// (docker/entrypoint.sh) on the secret files and /data, as the image's user, uid 1000,
// where this test runs as root; coturn's command's check of the same secret, as
// coturn's uid 65534; and compose's ${PUBLIC_IP:?...}, interpolated as compose does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { loadConfig, unknownEnvWarnings } from '../src/config.js';
import { ROOT } from './helpers/process.js';
import { onceInNativePass } from './helpers/wire.js';

const skip = onceInNativePass('no tracker runs: the checks are shell and compose text');
const root = process.getuid?.() === 0;
/** Who runs the checks: the image's user (node, uid 1000), or, not being root, whoever runs this test. */
const as = (uid: number): { uid?: number; gid?: number } => (root ? { uid, gid: uid } : {});

const compose = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');

interface Ran { code: number | null; stdout: string; stderr: string }

/**
 * An /app as the image has it, but its dist/src/cli.js only says how it was run (its
 * arguments and pid), and a temp dir for secrets and /data: everyone may enter both.
 */
function setup(): { tmp: string; entrypoint: (args: string[], env: NodeJS.ProcessEnv) => Ran } {
  const tmp = mkdtempSync(join(tmpdir(), 'sobani-entrypoint-'));
  chmodSync(tmp, 0o755);
  const app = join(tmp, 'app');
  mkdirSync(join(app, 'dist', 'src'), { recursive: true });
  writeFileSync(join(app, 'dist', 'src', 'cli.js'), 'console.log(JSON.stringify({ argv: process.argv.slice(2), pid: process.pid }));\n');
  const entrypoint = (args: string[], env: NodeJS.ProcessEnv): Ran => {
    const r = spawnSync('/bin/sh', [join(ROOT, 'docker', 'entrypoint.sh'), ...args], {
      cwd: app, encoding: 'utf8', ...as(1000),
      env: { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, ...env },
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  return { tmp, entrypoint };
}

/** Refused: exit 2, one line naming the setting and `why`. */
function refused(r: Ran, why: RegExp): void {
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, why);
}

/** Started: the CLI ran with exactly these arguments, as the entrypoint's own process (exec). */
function started(r: Ran, args: string[]): void {
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual((JSON.parse(r.stdout) as { argv: string[] }).argv, args);
}

test('the entrypoint execs the CLI with its arguments: node, not a shell, is the process (PID 1 in the container)', { skip }, () => {
  const { tmp, entrypoint } = setup();
  try {
    const r = spawnSync('/bin/sh', ['-c', `echo "$$"; exec /bin/sh ${join(ROOT, 'docker', 'entrypoint.sh')} --ttl 5 'two words'`], {
      cwd: join(tmp, 'app'), encoding: 'utf8', env: { PATH: `${dirname(process.execPath)}:/usr/bin:/bin` },
    });
    const [shellPid, json] = r.stdout.trim().split('\n');
    const ran = JSON.parse(json!) as { argv: string[]; pid: number };
    assert.deepEqual(ran.argv, ['--ttl', '5', 'two words']);
    assert.equal(ran.pid, Number(shellPid), 'the same process all along: exec');
    started(entrypoint([], {}), []);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('a secret file that is missing, a directory (Docker\'s stand-in for a missing host file), unreadable by uid 1000 or empty stops the start with one line saying what to do', { skip }, () => {
  const { tmp, entrypoint } = setup();
  try {
    const good = join(tmp, 'turn_secret');
    writeFileSync(good, 'c2VjcmV0\n');
    chmodSync(good, 0o444);
    const dir = join(tmp, 'a-directory');
    mkdirSync(dir);
    const unreadable = join(tmp, 'unreadable');
    writeFileSync(unreadable, 'c2VjcmV0\n');
    chmodSync(unreadable, 0o000);
    const empty = join(tmp, 'empty');
    writeFileSync(empty, '');
    chmodSync(empty, 0o444);
    const turn = (file: string): NodeJS.ProcessEnv => ({ SOBANI_TURN_SECRET_FILE: file });

    refused(entrypoint([], turn(join(tmp, 'missing'))), /^sobani-tracker: SOBANI_TURN_SECRET_FILE: \S+missing does not exist: mount the secret there/);
    refused(entrypoint([], turn(dir)), /^sobani-tracker: SOBANI_TURN_SECRET_FILE: \S+a-directory is a directory, not a file: Docker mounts a directory where the secret's host file .* did not exist\. Create that file .*docker compose up -d --force-recreate\n$/);
    refused(entrypoint([], turn(unreadable)), new RegExp(`^sobani-tracker: SOBANI_TURN_SECRET_FILE: \\S+unreadable is not readable by uid ${root ? 1000 : process.getuid!()}\\b.*which the tracker runs as: on the host, make the file readable \\(chmod 0444`));
    refused(entrypoint([], turn(empty)), /^sobani-tracker: SOBANI_TURN_SECRET_FILE: \S+empty is empty/);
    refused(entrypoint([], { SOBANI_DIRECTORY_PASSWORD_FILE: dir }), /^sobani-tracker: SOBANI_DIRECTORY_PASSWORD_FILE: \S+ is a directory/);
    started(entrypoint([], turn(good)), []);
    // a flag overrides the environment: its file is the tracker's to check
    started(entrypoint(['--turn-secret-file', good], turn(dir)), ['--turn-secret-file', good]);
    // client commands, health, --help and --print-config need no secret
    for (const args of [['--help'], ['--print-config=json'], ['punch', '--tracker', '127.0.0.1:3000'], ['health']]) started(entrypoint(args, turn(dir)), args);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('a /data the tracker cannot write (a root-owned host directory or volume) stops the start, saying how to give it to uid 1000 or go without a snapshot', { skip }, () => {
  const { tmp, entrypoint } = setup();
  try {
    const data = join(tmp, 'data');
    mkdirSync(data);
    chmodSync(data, 0o555); // root's, or not writable by its owner: either way not the tracker's to write
    const snap = (dir: string): NodeJS.ProcessEnv => ({ SOBANI_SNAPSHOT: join(dir, 'sessions.snapshot') });
    const who = root ? 'uid 1000' : `uid ${process.getuid!()}`;
    refused(entrypoint([], snap(data)), new RegExp(`^sobani-tracker: SOBANI_SNAPSHOT: \\S+data is not writable by ${who}\\b.*so the sessions cannot be saved\\. A named volume Docker creates for /data is node's already; .*chown -R 1000:1000 .*Or run without a snapshot: SOBANI_SNAPSHOT=\\n$`));
    refused(entrypoint([], snap(join(tmp, 'nowhere'))), /^sobani-tracker: SOBANI_SNAPSHOT: \S+nowhere does not exist, so the sessions cannot be saved/);
    const writable = join(tmp, 'writable');
    mkdirSync(writable);
    chmodSync(writable, 0o777);
    started(entrypoint([], snap(writable)), []);
    // a snapshot it could save but not read back (restored at start)
    writeFileSync(join(writable, 'sessions.snapshot'), '');
    chmodSync(join(writable, 'sessions.snapshot'), 0o000);
    refused(entrypoint([], snap(writable)), /sessions\.snapshot is not readable by .*so the saved sessions cannot be restored/);
    started(entrypoint([], { SOBANI_SNAPSHOT: '' }), []);
    started(entrypoint(['--snapshot', join(writable, 'other')], snap(data)), ['--snapshot', join(writable, 'other')]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

/** coturn's command in docker-compose.yml, as compose hands it to `sh -c` (folded, $$ -> $). */
function coturnCommand(): string {
  const service = compose.slice(compose.indexOf('\n  coturn:\n'));
  const lines = service.slice(service.indexOf('      - >-\n') + '      - >-\n'.length).split('\n');
  return lines.slice(0, lines.findIndex((l) => l.trim() === '')).map((l) => l.trim()).join(' ').replace(/\$\$/g, '$');
}

test('coturn\'s command refuses a missing, empty or unreadable secret (uid 65534, as coturn runs) instead of starting with an empty one', { skip }, () => {
  const tmp = mkdtempSync(join(tmpdir(), 'sobani-coturn-'));
  chmodSync(tmp, 0o755);
  try {
    const command = coturnCommand();
    assert.match(command, /^\[ -f \/run\/secrets\/turn_secret \].*; exec turnserver /);
    // everything before turnserver, on a secret of ours; then say it would start
    const check = (file: string): Ran => {
      const r = spawnSync('/bin/sh', ['-c', `${command.slice(0, command.indexOf('exec turnserver')).replaceAll('/run/secrets/turn_secret', file)} echo turnserver starts`],
        { encoding: 'utf8', ...as(65534) });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    };
    const file = join(tmp, 'turn_secret');
    const dir = join(tmp, 'dir');
    mkdirSync(dir);
    for (const bad of [join(tmp, 'missing'), dir]) {
      const r = check(bad);
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stderr, /^coturn: \S+ is missing, a directory, unreadable by uid 65534 or empty: make \.\/turn_secret as the header of docker-compose\.yml says \(mode 0444\), then docker compose up -d --force-recreate\n$/);
    }
    writeFileSync(file, '');
    chmodSync(file, 0o444);
    assert.equal(check(file).code, 1, 'empty');
    writeFileSync(file, 'c2VjcmV0');
    chmodSync(file, 0o400); // the host user's alone: coturn cannot read it
    if (root) assert.equal(check(file).code, 1, 'unreadable by uid 65534');
    chmodSync(file, 0o444);
    const ok = check(file);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, 'turnserver starts\n');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

/**
 * docker-compose.yml with `vars` as compose interpolates it (compose spec: `${VAR}`,
 * `${VAR:?message}` fails when VAR is unset or empty, `$$` is a `$`); throws the error
 * compose prints.
 */
function interpolate(text: string, vars: Record<string, string>): string {
  return text.split('\n').filter((l) => !l.trimStart().startsWith('#')).join('\n')
    .replace(/\$\$|\$\{(\w+)(?::\?([^}]*))?\}/g, (m, name: string | undefined, message: string | undefined) => {
      if (name === undefined) return '$';
      const value = vars[name] ?? '';
      if (value === '' && message !== undefined) throw new Error(`required variable ${name} is missing a value: ${message}`);
      return value;
    });
}

test('compose without PUBLIC_IP fails before starting anything, saying where to set it and pointing to the secret; with it, the tracker\'s settings are valid', { skip }, () => {
  assert.throws(() => interpolate(compose, {}), (e: Error) =>
    /^required variable PUBLIC_IP is missing a value: set PUBLIC_IP, the IP address clients reach this host at, in \.env beside docker-compose\.yml or the environment; .*\.\/turn_secret$/.test(e.message));
  assert.throws(() => interpolate(compose, { PUBLIC_IP: '' }), /PUBLIC_IP is missing a value/);
  const text = interpolate(compose, { PUBLIC_IP: '203.0.113.7' });
  const tracker = text.slice(text.indexOf('\n  tracker:\n'), text.indexOf('\n  coturn:\n'));
  const env = Object.fromEntries([...tracker.matchAll(/^ {6}(SOBANI_\w+): "?([^"\n]*)"?$/gm)].map((m) => [m[1]!, m[2]!]));
  assert.equal(env.SOBANI_TURN_URL, 'turn:203.0.113.7:3478');
  assert.match(text, /--external-ip=203\.0\.113\.7 /, 'coturn is told the same address');
  // the tracker takes these settings (the secret file at a path of ours), and no variable is unknown to it
  const tmp = mkdtempSync(join(tmpdir(), 'sobani-compose-'));
  try {
    writeFileSync(join(tmp, 'turn_secret'), 'c2VjcmV0');
    const config = loadConfig([], { ...env, SOBANI_TURN_SECRET_FILE: join(tmp, 'turn_secret') }, join(tmp, 'none.json')).config;
    assert.equal(config.turnUrl, 'turn:203.0.113.7:3478');
    assert.deepEqual(unknownEnvWarnings(env), []);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
