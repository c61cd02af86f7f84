// The orchestrator side of a server under test: fork it, learn its port, ask
// it for stats over IPC, and read its CPU time and RSS from /proc (all of its
// threads included) without disturbing its event loop.
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchReply, BenchServerStats } from './child-ipc.js';
import { loadNativeUdp } from '../src/io/native-io.js';

export type ServerKind =
  | { kind: 'echo' }
  | { kind: 'native-echo' }
  | { kind: 'naive' }
  | { kind: 'tracker'; io: 'native' | 'dgram'; shards: number | 'default'; ttl?: number; directory?: string; instanceId?: string };

/** The tracker's own choice (its `io` auto): native where the addon is built. */
export function trackerIo(): 'native' | 'dgram' {
  return loadNativeUdp() instanceof Error ? 'dgram' : 'native';
}

/** How the generator starts its clients: the echo servers know no announce. */
export function setupOf(kind: ServerKind): 'tracker' | 'none' {
  return kind.kind === 'echo' || kind.kind === 'native-echo' ? 'none' : 'tracker';
}

export interface Usage {
  cpuSeconds: number;
  rssBytes: number;
}

// '.ts' when run through tsx, '.js' from dist/: children use the same.
const EXT = extname(fileURLToPath(import.meta.url));
const CLK_TCK = 100; // Linux USER_HZ; /proc reports CPU time in these ticks

function entry(kind: ServerKind): { file: string; args: string[] } {
  const rel = (p: string) => fileURLToPath(new URL(p + EXT, import.meta.url));
  switch (kind.kind) {
    case 'echo':
      return { file: rel('./baselines/echo'), args: [] };
    case 'native-echo':
      return { file: rel('./baselines/native-echo'), args: [] };
    case 'naive':
      return { file: rel('./baselines/naive-tracker'), args: [] };
    case 'tracker': {
      const args = ['--io', kind.io, '--shards', String(kind.shards)];
      if (kind.ttl !== undefined) args.push('--ttl', String(kind.ttl));
      if (kind.directory !== undefined) args.push('--directory', kind.directory, '--instance-id', kind.instanceId ?? 'bench');
      return { file: rel('./tracker-server'), args };
    }
  }
}

export function serverName(kind: ServerKind): string {
  switch (kind.kind) {
    case 'echo': return 'Node dgram echo';
    case 'native-echo': return 'native echo (C, recvmmsg/sendmmsg)';
    case 'naive': return 'naive Node tracker';
    case 'tracker': return `tracker, ${kind.io}, ${kind.shards === 'default' ? 'default shards' : `${kind.shards} shard${kind.shards === 1 ? '' : 's'}`}`;
  }
}

export class ServerHandle {
  private nextId = 1;
  private pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private exited: Promise<void>;

  private constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly port: number,
  ) {
    child.on('message', (raw) => {
      const reply = raw as BenchReply;
      const waiter = this.pending.get(reply.id);
      if (!waiter) return;
      this.pending.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.value);
      else waiter.reject(new Error(`${name}: ${reply.error}`));
    });
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.once('exit', (code, signal) => {
      for (const w of this.pending.values()) w.reject(new Error(`${name} exited (${code ?? signal})`));
      this.pending.clear();
    });
  }

  static start(kind: ServerKind, timeoutMs = 30_000): Promise<ServerHandle> {
    const { file, args } = entry(kind);
    const name = serverName(kind);
    const child = fork(file, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`${name} did not start within ${timeoutMs} ms`)), timeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(err);
      };
      child.once('exit', (code, signal) => fail(new Error(`${name} exited during start-up (${code ?? signal})`)));
      child.once('message', (msg) => {
        const m = msg as { ready?: boolean; port?: number };
        if (!m.ready || typeof m.port !== 'number') return fail(new Error(`${name}: unexpected first message`));
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve(new ServerHandle(name, child, m.port));
      });
    });
  }

  private request(msg: object, timeoutMs = 120_000): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.name}: no answer to ${JSON.stringify(msg)} in ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.child.send({ ...msg, id });
    });
  }

  stats(resetLoopDelay = false): Promise<BenchServerStats> {
    return this.request({ op: 'stats', resetLoopDelay }) as Promise<BenchServerStats>;
  }

  async fill(peers: number): Promise<void> {
    await this.request({ op: 'fill', peers }, 600_000);
  }

  /** CPU seconds (all threads) and RSS. /proc when there is one, IPC otherwise. */
  async usage(): Promise<Usage> {
    const pid = this.child.pid;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // Fields after the ")" that closes the command name; utime and stime are fields 14 and 15.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
      const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (!rss) throw new Error('no VmRSS');
      return { cpuSeconds, rssBytes: Number(rss[1]) * 1024 };
    } catch {
      return (await this.request({ op: 'usage' })) as Usage;
    }
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const killer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    try {
      await this.request({ op: 'close' }, 10_000);
    } catch {
      this.child.kill('SIGKILL');
    }
    await this.exited;
    clearTimeout(killer);
  }
}
