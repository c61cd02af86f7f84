// Configuration: defaults < config file < environment < flags, every value validated.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir, availableParallelism } from 'node:os';
import { join } from 'node:path';
import { ConfigError, configWarnings, defaultConfig, helpText, HELP_COLUMN, HELP_WIDTH, loadConfig, OPTIONS, printConfig, envName, flagName, stunOtherPort } from '../src/config.js';
import { runCli } from './helpers/process.js';

const none = join(tmpdir(), 'no-such-config.json');

test('defaults: port 3000, all interfaces, ttl 300 s, shards = cores - 1 (at least 1), 12-character ids', () => {
  const { config } = loadConfig([], {}, none);
  assert.equal(config.port, 3000);
  assert.equal(config.host, '::');
  assert.equal(config.ttl, 300);
  assert.equal(config.shards, Math.max(1, availableParallelism() - 1));
  assert.equal(config.shareIdLength, 12);
});

test('flags override env, env overrides the file, the file overrides defaults', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sobani-'));
  const file = join(dir, 'config.json');
  writeFileSync(file, JSON.stringify({ port: 4000, ttl: 60, shards: 3 }));
  const { config } = loadConfig(['--config', file, '--port', '5000'], { SOBANI_PORT: '4500', SOBANI_TTL: '90' }, none);
  assert.equal(config.port, 5000); // flag
  assert.equal(config.ttl, 90); // env
  assert.equal(config.shards, 3); // file
  assert.equal(config.logLevel, 'info'); // default
  // ./config.json is read when present and no --config is given
  assert.equal(loadConfig([], {}, file).config.port, 4000);
  assert.equal(loadConfig(['--port=6000'], {}, none).config.port, 6000);
});

test('every setting has a flag and an env var named after it', () => {
  for (const o of OPTIONS) {
    const t = o.type;
    const sample = t.kind === 'int' ? String(t.min) : t.kind === 'enum' ? t.values[0]!
      : t.kind === 'redis-url' ? 'redis://127.0.0.1:6379' : t.kind === 'name' ? 'tracker-1' : t.kind === 'turn-urls' ? 'turn:127.0.0.1:3478'
      : t.kind === 'text' ? 'some text' : t.kind === 'path' ? '/some/file' : '127.0.0.1';
    // settings that need another: a second STUN address a specific primary one; a relay its secret, and back
    const companions: Partial<Record<string, Record<string, string>>> = {
      stunOtherHost: { host: '127.0.0.2' },
      turnUrl: { turnSecret: 'x' },
      turnSecret: { turnUrl: 'turn:127.0.0.1:3478' },
      turnSecretFile: { turnUrl: 'turn:127.0.0.1:3478' },
    };
    const needs = Object.entries(companions[o.key] ?? {});
    const flags = needs.flatMap(([k, v]) => [`--${flagName(k)}`, v]);
    const env = Object.fromEntries(needs.map(([k, v]) => [envName(k), v]));
    assert.equal(String(loadConfig([...flags, `--${flagName(o.key)}`, sample], {}, none).config[o.key]), sample, o.key);
    assert.equal(String(loadConfig([], { ...env, [envName(o.key)]: sample }, none).config[o.key]), sample, o.key);
  }
  assert.equal(envName('shareIdLength'), 'SOBANI_SHARE_ID_LENGTH');
});

test('a bad value names the setting and the allowed range', () => {
  const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [['--port', '70000'], {}, /port \(--port\) is "70000": it must be an integer from 0 to 65535/],
    [['--shards', '0'], {}, /shards .*from 1 to 64/],
    [['--ttl', 'soon'], {}, /ttl .*integer from 1 to 86400/],
    [['--log-level', 'loud'], {}, /logLevel .*one of fatal, error, warn, info, debug, trace, silent/],
    [['--host', 'localhost'], {}, /host .*IPv4 or IPv6 address literal/],
    [['--directory', 'localhost:6379'], {}, /directory .*redis:\/\/HOST:PORT/],
    [['--instance-id', 'a b'], {}, /instanceId .*A-Z a-z 0-9/],
    [['--share-id-length', '7'], {}, /shareIdLength .*from 8 to 32/],
    [[], { SOBANI_PORT: '-1' }, /port \(SOBANI_PORT\)/],
    [['--nope', '1'], {}, /unknown flag --nope/],
    [['--port'], {}, /--port needs a value/],
  ];
  for (const [argv, env, re] of cases) assert.throws(() => loadConfig(argv, env, none), (e: Error) => e instanceof ConfigError && re.test(e.message), argv.join(' '));
  const dir = mkdtempSync(join(tmpdir(), 'sobani-'));
  writeFileSync(join(dir, 'a.json'), '{"prot": 1}');
  writeFileSync(join(dir, 'b.json'), '{nope');
  assert.throws(() => loadConfig(['--config', join(dir, 'a.json')], {}, none), /unknown setting "prot"/);
  assert.throws(() => loadConfig(['--config', join(dir, 'b.json')], {}, none), /not valid JSON/);
  assert.throws(() => loadConfig(['--config', join(dir, 'missing.json')], {}, none), /cannot read config file/);
});

