// A closed tracker gives its memory back, on both datagram I/O paths: many
// startTracker()/close() cycles, each in a fresh child process per path, and the
// RSS growth of the native path compared with dgram's. A path that keeps each
// closed socket alive grows by megabytes per cycle (its ~4 MiB of receive
// buffers, written by each cycle's burst); the margin is far above the noise of
// either path (a few MB) and far below that.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { ROOT } from './helpers/process.js';
import { TEST_IO } from './helpers/wire.js';

const CYCLES = 30; // the child's first 10 are warm-up; 8-16 s per path here, idle or loaded
const MARGIN = 40e6;
/** Only bounds a child that hangs: each cycle waits for a condition (every datagram answered or dropped), not a time. */
const CHILD_MS = 10 * 60_000;

function cycles(io: 'native' | 'dgram'): { cycles: number; rssGrowth: number } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--expose-gc', 'test/helpers/open-close-cycles.ts', io, String(CYCLES)],
    { cwd: ROOT, encoding: 'utf8', timeout: CHILD_MS });
  assert.equal(r.status, 0, `${io} child failed (${r.signal ?? r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { cycles: number; rssGrowth: number };
}

test('startTracker()/close() cycles: the native path keeps no more memory than dgram', { skip: TEST_IO === 'dgram' && 'SOBANI_IO=dgram: the native addon is not wanted' }, () => {
  const native = cycles('native');
  const dgram = cycles('dgram');
  const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;
  assert.ok(native.rssGrowth < Math.max(dgram.rssGrowth, 0) + MARGIN,
    `RSS grew ${mb(native.rssGrowth)} over ${native.cycles} native cycles, ${mb(dgram.rssGrowth)} over ${dgram.cycles} dgram cycles`);
});
