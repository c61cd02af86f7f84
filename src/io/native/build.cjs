// Install-time build of the native addons in binding.gyp:
//   build/Release/sobani_udp.node    the tracker's batched UDP socket (src/io/native/udp.c)
//   build/Release/sobani_bench.node  the benchmark's echo server and load generator (when bench/ is there)
//
// Run by package.json's "install" script (yarn 1 and npm both run it). It never
// fails the install: when the addons cannot be built (no compiler, no python, not
// Linux, no Node headers offline...), it prints one warning line to stderr and
// exits 0, and the tracker uses Node's dgram instead. node-gyp's full output goes
// to build/native-build.log.
//
// node-gyp is taken from, in order: the project's own node_modules (if someone
// adds it as a dependency), npm's $npm_config_node_gyp, the copy bundled with the
// npm that ships with this Node, or `node-gyp` on PATH. Headers: npm's configured
// nodedir ($npm_config_nodedir; yarn 1 passes .npmrc settings the same way), else
// the headers installed next to this Node binary (<prefix>/include/node), else
// node-gyp's own download.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..', '..');
const buildDir = path.join(root, 'build');
const logFile = path.join(buildDir, 'native-build.log');

function done(message) {
  process.stdout.write(`sobani-tracker: ${message}\n`);
  process.exit(0);
}

function fallback(reason) {
  process.stderr.write(`warning: sobani-tracker: native UDP addon not built (${reason}); the tracker will use Node dgram\n`);
  process.exit(0);
}

function isFile(p) {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** How to run node-gyp: [command, ...leading args], or null. */
function findNodeGyp() {
  try {
    return [process.execPath, require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] })];
  } catch {
    // not a dependency of this project
  }
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && isFile(fromNpm)) return [process.execPath, fromNpm];
  const bin = path.dirname(process.execPath);
  const candidates = [
    path.join(bin, '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    path.join(bin, 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  const dirs = (process.env.PATH || '').split(path.delimiter).filter(Boolean);
  for (const dir of dirs) {
    try {
      // <npm>/bin/npm-cli.js -> <npm>/node_modules/node-gyp
      const npm = fs.realpathSync(path.join(dir, 'npm'));
      candidates.push(path.join(path.dirname(npm), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
    } catch {
      // no npm there
    }
  }
  for (const c of candidates) if (isFile(c)) return [process.execPath, c];
  for (const dir of dirs) {
    const p = path.join(dir, 'node-gyp');
    if (isFile(p)) return [p];
  }
  return null;
}

function findNodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (isFile(path.join(prefix, 'include', 'node', 'node_api.h'))) return prefix;
  return null; // node-gyp downloads the headers (needs the network)
}

/** The line of node-gyp's output that says best what went wrong. */
function firstError(output, status) {
  const lines = output.split('\n').map((l) => l.trim()).filter(Boolean);
  const pick =
    lines.find((l) => /gyp ERR! stack Error:/.test(l)) ??
    lines.find((l) => /\berror:/i.test(l) && !/^gyp ERR!/.test(l)) ??
    lines.find((l) => /^make: \*\*\*/.test(l)) ??
    lines.find((l) => /gyp ERR!/.test(l) && !/gyp ERR! (cwd|node -v|node-gyp -v|command|System|not ok)/.test(l));
  const text = (pick ?? `node-gyp exited with ${status}`).replace(/^gyp ERR! (stack )?/, '');
  return text.length > 160 ? `${text.slice(0, 157)}...` : text;
}

function main() {
  // binding.gyp builds the bench addon only when its source is there (not in a Docker build context)
  const targets = ['sobani_udp', ...(isFile(path.join(root, 'bench', 'native', 'bench.c')) ? ['sobani_bench'] : [])];
  if (process.env.SOBANI_IO === 'dgram') done('SOBANI_IO=dgram, native UDP addon not built');
  if (process.platform !== 'linux') fallback(`recvmmsg/sendmmsg need Linux, this is ${process.platform}`);
  if (!isFile(path.join(root, 'binding.gyp'))) fallback('binding.gyp is missing');
  const gyp = findNodeGyp();
  if (gyp === null) fallback('node-gyp not found: neither in node_modules, nor bundled with npm, nor on PATH');
  const nodedir = findNodeDir();
  const args = [...gyp.slice(1), 'rebuild', '--release'];
  if (nodedir !== null) args.push(`--nodedir=${nodedir}`);

  const run = spawnSync(gyp[0], args, {
    cwd: root,
    env: process.env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 5 * 60 * 1000,
    maxBuffer: 64 * 1024 * 1024,
  });
  const output = `$ ${[gyp[0], ...args].join(' ')}\n${run.stdout ?? ''}${run.stderr ?? ''}${run.error ? `\n${run.error.stack}\n` : ''}`;
  try {
    fs.mkdirSync(buildDir, { recursive: true });
    fs.writeFileSync(logFile, output);
  } catch {
    // the log is a convenience
  }
  const log = path.relative(root, logFile);
  if (run.error) fallback(`could not run node-gyp: ${run.error.message}; see ${log}`);
  if (run.status !== 0) fallback(`${firstError(output, run.status ?? run.signal)}; see ${log}`);

  for (const t of targets) {
    const file = path.join(buildDir, 'Release', `${t}.node`);
    if (!isFile(file)) fallback(`node-gyp succeeded but ${path.relative(root, file)} is missing; see ${log}`);
    try {
      require(file);
    } catch (e) {
      fallback(`${path.relative(root, file)} was built but does not load: ${String(e.message).split('\n')[0]}`);
    }
  }
  done(`native UDP addon built: ${targets.map((t) => `build/Release/${t}.node`).join(', ')}`);
}

main();