test('--print-config prints every setting with its doc; saved, --config reads it back as the same config', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sobani-'));
  for (const argv of [['--ttl', '77', '--directory', 'redis://127.0.0.1:6379'], ['--ttl', '77', '--shards', '5', '--instance-id', 'tracker-2']]) {
    const args = loadConfig(argv, {}, none);
    const text = printConfig(args.config, args.given);
    for (const o of OPTIONS) {
      assert.match(text, new RegExp(`"${o.key}"`));
      assert.ok(text.includes(`  // ${o.doc}\n`), `${o.key}: its doc`);
    }
    for (const form of ['commented', 'json'] as const) {
      const file = join(dir, `printed-${form}.json`);
      writeFileSync(file, form === 'json' ? printConfig(args.config, args.given, 'json') : text);
      const back = loadConfig(['--config', file], {}, none).config;
      // the same, but for instanceId when it was not given: a fresh one, so two instances started from one file differ
      assert.deepEqual({ ...back, instanceId: '' }, { ...args.config, instanceId: '' }, `${argv.join(' ')} (${form})`);
      assert.equal(back.instanceId === args.config.instanceId, args.given.has('instanceId'), `${form}: instanceId pinned only when given`);
    }
  }
});

test('--print-config pins nothing that is worked out at each start (shards from the cores, the random instanceId), unless given, nor a secret', () => {
  const plain = loadConfig(['--print-config=json'], {}, none);
  assert.equal(plain.printConfig, 'json');
  const printed = JSON.parse(printConfig(plain.config, plain.given, 'json')) as Record<string, unknown>;
  assert.ok(!('shards' in printed) && !('instanceId' in printed), Object.keys(printed).join(' '));
  assert.equal(printed.ttl, 300, 'the other defaults are there');
  const commented = printConfig(plain.config, plain.given);
  assert.match(commented, /^ {2}\/\/ "shards": \d+ {3}\(not pinned: the default \(cores − 1 \(≥ 1\)\) is worked out at each start\)$/m);
  assert.match(commented, /^ {2}\/\/ "instanceId": "[0-9a-f]{12}" {3}\(not pinned: the default \(random per start\) is worked out at each start\)$/m);
  const given = loadConfig(['--shards', '3', '--instance-id', 'a-1'], {}, none);
  assert.deepEqual(Object.entries(JSON.parse(printConfig(given.config, given.given, 'json')) as object).filter(([k]) => k === 'shards' || k === 'instanceId'), [['shards', 3], ['instanceId', 'a-1']]);
  // a secret is left out, as a comment (a --config of it would name the secret "<redacted>")
  const secret = loadConfig(['--turn-url', 'turn:127.0.0.1:3478', '--turn-secret', 'hush', '--directory', 'redis://u:pw@127.0.0.1:6379'], {}, none);
  const json = JSON.parse(printConfig(secret.config, secret.given, 'json')) as Record<string, unknown>;
  assert.ok(!('turnSecret' in json) && !('directory' in json) && json.turnUrl === 'turn:127.0.0.1:3478');
  assert.match(printConfig(secret.config, secret.given), /^ {2}\/\/ "turnSecret": "<redacted>" {3}\(a secret is never printed: give it again\)$/m);
  assert.throws(() => loadConfig(['--print-config=yaml'], {}, none), /--print-config takes no value, or =json/);
});

test('a config file may hold whole-line // comments; an error in it still names its true position', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sobani-'));
  const file = join(dir, 'config.json');
  writeFileSync(file, '{\n  // the port\n  "port": 4000, // not a whole-line comment\n}');
  assert.throws(() => loadConfig(['--config', file], {}, none), (e: Error) => e instanceof ConfigError && /not valid JSON.*position 32/.test(e.message));
  writeFileSync(file, '{\n  // the port\n  "port": 4000,\n    // "ttl": 5\n  "directory": "redis://127.0.0.1:6379"\n}');
  const { config } = loadConfig(['--config', file], {}, none);
  assert.equal(config.port, 4000);
  assert.equal(config.ttl, 300, 'a commented-out setting is not set');
  assert.equal(config.directory, 'redis://127.0.0.1:6379', '// inside a value is no comment');
});

