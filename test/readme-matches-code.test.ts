// The README is the user's manual: it must name every setting, flag, env var,
// default and error code the code has, and give the test command CI runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { OPTIONS, defaultConfig, envName, flagName } from '../src/config.js';
import { ERROR_CODES } from '../src/protocol/errors.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const ci = readFileSync(new URL('../.ci/run', import.meta.url), 'utf8');

function section(title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `README has a "${title}" section`);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

test('the configuration table has a row for every setting, with its flag, env var, default and doc', () => {
  const defaults = defaultConfig();
  const config = section('Configuration');
  for (const o of OPTIONS) {
    const row = config.split('\n').find((l) => l.startsWith(`| \`${o.key}\` |`));
    assert.ok(row, `no README row for ${o.key}`);
    assert.ok(row.includes(`\`--${flagName(o.key)}\``), `${o.key}: flag`);
    assert.ok(row.includes(`\`${envName(o.key)}\``), `${o.key}: env`);
    assert.ok(row.includes(o.doc), `${o.key}: doc text differs from config.ts`);
    if (o.defaultDoc !== undefined) assert.ok(row.includes(o.defaultDoc), `${o.key}: default`);
    else assert.ok(row.includes(`\`${JSON.stringify(defaults[o.key])}\``), `${o.key}: default`);
  }
});

test('every error code is documented', () => {
  for (const code of Object.keys(ERROR_CODES)) assert.ok(readme.includes(`| \`${code}\` |`), `${code} missing from the error table`);
});

test('.ci/run ends by running the README\'s test command', () => {
  assert.ok(/^yarn test\s+# the whole test suite/m.test(readme), 'README gives `yarn test`');
  assert.equal(ci.trim().split('\n').at(-1), 'yarn test');
});
