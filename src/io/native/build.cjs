// Builds the native addons. Three ways to run it:
//
//   node src/io/native/build.cjs             compile from source (what a developer means)
//     build/Release/sobani_udp.node                    the tracker's batched UDP socket (../../../binding.gyp)
//     bench/native/build/Release/sobani_bench.node     the bench's echo server and load generator
//                                                      (bench/native/binding.gyp; a dev checkout only)
//   node src/io/native/build.cjs --install   package.json's "install" script (yarn 1 and npm run it):
//     nothing to compile when a prebuild in prebuilds/ loads (the npm package ships one);
//     else compile from source, as above
//   node src/io/native/build.cjs --prebuild  package.json's "prepack": prebuildify makes
//     prebuilds/<platform>-<arch>/sobani_udp.<libc>.node for `npm pack` to ship
//
// Compiling never fails the install: when an addon cannot be built (no compiler, no
// python, not Linux, no Node headers offline...), it prints one warning line to stderr
// and exits 0, and the tracker uses Node's dgram. node-gyp's full output goes to
// build/native-build.log (bench/native/build/native-build.log for the bench's).
// --prebuild does fail (exit 1): a package packed without its prebuild would serve on
// dgram only for everyone who installs it without a compiler.
//
// node-gyp is taken from, in order: the project's own node_modules (if someone adds it
// as a dependency), npm's $npm_config_node_gyp, the copy bundled with the npm that
// ships with this Node, or `node-gyp` on PATH. Headers: npm's configured nodedir
// ($npm_config_nodedir; yarn 1 passes .npmrc settings the same way), else the headers
// installed next to this Node binary (<prefix>/include/node), else node-gyp's own
// download.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..', '..');
const rel = (p) => path.relative(root, p);

/** The source trees node-gyp builds, each with its own binding.gyp and build/. */
const UDP = { name: 'native UDP addon', dir: root, target: 'sobani_udp', api: 'UdpSocket' };
const BENCH = { name: 'benchmark addon', dir: path.join(root, 'bench', 'native'), target: 'sobani_bench', api: 'runLoad' };
/** Prebuilds are named for what they hold, not for the package (one addon per package root). */
const PREBUILD_NAME = 'sobani_udp';

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

/** Why `file` is not the addon `addon` (null: it loads and has its API). */
function loadError(addon, file) {
  try {
    const m = require(file);
    return typeof m[addon.api] === 'function' ? null : `${rel(file)} loads but has no ${addon.api}: it is not ${addon.target}`;
  } catch (e) {
    return `${rel(file)} does not load: ${String(e.message).split('\n')[0]}`;
  }
}

/** `node-gyp rebuild` in addon.dir; null on success, else why not (its log is in addon.dir/build/). */
function compile(addon) {
  if (process.platform !== 'linux') return `recvmmsg/sendmmsg need Linux, this is ${process.platform}`;
  if (!isFile(path.join(addon.dir, 'binding.gyp'))) return `${rel(path.join(addon.dir, 'binding.gyp'))} is missing`;
  const gyp = findNodeGyp();
  if (gyp === null) return 'node-gyp not found: neither in node_modules, nor bundled with npm, nor on PATH';
  const nodedir = findNodeDir();
  const args = [...gyp.slice(1), 'rebuild', '--release'];
  if (nodedir !== null) args.push(`--nodedir=${nodedir}`);

  const run = spawnSync(gyp[0], args, {
    cwd: addon.dir,
    env: process.env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 5 * 60 * 1000,
    maxBuffer: 64 * 1024 * 1024,
  });
  const output = `$ cd ${addon.dir} && ${[gyp[0], ...args].join(' ')}\n${run.stdout ?? ''}${run.stderr ?? ''}${run.error ? `\n${run.error.stack}\n` : ''}`;
  const buildDir = path.join(addon.dir, 'build');
  const log = rel(path.join(buildDir, 'native-build.log'));
  try {
    fs.mkdirSync(buildDir, { recursive: true });
    fs.writeFileSync(path.join(root, log), output);
  } catch {
    // the log is a convenience
  }
  if (run.error) return `could not run node-gyp: ${run.error.message}; see ${log}`;
  if (run.status !== 0) return `${firstError(output, run.status ?? run.signal)}; see ${log}`;
  const file = path.join(buildDir, 'Release', `${addon.target}.node`);
  if (!isFile(file)) return `node-gyp succeeded but ${rel(file)} is missing; see ${log}`;
  return loadError(addon, file);
}

/** node-gyp-build as the tracker uses it at run time, but blind to build/: only prebuilds/ count. */
function prebuildLoader() {
  // read by node-gyp-build when it is first required
  process.env.PREBUILDS_ONLY = '1';
  try {
    return require(require.resolve('node-gyp-build', { paths: [root] }));
  } catch {
    return null; // a checkout that has not installed its dependencies
  }
}