test('a flag followed by another flag is told it needs a value (not that the next word is unexpected)', () => {
  for (const [argv, re] of [
    [['--port', '--ttl', '5'], /^--port needs a value, not the flag --ttl \(a value beginning with "-" is written --port=VALUE\)$/],
    [['--port', '-h'], /^--port needs a value, not the flag -h/],
    [['--config', '--port', '1'], /^--config needs a value/],
    [['--ttl', '5', '--port'], /^--port needs a value$/],
    [['--prot', '5'], /^unknown flag --prot \(see --help\)$/],
  ] as const) assert.throws(() => loadConfig(argv, {}, none), (e: Error) => e instanceof ConfigError && re.test(e.message), argv.join(' '));
  assert.equal(loadConfig(['--turn-url', 'turn:127.0.0.1:3478', '--turn-secret=-starts-with-a-dash'], {}, none).config.turnSecret, '-starts-with-a-dash');
});

test('an unknown SOBANI_* variable is warned about, with the setting it may be a typo of; the project\'s own are not', () => {
  assert.deepEqual(loadConfig([], { SOBANI_PROT: '1', SOBANI_NOPE: 'x', HOME: '/root' }, none).warnings, [
    'SOBANI_NOPE is set, but no setting is named so: it is ignored',
    'SOBANI_PROT is set, but no setting is named so: it is ignored (did you mean SOBANI_PORT?)',
  ]);
  // every setting's variable, the config file's, the test passes' switch (the io setting) and the fault shim's
  const own = Object.fromEntries([...OPTIONS.map((o) => envName(o.key)), 'SOBANI_CONFIG', 'SOBANI_FAULT_V6ONLY', 'SOBANI_FAULT_RECVMMSG'].map((k) => [k, '']));
  assert.equal(own.SOBANI_IO, '', 'SOBANI_IO is the io setting');
  assert.deepEqual(loadConfig([], own, none).warnings, []);
  assert.deepEqual(loadConfig([], process.env, none).warnings, [], 'nor any the test run itself sets');
});

test('the CLI refuses a bad setting with exit code 2 and a message; --help and --print-config exit 0', async () => {
  const bad = await runCli(['--port', '99999']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /port \(--port\) is "99999": it must be an integer from 0 to 65535/);
  const help = await runCli(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Usage: sobani-tracker \[--config FILE\] \[--host ADDR\] \[--port N\] \[--shards N\] \[--ttl SECONDS\] \[--log-level LEVEL\]/);
  const printed = await runCli(['--print-config', '--shards', '5'], { SOBANI_TTL: '11' });
  assert.equal(printed.code, 0);
  assert.match(printed.stdout, /"shards": 5/);
  assert.match(printed.stdout, /"ttl": 11/);
  const json = await runCli(['--print-config=json'], { SOBANI_TTL: '11' });
  assert.equal(json.code, 0);
  assert.equal((JSON.parse(json.stdout) as { ttl: number }).ttl, 11);
});

test('settings that work against each other are named at start-up: an ipRate too low for maxSessionsPerIp desktop clients', () => {
  assert.deepEqual(configWarnings(defaultConfig()), [], 'the defaults fit each other');
  const warnings = configWarnings({ ...defaultConfig(), maxSessionsPerIp: 4096, maxSessionsPerIpv6Prefix: 1024, ipRate: 2000 });
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /ipRate \(2000\/s\) cannot keep maxSessionsPerIp \(4096\).*at least 2048/);
  assert.deepEqual(configWarnings({ ...defaultConfig(), maxSessionsPerIp: 4096, ipRate: 2048 }), []);
  // an IPv6 /64 has a cap of its own, and the same need
  const v6 = configWarnings({ ...defaultConfig(), maxSessionsPerIp: 1024, maxSessionsPerIpv6Prefix: 8192, ipRate: 4000 });
  assert.equal(v6.length, 1);
  assert.match(v6[0]!, /ipRate \(4000\/s\) cannot keep maxSessionsPerIpv6Prefix \(8192\).*IPv6 \/64.*at least 4096/);
});

