// What a new user meets first, through the real CLI (a child process, as they run it):
// --help names every command; health --help helps; a port in use is one clear line on
// the suite's I/O path (SOBANI_IO); --print-config, saved, starts the same tracker; a
// mistyped SOBANI_* variable is named; a flag without its value is told so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config } from '../src/config.js';
import { runCli, runTracker } from './helpers/process.js';
import { withTracker } from './helpers/wire.js';

/** One line on stderr, no stack trace, nothing said of IPv6 anywhere. */
function oneClearLine(r: { code: number | null; stdout: string; stderr: string }, re: RegExp): void {
  const said = r.stdout + r.stderr;
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line on stderr:\n${r.stderr}`);
  assert.match(r.stderr, re);
  assert.doesNotMatch(said, /^\s+at /m, 'no stack trace');
  assert.doesNotMatch(said, /IPv6 is unavailable/);
}

test('--help names every command, and each command has a --help of its own', async () => {
  const help = await runCli(['--help']);
  assert.equal(help.code, 0, help.stderr);
  const commands = help.stdout.slice(help.stdout.indexOf('\nCommands:\n'), help.stdout.indexOf('\nOptions'));
  for (const cmd of ['announce', 'pulse', 'push', 'punch', 'health']) assert.match(commands, new RegExp(`^ {2}${cmd} `, 'm'), cmd);
  assert.match(help.stdout, /sobani-tracker COMMAND --help/);
  const each = await Promise.all(['announce', 'punch', 'health'].map((cmd) => runCli([cmd, '--help'])));
  for (const r of each) assert.equal(r.code, 0, r.stderr);
  assert.match(each[1]!.stdout, /punch +--tracker HOST:PORT/);
  // health --help: its usage, not "the metrics listener is off"
  assert.match(each[2]!.stdout, /^Usage: sobani-tracker health \[--metrics-host ADDR\] \[--metrics-port N\]/);
  assert.equal(each[2]!.stderr, '');
});

test('a UDP port in use: one line naming the address, on this pass\'s I/O path, with no stack and no word of IPv6', async () => {
  // 0.0.0.0:P taken: "::" (dual-stack, the default host) cannot have P either, nor 127.0.0.1
  const holder = dgram.createSocket('udp4');
  await new Promise<void>((r) => holder.bind(0, '0.0.0.0', () => r()));
  const port = holder.address().port;
  try {
    const [wildcard, loopback] = await Promise.all([
      runCli(['--port', String(port), '--shards', '1']),
      runCli(['--host', '127.0.0.1', '--port', String(port), '--shards', '1']),
    ]);
    for (const [r, at] of [[wildcard, `\\[::\\]:${port}`], [loopback, `127\\.0\\.0\\.1:${port}`]] as const) {
      assert.equal(r.code, 1, r.stdout + r.stderr);
      oneClearLine(r, new RegExp(`^sobani-tracker: cannot listen on UDP ${at}: the address is in use \\(EADDRINUSE\\): another process listens there; stop it, or choose another port with --port\\n$`));
    }
  } finally {
    holder.close();
  }
});

test('the metrics port in use: one line naming the address and --metrics-port', async () => {
  const holder = net.createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
  const port = (holder.address() as net.AddressInfo).port;
  try {
    const r = await runCli(['--host', '127.0.0.1', '--port', '0', '--shards', '1', '--metrics-port', String(port)]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    oneClearLine(r, new RegExp(`^sobani-tracker: cannot listen on TCP 127\\.0\\.0\\.1:${port} \\(the metrics listener\\): the address is in use \\(EADDRINUSE\\).*--metrics-port\\n$`));
  } finally {
    holder.close();
  }
});

test('--print-config, saved to a file, is a --config that starts a tracker with the same configuration (a fresh instanceId)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sobani-printed-'));
  try {
    const argv = ['--host', '127.0.0.1', '--port', '0', '--ttl', '77', '--max-sessions', '1000'];
    const printed = await runCli(['--print-config', ...argv]);
    assert.equal(printed.code, 0, printed.stderr);
    assert.doesNotMatch(printed.stdout, /^ {2}"(shards|instanceId)"/m, 'computed at each start: not pinned');
    const file = join(dir, 'printed.json');
    writeFileSync(file, printed.stdout);
    const tracker = await runTracker(['--config', file]);
    tracker.child.kill('SIGTERM');
    await tracker.exited;
    const line = tracker.output().split('\n').find((l) => l.includes('"msg":"sobani-tracker listening"'))!;
    const started = (JSON.parse(line) as { config: Config }).config;
    const meant = loadConfig(argv).config; // this process has the child's environment
    assert.notEqual(started.instanceId, meant.instanceId);
    assert.deepEqual({ ...started, instanceId: '' }, { ...meant, instanceId: '' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a SOBANI_* variable that is no setting is named, with the one it may be a typo of', async () => {
  const tracker = await runTracker(['--host', '127.0.0.1', '--port', '0', '--shards', '1'], { SOBANI_PROT: '4000' });
  tracker.child.kill('SIGTERM');
  await tracker.exited;
  const warning = tracker.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; msg: string })
    .find((l) => l.msg.includes('SOBANI_PROT'));
  assert.deepEqual(warning && { level: warning.level, msg: warning.msg },
    { level: 40, msg: 'SOBANI_PROT is set, but no setting is named so: it is ignored (did you mean SOBANI_PORT?)' });
  assert.doesNotMatch(tracker.output(), /SOBANI_IO|SOBANI_CONFIG/, 'not the test pass\'s own SOBANI_IO');
  // where there is no log: on stderr, and --print-config's output stays a config
  const printed = await runCli(['--print-config=json'], { SOBANI_PROT: '4000' });
  assert.equal(printed.code, 0);
  assert.equal(printed.stderr, 'sobani-tracker: warning: SOBANI_PROT is set, but no setting is named so: it is ignored (did you mean SOBANI_PORT?)\n');
  assert.equal((JSON.parse(printed.stdout) as { port: number }).port, 3000);
});

test('a flag without its value is told so: "--port needs a value" (the tracker), "--tracker needs a value" (a client command)', async () => {
  const [tracker, client] = await Promise.all([runCli(['--port', '--ttl', '5']), runCli(['punch', '--tracker', '--timeout', '5'])]);
  assert.equal(tracker.code, 2);
  assert.equal(tracker.stderr, 'sobani-tracker: --port needs a value, not the flag --ttl (a value beginning with "-" is written --port=VALUE)\n');
  assert.equal(client.code, 2);
  assert.match(client.stderr, /^sobani-tracker punch: --tracker needs a value\n/);
});

test('/healthz counts its shards in good English: "1 shard answering", "2 shards answering"', async () => {
  for (const shards of [1, 2]) {
    await withTracker({ shards }, async (tracker) => {
      assert.deepEqual(await tracker.health(), { ok: true, reason: `ok: UDP socket bound, ${shards} shard${shards === 1 ? '' : 's'} answering` });
    });
  }
});
