/**
 * Network changes in the NAT lab (test/helpers/netns.ts), as a user meets them:
 *
 *   switchPublicIp  the NAT's public address changes (a new ISP lease, Wi-Fi to LTE):
 *                   the old WAN address is removed and a new one added. The kernel's
 *                   masquerade forgets every mapping it made with the removed address
 *                   (its address notifier deletes those conntrack entries), so this is
 *                   "new snat address, conntrack flushed" without the conntrack tool.
 *   rebindPort      the same public IP, new ports (a NAT that lost its state after
 *                   sleep): masquerade now maps into another port range, and removing
 *                   and re-adding the WAN address flushes the old mappings the same way.
 *
 * `forwardedFrom` counts, with an nft counter on the other NAT, the datagrams that
 * reached it from an address: a test waits for a count (a point in an exchange)
 * instead of sleeping.
 */
import { execFileSync } from 'node:child_process';
import { NAT_WAN, eventLine, jsonLines, type Cli, type JsonLineProcess, type NatLab, type Side } from './netns.js';

/** A's NAT's public address after switchPublicIp (on the same public segment). */
export const NAT_WAN_SWITCHED = { a: '10.200.0.21', b: '10.200.0.22' } as const;
/** The port range a rebound NAT maps into. */
export const REBOUND_PORTS = { first: 20000, last: 20999 } as const;

function sh(ns: string, args: string[], input?: string): string {
  try {
    return execFileSync('ip', ['netns', 'exec', ns, ...args], { input, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
  } catch (err) {
    const e = err as { stderr?: Buffer };
    throw new Error(`${args.join(' ')} in ${ns} failed: ${e.stderr?.toString().trim() ?? String(err)}`);
  }
}

const natOf = (lab: NatLab, side: Side): string => (side === 'a' ? lab.ns.natA : lab.ns.natB);

/** Replaces the NAT's WAN address `from` with `to` (prefix /24); its masqueraded mappings are gone with `from`. */
export function switchPublicIp(lab: NatLab, side: Side, from: string, to: string): void {
  const nat = natOf(lab, side);
  sh(nat, ['ip', 'addr', 'del', `${from}/24`, 'dev', 'wan']);
  sh(nat, ['ip', 'addr', 'add', `${to}/24`, 'dev', 'wan']);
}

/** The NAT keeps its public address `wan` but maps into REBOUND_PORTS from now on; its old mappings are flushed. */
export function rebindPort(lab: NatLab, side: Side, wan: string): void {
  const nat = natOf(lab, side);
  sh(nat, ['nft', 'flush', 'chain', 'ip', 'nat', 'postrouting']);
  sh(nat, ['nft', 'add', 'rule', 'ip', 'nat', 'postrouting', 'oifname', 'wan', 'meta', 'l4proto', 'udp', 'masquerade', 'to', `:${REBOUND_PORTS.first}-${REBOUND_PORTS.last}`]);
  sh(nat, ['nft', 'add', 'rule', 'ip', 'nat', 'postrouting', 'oifname', 'wan', 'masquerade']);
  switchPublicIp(lab, side, wan, wan);
}

/** Starts counting, on `side`'s NAT, the datagrams forwarded in from `source` (an IP). */
export function countForwardedFrom(lab: NatLab, side: Side, source: string): () => number {
  const nat = natOf(lab, side);
  const comment = `from-${source}`;
  sh(nat, ['nft', 'insert', 'rule', 'inet', 'filter', 'forward', 'iifname', 'wan', 'ip', 'saddr', source, 'udp', 'dport', '!=', '0', 'counter', 'comment', `"${comment}"`]);
  return () => {
    const out = sh(nat, ['nft', 'list', 'chain', 'inet', 'filter', 'forward']);
    const m = new RegExp(`ip saddr ${source.replace(/\./g, '\\.')} .*counter packets (\\d+) .*comment "${comment}"`).exec(out);
    return m === null ? 0 : Number(m[1]);
  };
}

/** Resolves once `count()` reaches `n` (polled; the deadline only bounds a failing run). */
export async function untilCount(count: () => number, n: number, what: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (count() < n) {
    if (Date.now() > deadline) throw new Error(`${what}: ${count()} of ${n} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface RoamRun { a: JsonLineProcess; b: JsonLineProcess; exits: { code: number | null }[]; shareIdA: string }

/**
 * One call through a network change: B runs `punch --exchange` and waits, A pushes to
 * it; `change` runs once `changeAfter` of A's datagrams reached B's NAT (a point in
 * the exchange, counted, not timed). Resolves once both exited. `countFrom`: the
 * source to count at B's NAT (A's public address before the change, by default;
 * the relay's, for a call through the relay).
 */
export async function roamingPair(lab: NatLab, cli: Cli, tracker: string, o: { exchangeS: number; changeAfter: number; countFrom?: string; extra?: string[];
  waitMs?: number; change: () => void }): Promise<RoamRun> {
  const waitMs = o.waitMs ?? 120_000;
  const punch = (ns: string, more: string[]) => jsonLines(lab.spawnIn(ns, process.execPath,
    [...cli.args, 'punch', '--tracker', tracker, '--exchange', String(o.exchangeS), ...(o.extra ?? []), ...more], { cwd: cli.cwd }));
  const fromA = countForwardedFrom(lab, 'b', o.countFrom ?? NAT_WAN.a);
  const b = punch(lab.ns.hostB, []);
  const announced = await b.waitFor(['announced'], waitMs);
  const a = punch(lab.ns.hostA, ['--peer', String(announced.shareId)]);
  await Promise.all([a.waitFor(['connected'], waitMs), b.waitFor(['connected'], waitMs)]).catch(async (err: Error) => {
    await Promise.all([a.exited, b.exited]);
    throw new Error(`${err.message}\nA: ${JSON.stringify(a.lines)} ${a.stderr()}\nB: ${JSON.stringify(b.lines)} ${b.stderr()}`);
  });
  await untilCount(fromA, o.changeAfter, 'A\'s datagrams at B\'s NAT', waitMs);
  o.change();
  const exits = await Promise.all([a.exited, b.exited]);
  return { a, b, exits, shareIdA: String(eventLine(a, 'announced')?.shareId) };
}