test('--help: every description starts in its column, wrapped, even after a long list of values', () => {
  const lines = helpText().split('\n');
  const options = lines.slice(lines.findIndex((l) => l.startsWith('Options')) + 1);
  const indent = ' '.repeat(HELP_COLUMN);
  // each entry: "  --flag ..." then continuation lines; its description read back must be the doc
  const entries: { flag: string; doc: string }[] = [];
  for (const line of options) {
    assert.ok(line.length <= HELP_WIDTH, `wider than ${HELP_WIDTH}: ${line}`);
    if (line.startsWith('  --')) {
      // a flag with its description from the column on, or a flag too long for that, alone
      const alone = line.length > HELP_COLUMN && line[HELP_COLUMN - 1] !== ' ';
      entries.push(alone ? { flag: line.trim(), doc: '' } : { flag: line.slice(0, HELP_COLUMN).trim(), doc: line.slice(HELP_COLUMN) });
    } else {
      assert.ok(line.startsWith(indent) && line[HELP_COLUMN] !== ' ', `a continuation starts in the description column: ${JSON.stringify(line)}`);
      const e = entries.at(-1)!;
      e.doc = e.doc === '' ? line.slice(HELP_COLUMN) : `${e.doc} ${line.slice(HELP_COLUMN)}`;
    }
  }
  for (const o of OPTIONS) {
    const e = entries.find((x) => x.flag.startsWith(`--${flagName(o.key)} `));
    assert.ok(e, `--${flagName(o.key)} is listed`);
    assert.equal(e.doc, o.doc);
  }
  // the two that ran together before
  assert.ok(entries.find((e) => e.flag === '--log-level <fatal|error|warn|info|debug|trace|silent>'));
  assert.ok(entries.find((e) => e.flag === '--announce-reply <both|documented|legacy>'));
});

test('a second STUN address (NAT behaviour discovery) is refused where it cannot work, naming why', () => {
  const refused = (argv: string[], why: RegExp) => assert.throws(() => loadConfig(argv, {}, none), (e: unknown) => e instanceof ConfigError && why.test(e.message));
  refused(['--stun-other-host', '10.0.0.2'], /needs the tracker's primary IP address as host, not the wildcard ::/);
  refused(['--host', '0.0.0.0', '--stun-other-host', '10.0.0.2'], /not the wildcard 0\.0\.0\.0/);
  refused(['--host', '10.0.0.1', '--stun-other-host', 'fd00::2'], /same address family/);
  refused(['--host', '10.0.0.1', '--stun-other-host', '10.0.0.1'], /must differ from host/);
  refused(['--host', '10.0.0.1', '--port', '0', '--stun-other-host', '10.0.0.2'], /needs a fixed port/);
  refused(['--host', '10.0.0.1', '--port', '65535', '--stun-other-host', '10.0.0.2'], /the other port \(65536\)/);
  refused(['--host', '10.0.0.1', '--port', '3478', '--stun-other-port', '3478', '--stun-other-host', '10.0.0.2'], /the other port \(3478\)/);
  const ok = loadConfig(['--host', '10.0.0.1', '--port', '3478', '--stun-other-host', '10.0.0.2'], {}, none).config;
  assert.equal(stunOtherPort(ok), 3479, 'the other port defaults to port + 1');
  assert.equal(stunOtherPort({ ...ok, stunOtherPort: 5000 }), 5000);
});

test('the relay settings: turn: URLs only, and a secret exactly when there is a relay', () => {
  const ok = (argv: string[]) => loadConfig(argv, {}, none).config;
  assert.equal(ok(['--turn-url', 'turn:relay.example.org:3478,turn:[2001:db8::1]:3479?transport=udp,turn:198.51.100.4', '--turn-secret', 's']).turnUrl,
    'turn:relay.example.org:3478,turn:[2001:db8::1]:3479?transport=udp,turn:198.51.100.4');
  const refused = (argv: string[], why: RegExp) => assert.throws(() => loadConfig(argv, {}, none), (e: unknown) => e instanceof ConfigError && why.test(e.message));
  for (const bad of ['turns:relay:5349', 'turn:relay:3478?transport=tcp', 'stun:relay:3478', 'turn:relay:99999', 'relay:3478', 'turn:']) {
    refused(['--turn-url', bad, '--turn-secret', 's'], /turnUrl \(--turn-url\) is .*: it must be turn:HOST:PORT URLs/);
  }
  refused(['--turn-url', 'turn:relay:3478'], /no secret to mint its credentials with/);
  refused(['--turn-secret', 's'], /no relay to use it with/);
  refused(['--turn-url', 'turn:relay:3478', '--turn-secret', 's', '--turn-secret-file', '/f'], /both set/);
  assert.equal(ok(['--relay-ips', '198.51.100.4,2001:db8::1']).relayIps, '198.51.100.4,2001:db8::1');
  refused(['--relay-ips', 'relay.example.org'], /relayIps \(--relay-ips\) is "relay.example.org": it must be IPv4 or IPv6 address literals, comma-separated/);
});
