// One IPv6 /64 is one client for the per-IP limits, however many shards there are
// (src/routing.ts routes IPv6 by its /64): real UDP from many addresses of one /64,
// in a network namespace whose loopback answers for two whole /64s (a local route,
// and nonlocal binds), to a real tracker with 4 shards running in that namespace.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { CLI, runTracker, type Running } from './helpers/process.js';
import { netnsUnavailableReason } from './helpers/netns.js';
import { PADDED_ANNOUNCE } from './helpers/wire.js';

const skip = netnsUnavailableReason() ?? false;
const NS = `sbt-v64-${process.pid}`;
const PREFIX_A = '2001:db8:64:a', PREFIX_B = '2001:db8:64:b';
const CAP = 3;

/** Announces from each address in turn (its own socket, inside the namespace) and returns each first reply's action or error code. */
function announceFrom(addresses: string[], port: number): string[] {
  const script = `
    const dgram = require('node:dgram');
    const [port, msg, ...addrs] = process.argv.slice(1);
    (async () => {
      for (const a of addrs) {
        const s = dgram.createSocket('udp6');
        await new Promise((r) => s.bind(0, a, r));
        const got = await new Promise((resolve) => {
          const t = setTimeout(() => resolve('none'), 10000);
          s.on('message', (m) => { clearTimeout(t); const j = JSON.parse(m.toString()); resolve(j.action === 'error' ? j.data.code : j.action); });
          s.send(msg, Number(port), '::1');
        });
        console.log(got);
        s.close();
      }
    })();`;
  const r = spawnSync('ip', ['netns', 'exec', NS, process.execPath, '-e', script, String(port), PADDED_ANNOUNCE, ...addresses], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split('\n');
}

describe('an IPv6 /64 counts as one client across shards', { skip }, () => {
  let tracker: Running;
  before(async () => {
    execFileSync('ip', ['netns', 'add', NS]);
    const inNs = (...args: string[]) => execFileSync('ip', ['netns', 'exec', NS, ...args], { stdio: 'pipe' });
    inNs('ip', 'link', 'set', 'lo', 'up');
    inNs('sysctl', '-qw', 'net.ipv6.ip_nonlocal_bind=1');
    for (const p of [PREFIX_A, PREFIX_B]) inNs('ip', '-6', 'route', 'add', 'local', `${p}::/64`, 'dev', 'lo');
    tracker = await runTracker(['--host', '::1', '--port', '0', '--shards', '4', '--max-sessions-per-ipv6-prefix', String(CAP)], {}, undefined,
      ['ip', 'netns', 'exec', NS, process.execPath, ...CLI]);
  });
  after(async () => {
    if (tracker !== undefined) { tracker.child.kill('SIGTERM'); await tracker.exited; }
    try { execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' }); } catch { /* never created */ }
  });

  test(`${CAP + 5} addresses of one /64 get ${CAP} sessions in all; another /64 is not affected`, () => {
    const one = Array.from({ length: CAP + 5 }, (_, i) => `${PREFIX_A}::${(i + 1).toString(16)}`);
    const got = announceFrom(one, tracker.port);
    assert.deepEqual(got, [...Array<string>(CAP).fill('announceReceived'), ...Array<string>(5).fill('SESSION_LIMIT')], got.join(' '));
    assert.deepEqual(announceFrom([`${PREFIX_B}::1`], tracker.port), ['announceReceived']);
  });
});