/** The prebuild in prebuilds/ for this platform, if one loads: { file } or { reason }. */
function loadablePrebuild() {
  const load = prebuildLoader();
  if (load === null) return { reason: 'node-gyp-build is not installed' };
  let file;
  try {
    file = load.path(root);
  } catch {
    return { reason: `no prebuild for ${process.platform}-${process.arch}` };
  }
  const reason = loadError(UDP, file);
  return reason === null ? { file } : { reason };
}

/** Compiles the tracker's addon and, in a dev checkout, the bench's; warns about each that fails. */
function fromSource(skipUdp) {
  const built = [];
  for (const addon of skipUdp ? [BENCH] : [UDP, BENCH]) {
    if (addon === BENCH && !isFile(path.join(BENCH.dir, 'binding.gyp'))) continue; // not in the package
    if (addon === UDP && process.env.SOBANI_IO === 'dgram') {
      process.stdout.write('sobani-tracker: SOBANI_IO=dgram, native UDP addon not built\n');
      continue;
    }
    const reason = compile(addon);
    if (reason === null) built.push(rel(path.join(addon.dir, 'build', 'Release', `${addon.target}.node`)));
    else if (addon === UDP) process.stderr.write(`warning: sobani-tracker: native UDP addon not built (${reason}); the tracker will use Node dgram\n`);
    else process.stderr.write(`warning: sobani-tracker: benchmark addon not built (${reason}); yarn bench will use the Node load generator\n`);
  }
  if (built.length > 0) process.stdout.write(`sobani-tracker: built ${built.join(', ')}\n`);
}

function install() {
  const prebuild = loadablePrebuild();
  if (prebuild.file !== undefined) {
    process.stdout.write(`sobani-tracker: native UDP addon ${rel(prebuild.file)} loads, nothing to compile\n`);
  }
  fromSource(prebuild.file !== undefined);
}

/** prebuildify, in a copy of the addon's sources so that a dev checkout's build/ stays as it is. */
function prebuild() {
  const fail = (message) => {
    process.stderr.write(`error: sobani-tracker: no prebuild made: ${message}\n`);
    process.exit(1);
  };
  if (process.platform !== 'linux') fail(`the addon needs Linux (recvmmsg/sendmmsg), this is ${process.platform}`);
  let prebuildify;
  try {
    prebuildify = require(require.resolve('prebuildify', { paths: [root] }));
  } catch {
    fail('prebuildify is not installed (a devDependency: run `yarn install` first)');
  }
  const gyp = findNodeGyp();
  if (gyp === null) fail('node-gyp not found: neither in node_modules, nor bundled with npm, nor on PATH');
  const nodedir = findNodeDir();
  // prebuildify runs node-gyp with the environment it is given: the local headers, and a `node` for node-gyp.js's shebang
  if (nodedir !== null) process.env.npm_config_nodedir = nodedir;
  process.env.PATH = `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}`;

  const out = path.join(root, 'prebuilds');
  fs.rmSync(out, { recursive: true, force: true }); // nothing stale gets packed
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'sobani-prebuild-'));
  fs.copyFileSync(path.join(root, 'binding.gyp'), path.join(stage, 'binding.gyp'));
  fs.cpSync(path.join(root, 'src', 'io', 'native'), path.join(stage, 'src', 'io', 'native'), { recursive: true });

  prebuildify(
    {
      cwd: stage,
      out: root,
      name: PREBUILD_NAME,
      // Node-API (NAPI_VERSION 8): one build serves every Node version, so build for this one, with its own headers
      napi: true,
      targets: [{ runtime: 'node', target: process.versions.node }],
      tagLibc: true,
      strip: true,
      quiet: true,
      nodeGyp: gyp[gyp.length - 1],
    },
    (err) => {
      if (err) {
        // prebuildify's node-gyp was quiet: build the copy again to say why, with a log
        // (build/prebuild.log, beside a dev checkout's own build/native-build.log)
        const reason = compile({ ...UDP, dir: stage }) ?? err.message;
        try {
          fs.mkdirSync(path.join(root, 'build'), { recursive: true });
          fs.copyFileSync(path.join(stage, 'build', 'native-build.log'), path.join(root, 'build', 'prebuild.log'));
        } catch {
          // no log
        }
        fs.rmSync(stage, { recursive: true, force: true });
        fs.rmSync(out, { recursive: true, force: true });
        fail(reason.replace(/see .*native-build\.log$/, 'see build/prebuild.log'));
      }
      fs.rmSync(stage, { recursive: true, force: true });
      const made = loadablePrebuild();
      if (made.file === undefined) fail(made.reason);
      // stderr: `npm pack --json` prints its JSON on the stdout that prepack scripts share
      process.stderr.write(`sobani-tracker: prebuilt ${rel(made.file)}\n`);
    },
  );
}

const mode = process.argv[2];
if (mode === '--prebuild') prebuild();
else if (mode === '--install') install();
else if (mode === undefined) fromSource(false);
else {
  process.stderr.write(`usage: node src/io/native/build.cjs [--install | --prebuild] (got ${mode})\n`);
  process.exit(2);
}
