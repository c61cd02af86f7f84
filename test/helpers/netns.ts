/**
 * A small internet in Linux network namespaces, for hole-punching tests:
 *
 *   hostA (192.168.10.2) ── lan│natA│wan 10.200.0.11 ──┐
 *                                                       ├── br0 in "pub": tracker 10.200.0.1,
 *   hostB (192.168.20.2) ── lan│natB│wan 10.200.0.12 ──┘   and 10.200.0.2 (its second
 *                                                            address, for STUN NAT discovery)
 *
 * Each NAT router masquerades its LAN behind its WAN address and drops
 * unsolicited inbound traffic at its own input and forward hooks, as a home
 * router does. 'cone' NATs keep the source port (endpoint-independent
 * mapping); 'symmetric' ones (`masquerade random`) pick a new port per
 * destination. All addresses exist only inside these namespaces.
 *
 * Other layouts (LabLayout), for local candidates (issue 25):
 *   sameNat    hostA (10.0.1.2) and hostB (10.0.1.3) on one LAN bridge behind natA
 *              alone (wan 10.200.0.11); like Linux masquerade, it does not hairpin
 *   secondInterface  hostA also has 10.0.9.2 on a link to a namespace of its own,
 *              which hostB cannot reach
 *   carrier    natA (the home NAT, wan 100.64.0.2) sits behind a carrier NAT of this
 *              kind (lan 100.64.0.1, wan 10.200.0.11): hostA is behind two NATs
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams, SpawnOptionsWithoutStdio } from 'node:child_process';
import { createInterface } from 'node:readline';

export type NatKind = 'cone' | 'symmetric';

export const TRACKER_IP = '10.200.0.1';
/** The public namespace's second address: the tracker's (or coturn's) other IP for RFC 5780 discovery. */
export const TRACKER_OTHER_IP = '10.200.0.2';
export const NAT_WAN = { a: '10.200.0.11', b: '10.200.0.12' } as const;
export const HOST_LAN = { a: '192.168.10.2', b: '192.168.20.2' } as const;
/** The hosts' addresses in the sameNat layout, and hostA's unreachable second address (secondInterface). */
export const SAME_LAN = { a: '10.0.1.2', b: '10.0.1.3', gw: '10.0.1.1', aSecond: '10.0.9.2' } as const;

export interface LabLayout {
  sameNat?: boolean;
  secondInterface?: boolean;
  carrier?: NatKind;
}

/** Why namespaces with these tools (and root) cannot be had here, or undefined if they can. */
function namespacesMissing(tools: string[], packages: string): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root (run as root, e.g. in CI via .ci/run)';
  for (const tool of tools) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `\`${tool}\` is missing (apt-get install -y ${packages})`;
    }
  }
  return undefined;
}

/** Why namespaces cannot be used here, or undefined if they can. */
export function netnsUnavailableReason(): string | undefined {
  const missing = namespacesMissing(['ip', 'nft'], 'iproute2 nftables');
  if (missing !== undefined) return missing;
  const probe = `sbt-probe-${process.pid}`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'exec', probe, 'nft', 'list', 'ruleset'], { stdio: 'pipe' });
  } catch (err) {
    return `cannot create a network namespace with nftables here: ${String((err as { stderr?: unknown }).stderr ?? err).trim()}`;
  } finally {
    try {
      execFileSync('ip', ['netns', 'del', probe], { stdio: 'ignore' });
    } catch {
      // it was never created
    }
  }
  return undefined;
}

