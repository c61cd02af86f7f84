// The manual cannot drift from the code: every relative link and #anchor in
// README.md, CONTRIBUTING.md and docs/*.md resolves (GitHub's heading slugs),
// every flag the CLI's --help prints is documented, the configuration table has a
// row for every setting (and none for a setting that is gone), the error table is
// ERROR_CODES, and the README's test command is the one CI runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { OPTIONS, defaultConfig, envName, flagName } from '../src/config.js';
import { ERROR_CODES } from '../src/protocol/errors.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DOCS = ['README.md', 'CONTRIBUTING.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];
const read = (file: string) => readFileSync(join(ROOT, file), 'utf8');

/** The text outside fenced code blocks, line by line (a link in a code block is not a link). */
function prose(md: string): string[] {
  let fence: string | null = null;
  const out: string[] = [];
  for (const line of md.split('\n')) {
    const m = /^\s*(```+|~~~+)/.exec(line);
    if (m) {
      if (fence === null) fence = m[1]!;
      else if (m[1]!.startsWith(fence)) fence = null;
      out.push('');
      continue;
    }
    out.push(fence === null ? line : '');
  }
  return out;
}

/** GitHub's anchor for a heading: rendered text, lower case, punctuation but - and _ dropped, spaces to -. */
function slug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // links and images: their text
    .replace(/`([^`]*)`/g, '$1') // code spans: their content
    .replace(/<[^>]+>/g, '') // inline HTML
    .replace(/(\*\*|__|\*|_)(?=\S)([^]*?\S)\1/g, '$2'); // emphasis
  return text.trim().toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '').replace(/ /g, '-');
}

/** Every anchor a markdown file has: its headings' slugs (the second of a name gets -1, and so on). */
function anchors(md: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const line of prose(md)) {
    const h = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!h) continue;
    const base = slug(h[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  for (const m of md.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) out.add(m[1]!);
  return out;
}

/** Every markdown link target outside code: [text](target) and [text]: target. */
function links(md: string): { line: number; target: string }[] {
  const out: { line: number; target: string }[] = [];
  prose(md).forEach((raw, i) => {
    const line = raw.replace(/`[^`]*`/g, '``');
    for (const m of line.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) out.push({ line: i + 1, target: m[1]! });
    const ref = /^\s*\[[^\]]+\]:\s*(\S+)/.exec(line);
    if (ref) out.push({ line: i + 1, target: ref[1]! });
  });
  return out;
}

function section(file: string, title: string): string {
  const md = read(file);
  const start = md.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `${file} has a "## ${title}" section`);
  const end = md.indexOf('\n## ', start + 1);
  return md.slice(start, end < 0 ? undefined : end);
}

test('every relative link and #anchor in README.md, CONTRIBUTING.md and docs/ resolves', () => {
  const broken: string[] = [];
  let checked = 0;
  for (const file of DOCS) {
    assert.ok(existsSync(join(ROOT, file)), `${file} exists`);
    for (const { line, target } of links(read(file))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto: ...
      checked++;
      const hash = target.indexOf('#');
      const path = hash < 0 ? target : target.slice(0, hash);
      const anchor = hash < 0 ? '' : decodeURIComponent(target.slice(hash + 1));
      const to = path === '' ? join(ROOT, file) : resolve(join(ROOT, dirname(file)), decodeURIComponent(path));
      const where = `${file}:${line}: ${target}`;
      if (!to.startsWith(ROOT + '/') && to !== ROOT) { broken.push(`${where} (outside the repository)`); continue; }
      if (!existsSync(to)) { broken.push(`${where} (no such file: ${relative(ROOT, to)})`); continue; }
      if (anchor === '') continue;
      if (statSync(to).isDirectory() || !to.endsWith('.md')) { broken.push(`${where} (an anchor into a file that is not markdown)`); continue; }
      if (!anchors(readFileSync(to, 'utf8')).has(anchor)) broken.push(`${where} (no heading "#${anchor}" in ${relative(ROOT, to)})`);
    }
  }
  assert.deepEqual(broken, [], 'broken links');
  assert.ok(checked > 20, `links were found (${checked})`);
});

test('the slug rules are GitHub\'s', () => {
  assert.equal(slug('No amplification: replies within 3 × the wire bytes'), 'no-amplification-replies-within-3--the-wire-bytes');
  assert.equal(slug('The NAT type: `nat` and `peerVerified`'), 'the-nat-type-nat-and-peerverified');
  assert.equal(slug('Datagram I/O: the native path and the dgram fallback'), 'datagram-io-the-native-path-and-the-dgram-fallback');
  assert.equal(slug('snake_case and [a link](x.md)'), 'snake_case-and-a-link');
  assert.deepEqual([...anchors('# A\n## A\n```\n# not a heading\n```\n## A\n')], ['a', 'a-1', 'a-2']);
});

test('every flag the CLI\'s --help prints (tracker, client commands, health) is documented', () => {
  const cli = (...args: string[]) => execFileSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: ROOT, encoding: 'utf8' });
  const help = [cli('--help'), cli('punch', '--help'), cli('health', '--help')];
  const flags = new Set<string>();
  for (const text of help) for (const m of text.matchAll(/(?<![\w-])--[a-z][a-z0-9-]*/g)) flags.add(m[0]);
  assert.ok(flags.has('--port') && flags.has('--peer') && flags.has('--metrics-port'), `--help was read (${[...flags].join(' ')})`);
  const docs = DOCS.map(read).join('\n');
  const missing = [...flags].filter((flag) => !new RegExp(`${flag}(?![a-z0-9-])`).test(docs));
  assert.deepEqual(missing, [], 'flags --help prints that no doc names');
});

test('the configuration table (docs/operations.md) has a row for every setting, with its flag, env var, default and doc', () => {
  const defaults = defaultConfig();
  const rows = section('docs/operations.md', 'Configuration').split('\n').filter((l) => /^\| `[a-zA-Z][a-zA-Z0-9]*` \|/.test(l));
  for (const o of OPTIONS) {
    const row = rows.find((l) => l.startsWith(`| \`${o.key}\` |`));
    assert.ok(row, `no row for ${o.key}`);
    assert.ok(row.includes(`\`--${flagName(o.key)}\``), `${o.key}: flag`);
    assert.ok(row.includes(`\`${envName(o.key)}\``), `${o.key}: env`);
    assert.ok(row.includes(o.doc), `${o.key}: doc text differs from config.ts`);
    if (o.defaultDoc !== undefined) assert.ok(row.includes(o.defaultDoc), `${o.key}: default`);
    else assert.ok(row.includes(`\`${JSON.stringify(defaults[o.key])}\``), `${o.key}: default`);
  }
  const keys = new Set(OPTIONS.map((o) => o.key as string));
  assert.deepEqual(rows.map((l) => /^\| `([a-zA-Z][a-zA-Z0-9]*)` \|/.exec(l)![1]!).filter((k) => !keys.has(k)), [], 'rows for settings config.ts does not have');
});

test('the error table (docs/protocol.md) is ERROR_CODES: every code, and no other', () => {
  const rows = section('docs/protocol.md', 'Errors').split('\n').map((l) => /^\| `([A-Z_]+)` \|/.exec(l)?.[1]).filter((c) => c !== undefined);
  assert.deepEqual([...rows].sort(), Object.keys(ERROR_CODES).sort());
});

test('the README gives the test command CI runs, and stays a front door', () => {
  const readme = read('README.md');
  assert.ok(/^yarn test\s+# the whole test suite/m.test(readme), 'README gives `yarn test`');
  assert.equal(read('.ci/run').trim().split('\n').at(-1), 'yarn test');
  assert.ok(readme.split('\n').length <= 250, `README.md is ${readme.split('\n').length} lines (at most 250: the rest belongs in docs/)`);
});
