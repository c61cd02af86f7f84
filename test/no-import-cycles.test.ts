// No module of src/ or bench/ imports itself through others (type-only imports
// included): a circle means two files share a concern that belongs in a third,
// as TrackerStats does in src/ops/stats.ts for tracker.ts and ops/metrics.ts, and
// the bench's result types in bench/results.ts for report.ts and what it renders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (name === 'node_modules' || name === 'build' || name === 'results') continue;
    if (statSync(p).isDirectory()) sources(p, out);
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Relative imports and re-exports of a file, resolved to .ts paths. */
function imports(file: string, known: ReadonlySet<string>): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s+(?:type\s+)?(?:[^'";]*?\sfrom\s+)?['"](\.{1,2}\/[^'"]+)['"]/gm)) {
    const to = resolve(dirname(file), m[1]!).replace(/\.js$/, '.ts');
    if (known.has(to)) out.push(to);
  }
  return out;
}

/** Strongly connected components of more than one file (Tarjan), and files that import themselves. */
function circles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    index.set(v, next); low.set(v, next); next++;
    stack.push(v); onStack.add(v);
    for (const w of graph.get(v)!) {
      if (!index.has(w)) { visit(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); }
      else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do { w = stack.pop()!; onStack.delete(w); scc.push(w); } while (w !== v);
      if (scc.length > 1 || graph.get(v)!.includes(v)) found.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

test('no import circles in src/ and bench/ (bench/report.ts and what it renders, ops/metrics.ts and tracker.ts included)', () => {
  const files = [...sources(join(ROOT, 'src')), ...sources(join(ROOT, 'bench'))];
  const known = new Set(files);
  const graph = new Map(files.map((f) => [f, imports(f, known)]));
  assert.ok(graph.get(join(ROOT, 'bench/run.ts'))!.includes(join(ROOT, 'bench/report.ts')), 'imports were read');
  assert.deepEqual(circles(graph).map((c) => c.map((f) => relative(ROOT, f))), []);
});

test('the circle finder finds a circle', () => {
  const g = new Map([['a', ['b']], ['b', ['c']], ['c', ['a']], ['d', ['a']], ['e', ['e']]]);
  assert.deepEqual(circles(g), [['a', 'b', 'c'], ['e']]);
});
