// Builds test/helpers/fault-shim.c (an LD_PRELOAD shim that makes chosen libc calls
// fail) into a temporary directory, once per process.
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SOURCE = fileURLToPath(new URL('./fault-shim.c', import.meta.url));
let built: { file: string } | { unavailable: string } | undefined;

/** The shim's .so, or why it cannot be built here (then the tests that need it skip, saying so). */
export function faultShim(): { file: string } | { unavailable: string } {
  if (built !== undefined) return built;
  if (process.platform !== 'linux') return (built = { unavailable: 'the fault shim uses LD_PRELOAD on Linux' });
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'sobani-fault-shim-')), 'fault-shim.so');
  const r = spawnSync('cc', ['-shared', '-fPIC', '-O1', '-o', file, SOURCE, '-ldl'], { encoding: 'utf8' });
  if (r.error !== undefined || r.status !== 0) {
    return (built = { unavailable: `cannot build the LD_PRELOAD fault shim: ${r.error?.message ?? r.stderr.trim()}` });
  }
  return (built = { file });
}