function run(cmd: string, args: string[], input?: string): void {
  try {
    execFileSync(cmd, args, { input, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: Buffer };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr?.toString().trim() ?? String(err)}`);
  }
}

function natRules(kind: NatKind): string {
  return `
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade${kind === 'symmetric' ? ' random' : ''}
  }
}
table inet filter {
  # Without the input rule an early probe from the other peer would create a
  # conntrack entry that clashes with our own outgoing mapping, the port would
  # change, and punching would fail for a reason no real router has.
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "wan" ct state established,related accept
    iifname "wan" drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "wan" ct state established,related accept
    iifname "wan" drop
  }
}
`;
}

let labCount = 0;

export interface NatLab {
  /** Namespace names. */
  ns: { pub: string; natA: string; natB: string; hostA: string; hostB: string };
  /** Spawns `cmd args` inside namespace `ns`, tracked so destroy() kills it. */
  spawnIn(ns: string, cmd: string, args: string[], opts?: SpawnOptionsWithoutStdio): ChildProcessWithoutNullStreams;
  /** Resolves once something listens on UDP `port` inside `ns` (a generous default deadline: it only bounds a failing start). */
  waitForUdpPort(ns: string, port: number, timeoutMs?: number): Promise<void>;
  /**
   * A firewall between the two NATs: each drops what its host sends to the other
   * NAT's address (the tracker and coturn stay reachable), so no punch gets through.
   */
  blockBetweenNats(): void;
  /** Kills what spawnIn started, deletes the namespaces. Safe to call twice, and after a half-built lab. */
  destroy(): Promise<void>;
}

export function createNatLab(nat: { a: NatKind; b: NatKind }, layout: LabLayout = {}): NatLab {
  const prefix = `sbt${process.pid}-${++labCount}`;
  const ns = {
    pub: `${prefix}-pub`,
    natA: `${prefix}-natA`,
    natB: layout.sameNat ? `${prefix}-natA` : `${prefix}-natB`,
    hostA: `${prefix}-hostA`,
    hostB: `${prefix}-hostB`,
  };
  const extra = { carrier: `${prefix}-cgnA`, island: `${prefix}-isoA` };
  const created: string[] = [];
  const children = new Set<ChildProcessWithoutNullStreams>();

  // If the test process dies without running after(), still remove what we made.
  const onExit = (): void => {
    for (const c of children) c.kill('SIGKILL');
    for (const name of created) {
      try {
        execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  };
  process.once('exit', onExit);

  const lab: NatLab = {
    ns,
    spawnIn(where, cmd, args, opts = {}) {
      const child = spawn('ip', ['netns', 'exec', where, cmd, ...args], { ...opts, stdio: 'pipe' });
      children.add(child);
      child.once('exit', () => children.delete(child));
      return child;
    },
    async waitForUdpPort(where, port, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const out = execFileSync('ip', ['netns', 'exec', where, 'ss', '-Huln', `sport = :${port}`]).toString();
        if (out.trim() !== '') return;
        if (Date.now() > deadline) throw new Error(`nothing listens on udp :${port} in ${where} after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    blockBetweenNats() {
      for (const [nat, other] of [[ns.natA, NAT_WAN.b], [ns.natB, NAT_WAN.a]] as const) {
        run('ip', ['netns', 'exec', nat, 'nft', 'add', 'rule', 'inet', 'filter', 'forward', 'oifname', 'wan', 'ip', 'daddr', other, 'drop']);
      }
    },
    async destroy() {
      process.off('exit', onExit);
      await Promise.all(
        [...children].map(
          (c) =>
            new Promise<void>((resolve) => {
              if (c.exitCode !== null || c.signalCode !== null) return resolve();
              c.once('exit', () => resolve());
              c.kill('SIGKILL');
            }),
        ),
      );
      for (const name of created.splice(0).reverse()) {
        try {
          execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
        } catch {
          // already gone
        }
      }
    },
  };

  try {
    const names = [...new Set(Object.values(ns))];
    if (layout.carrier !== undefined) names.push(extra.carrier);
    if (layout.secondInterface) names.push(extra.island);
    for (const name of names) {
      run('ip', ['netns', 'add', name]);
      created.push(name);
      run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    }
    run('ip', ['-n', ns.pub, 'link', 'add', 'br0', 'type', 'bridge']);
    run('ip', ['-n', ns.pub, 'addr', 'add', `${TRACKER_IP}/24`, 'dev', 'br0']);
    run('ip', ['-n', ns.pub, 'addr', 'add', `${TRACKER_OTHER_IP}/24`, 'dev', 'br0']);
    run('ip', ['-n', ns.pub, 'link', 'set', 'br0', 'up']);
    if (layout.sameNat || layout.carrier !== undefined) buildLayout(ns, extra, nat, layout);
    else buildPairOfNats(ns, nat);
    if (layout.secondInterface) {
      run('ip', ['-n', ns.hostA, 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', extra.island]);
      run('ip', ['-n', ns.hostA, 'addr', 'add', `${SAME_LAN.aSecond}/24`, 'dev', 'eth1']);
      run('ip', ['-n', extra.island, 'addr', 'add', '10.0.9.1/24', 'dev', 'eth0']);
      run('ip', ['-n', ns.hostA, 'link', 'set', 'eth1', 'up']);
      run('ip', ['-n', extra.island, 'link', 'set', 'eth0', 'up']);
    }
  } catch (err) {
    void lab.destroy();
    throw err;
  }
  return lab;
}

/** A veth from `ns` (named `name`) to `peerNs` (named `peerName`), each end with its address, both up. */
function link(ns: string, name: string, addr: string | null, peerNs: string, peerName: string, peerAddr: string | null): void {
  run('ip', ['-n', ns, 'link', 'add', name, 'type', 'veth', 'peer', 'name', peerName, 'netns', peerNs]);
  if (addr !== null) run('ip', ['-n', ns, 'addr', 'add', addr, 'dev', name]);
  if (peerAddr !== null) run('ip', ['-n', peerNs, 'addr', 'add', peerAddr, 'dev', peerName]);
  run('ip', ['-n', ns, 'link', 'set', name, 'up']);
  run('ip', ['-n', peerNs, 'link', 'set', peerName, 'up']);
}

function natRouter(nsName: string, kind: NatKind): void {
  run('ip', ['netns', 'exec', nsName, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  run('ip', ['netns', 'exec', nsName, 'nft', '-f', '-'], natRules(kind));
}

/** The sameNat and carrier layouts (see the top of this file). */
function buildLayout(ns: NatLab['ns'], extra: { carrier: string }, nat: { a: NatKind; b: NatKind }, layout: LabLayout): void {
  if (layout.sameNat) {
    link(ns.natA, 'wan', `${NAT_WAN.a}/24`, ns.pub, 'vA', null);
    run('ip', ['-n', ns.pub, 'link', 'set', 'vA', 'master', 'br0', 'up']);
    run('ip', ['-n', ns.natA, 'link', 'add', 'lan', 'type', 'bridge']);
    run('ip', ['-n', ns.natA, 'addr', 'add', `${SAME_LAN.gw}/24`, 'dev', 'lan']);
    run('ip', ['-n', ns.natA, 'link', 'set', 'lan', 'up']);
    for (const [host, ip, port] of [[ns.hostA, SAME_LAN.a, 'pA'], [ns.hostB, SAME_LAN.b, 'pB']] as const) {
      link(ns.natA, port, null, host, 'eth0', `${ip}/24`);
      run('ip', ['-n', ns.natA, 'link', 'set', port, 'master', 'lan', 'up']);
      run('ip', ['-n', host, 'route', 'add', 'default', 'via', SAME_LAN.gw]);
    }
    natRouter(ns.natA, nat.a);
    return;
  }
  // hostA -> natA (home) -> carrier -> pub; hostB -> natB -> pub, as in the pair of NATs
  link(extra.carrier, 'wan', `${NAT_WAN.a}/24`, ns.pub, 'vA', null);
  run('ip', ['-n', ns.pub, 'link', 'set', 'vA', 'master', 'br0', 'up']);
  link(extra.carrier, 'lan', '100.64.0.1/24', ns.natA, 'wan', '100.64.0.2/24');
  natRouter(extra.carrier, layout.carrier!);
  link(ns.natA, 'lan', '192.168.10.1/24', ns.hostA, 'eth0', `${HOST_LAN.a}/24`);
  run('ip', ['-n', ns.natA, 'route', 'add', 'default', 'via', '100.64.0.1']);
  run('ip', ['-n', ns.hostA, 'route', 'add', 'default', 'via', '192.168.10.1']);
  natRouter(ns.natA, nat.a);
  link(ns.natB, 'wan', `${NAT_WAN.b}/24`, ns.pub, 'vB', null);
  run('ip', ['-n', ns.pub, 'link', 'set', 'vB', 'master', 'br0', 'up']);
  link(ns.natB, 'lan', '192.168.20.1/24', ns.hostB, 'eth0', `${HOST_LAN.b}/24`);
  run('ip', ['-n', ns.hostB, 'route', 'add', 'default', 'via', '192.168.20.1']);
  natRouter(ns.natB, nat.b);
}

/** The default layout: each host behind its own NAT. */
function buildPairOfNats(ns: NatLab['ns'], nat: { a: NatKind; b: NatKind }): void {
  {
    const sides = [
      { nat: ns.natA, host: ns.hostA, port: 'vA', wan: NAT_WAN.a, lan: HOST_LAN.a, gw: '192.168.10.1', kind: nat.a },
      { nat: ns.natB, host: ns.hostB, port: 'vB', wan: NAT_WAN.b, lan: HOST_LAN.b, gw: '192.168.20.1', kind: nat.b },
    ];
    for (const s of sides) {
      run('ip', ['-n', s.nat, 'link', 'add', 'wan', 'type', 'veth', 'peer', 'name', s.port, 'netns', ns.pub]);
      run('ip', ['-n', ns.pub, 'link', 'set', s.port, 'master', 'br0', 'up']);
      run('ip', ['-n', s.nat, 'link', 'add', 'lan', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', s.host]);
      run('ip', ['-n', s.nat, 'addr', 'add', `${s.wan}/24`, 'dev', 'wan']);
      run('ip', ['-n', s.nat, 'addr', 'add', `${s.gw}/24`, 'dev', 'lan']);
      run('ip', ['-n', s.host, 'addr', 'add', `${s.lan}/24`, 'dev', 'eth0']);
      run('ip', ['-n', s.nat, 'link', 'set', 'wan', 'up']);
      run('ip', ['-n', s.nat, 'link', 'set', 'lan', 'up']);
      run('ip', ['-n', s.host, 'link', 'set', 'eth0', 'up']);
      run('ip', ['-n', s.host, 'route', 'add', 'default', 'via', s.gw]);
      run('ip', ['netns', 'exec', s.nat, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
      run('ip', ['netns', 'exec', s.nat, 'nft', '-f', '-'], natRules(s.kind));
    }
  }
}

/** A child's stdout as parsed JSON lines, plus its exit. */
export interface JsonLineProcess {
  lines: Record<string, unknown>[];
  /** Resolves with the first line whose `event` is one of `events`; rejects after timeoutMs, or once the output ended without one. */
  waitFor(events: string[], timeoutMs: number): Promise<Record<string, unknown>>;
  /** Once the child exited and its output was read to the end: every line is in `lines` by then. */
  exited: Promise<{ code: number | null; ms: number }>;
  stderr(): string;
}

export function jsonLines(child: ChildProcessWithoutNullStreams): JsonLineProcess {
  const started = performance.now();
  const lines: Record<string, unknown>[] = [];
  const waiters: { events: string[]; resolve: (l: Record<string, unknown>) => void }[] = [];
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  createInterface({ input: child.stdout }).on('line', (text) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      line = { event: 'non-json', text };
    }
    lines.push(line);
    for (const w of [...waiters]) {
      if (w.events.includes(String(line.event))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  // 'close', not 'exit': 'exit' may come before the last of stdout has been read
  const exited = new Promise<{ code: number | null; ms: number }>((resolve) =>
    child.once('close', (code) => resolve({ code, ms: performance.now() - started })),
  );
  return {
    lines,
    exited,
    stderr: () => err,
    waitFor(events, timeoutMs) {
      const seen = lines.find((l) => events.includes(String(l.event)));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no ${events.join('/')} line within ${timeoutMs} ms; got ${JSON.stringify(lines)}; stderr: ${err}`)),
          timeoutMs,
        );
        waiters.push({
          events,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
        void exited.then(() => {
          clearTimeout(timer);
          reject(new Error(`exited before a ${events.join('/')} line; got ${JSON.stringify(lines)}; stderr: ${err}`));
        });
      });
    },
  };
}

/** How to run the project's CLI: node's arguments before the command's own (tsx and the source, or the built dist/). */
export interface Cli { cwd: string; args: string[] }

/** Starts `sobani-tracker ...args` (or another command) in the public namespace; resolves once it listens on UDP `port`. */
export async function startInPub(lab: NatLab, cmd: string, args: string[], port: number, cwd?: string): Promise<void> {
  const child = lab.spawnIn(lab.ns.pub, cmd, args, cwd === undefined ? {} : { cwd });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout.resume();
  await Promise.race([
    lab.waitForUdpPort(lab.ns.pub, port),
    new Promise((_, reject) => child.once('exit', (code) => reject(new Error(`${cmd} exited (${code}): ${err}`)))),
  ]);
}

export type Side = 'a' | 'b';
export interface PairRun { announcer: JsonLineProcess; pusher: JsonLineProcess; exits: { code: number | null; ms: number }[] }

/**
 * One pair, as two users would: `announcer` runs `punch` and waits for a push, the
 * other side runs `punch --peer <its shareId>`, each through its tracker
 * (trackers[side], HOST:PORT). Resolves with both outputs once both exited.
 */
export async function punchPair(lab: NatLab, cli: Cli, announcer: Side, trackers: Record<Side, string>, extra: string[] = []): Promise<PairRun> {
  const pusher: Side = announcer === 'a' ? 'b' : 'a';
  const host = (s: Side) => (s === 'a' ? lab.ns.hostA : lab.ns.hostB);
  const punch = (s: Side, more: string[]) => jsonLines(lab.spawnIn(host(s), process.execPath,
    [...cli.args, 'punch', '--tracker', trackers[s], ...extra, ...more], { cwd: cli.cwd }));
  const waiting = punch(announcer, []);
  // a process start, NAT discovery and an announce: the deadline only bounds a failing run
  const announced = await waiting.waitFor(['announced'], 60_000);
  const pushing = punch(pusher, ['--peer', String(announced.shareId)]);
  const exits = await Promise.all([waiting.exited, pushing.exited]);
  return { announcer: waiting, pusher: pushing, exits };
}

/** The first line of a punch's output with this event. */
export function eventLine(p: JsonLineProcess, event: string): Record<string, unknown> | undefined {
  return p.lines.find((l) => l.event === event);
}

/**
 * A slow link, for send-pressure tests: two namespaces joined by a veth pair,
 *
 *   tx (SLOW_LINK.tx) ── veth, egress shaped by a tbf qdisc ── rx (SLOW_LINK.rx)
 *
 * The tbf's queue (limit) is far larger than a small socket send buffer, so a
 * burst fills the sender's buffer (sendmsg: EAGAIN) and the qdisc never drops.
 */
export const SLOW_LINK = { tx: '10.201.0.1', rx: '10.201.0.2' } as const;

export interface SlowLink {
  ns: { tx: string; rx: string };
  /** Deletes the namespaces. Safe to call twice. */
  destroy(): void;
}

/** Why a slow link cannot be built here, or undefined if it can. */
export function slowLinkUnavailableReason(): string | undefined {
  return namespacesMissing(['ip', 'tc'], 'iproute2');
}

export function createSlowLink(rate: string): SlowLink {
  const prefix = `sbt${process.pid}-${++labCount}`;
  const ns = { tx: `${prefix}-tx`, rx: `${prefix}-rx` };
  const created: string[] = [];
  const destroy = (): void => {
    for (const name of created.splice(0)) {
      try {
        execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  };
  process.once('exit', destroy);
  try {
    for (const name of [ns.tx, ns.rx]) {
      run('ip', ['netns', 'add', name]);
      created.push(name);
      run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    }
    run('ip', ['-n', ns.tx, 'link', 'add', 'tx0', 'type', 'veth', 'peer', 'name', 'rx0', 'netns', ns.rx]);
    run('ip', ['-n', ns.tx, 'addr', 'add', `${SLOW_LINK.tx}/24`, 'dev', 'tx0']);
    run('ip', ['-n', ns.rx, 'addr', 'add', `${SLOW_LINK.rx}/24`, 'dev', 'rx0']);
    run('ip', ['-n', ns.tx, 'link', 'set', 'tx0', 'up']);
    run('ip', ['-n', ns.rx, 'link', 'set', 'rx0', 'up']);
    run('tc', ['-n', ns.tx, 'qdisc', 'add', 'dev', 'tx0', 'root', 'tbf', 'rate', rate, 'burst', '16kb', 'limit', '32mb']);
  } catch (err) {
    destroy();
    throw err;
  }
  return { ns, destroy: () => { process.off('exit', destroy); destroy(); } };
}
