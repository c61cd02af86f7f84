// Several instances (issue 12): two trackers on one redis-server, side by side.
//   - push latency: a requester pushes to a session on its own instance (local) and
//     to one on the other instance (through the directory), from the push until the
//     pushReceived, one push in flight per pair;
//   - Redis load: commands per second per 1 k live sessions while the sessions live
//     (their pointers' refreshes, and each instance's health check).
// Needs redis-server on the PATH (`apt-get install redis-server`); skipped without.
import dgram from 'node:dgram';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { Histogram } from './histogram.js';
import { loopbackIp, PADDED_ANNOUNCE, proofPulse, shareIdOf } from './loadgen/types.js';
import { ServerHandle, trackerIo } from './servers.js';

export interface DirectoryResult {
  pushes: number;
  local: { p50: number; p99: number };
  remote: { p50: number; p99: number };
  /** Sessions the Redis load was measured with, over this many seconds. */
  sessions: number;
  seconds: number;
  commandsPerSecond: number;
  /** by command (set, ping, ...) per second */
  byCommand: Record<string, number>;
  perThousandSessions: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export function redisServerMissing(): string | null {
  return spawnSync('redis-server', ['--version']).status === 0 ? null : 'redis-server is not installed';
}

async function startRedis(): Promise<{ port: number; child: ChildProcess; cli: (...a: string[]) => string }> {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], { stdio: 'ignore' });
  const cli = (...a: string[]) => spawnSync('redis-cli', ['-p', String(port), ...a], { encoding: 'utf8' }).stdout ?? '';
  for (let i = 0; i < 100 && cli('ping').trim() !== 'PONG'; i++) await sleep(50);
  return { port, child, cli };
}

/** A client socket on its own loopback IP that announces, proves, and can push. */
class Client {
  private waiter: ((m: Buffer) => void) | null = null;
  private constructor(readonly socket: dgram.Socket, readonly port: number) {
    socket.on('message', (m) => this.waiter?.(m));
  }

  static async open(ip: string, port: number): Promise<Client> {
    const s = dgram.createSocket('udp4');
    s.on('error', () => {});
    await new Promise<void>((r) => s.bind(0, ip, r));
    return new Client(s, port);
  }

  /** Sends until a reply containing `marker` arrives (3 tries, 500 ms each). */
  async ask(data: string, marker: string): Promise<Buffer> {
    for (let i = 0; i < 3; i++) {
      const got = new Promise<Buffer | null>((resolve) => {
        const t = setTimeout(() => resolve(null), 500);
        this.waiter = (m) => { if (m.includes(marker)) { clearTimeout(t); resolve(m); } };
      });
      this.socket.send(data, this.port, '127.0.0.1');
      const m = await got;
      if (m) return m;
    }
    throw new Error(`no ${marker} for ${data}`);
  }

  async session(): Promise<string> {
    const id = shareIdOf(await this.ask(PADDED_ANNOUNCE, '"shareId"'))!;
    await this.ask(proofPulse(id), 'pulseReceived');
    return id;
  }

  close(): void { this.socket.close(); }
}

export async function runDirectory(sessions: number, onStep: (what: string) => void): Promise<DirectoryResult> {
  const redis = await startRedis();
  const url = `redis://127.0.0.1:${redis.port}`;
  const io = trackerIo();
  const one = await ServerHandle.start({ kind: 'tracker', io, shards: 'default', directory: url, instanceId: 'one' });
  const two = await ServerHandle.start({ kind: 'tracker', io, shards: 'default', directory: url, instanceId: 'two' });
  const clients: Client[] = [];
  try {
    onStep('several instances: push latency, local and across instances');
    const pairs = 8;
    const local = new Histogram(), remote = new Histogram();
    let ip = 0;
    const open = async (server: ServerHandle) => { const c = await Client.open(loopbackIp(ip++, 3), server.port); clients.push(c); return c; };
    const runs = await Promise.all(Array.from({ length: pairs }, async () => {
      const requester = await open(one), near = await open(one), far = await open(two);
      await requester.session();
      return { requester, nearId: await near.session(), farId: await far.session() };
    }));
    await sleep(300); // the pointers of the sessions just made
    const perPair = 100;
    await Promise.all(runs.map(async ({ requester, nearId, farId }) => {
      for (let i = 0; i < perPair; i++) {
        for (const [id, h] of [[nearId, local], [farId, remote]] as const) {
          const t0 = process.hrtime.bigint();
          await requester.ask(`{"action":"push","shareId":"${id}"}`, 'pushReceived');
          h.record(Number(process.hrtime.bigint() - t0));
        }
      }
    }));
    const ms = (h: Histogram, p: number) => h.percentile(p) / 1e6;

    onStep(`several instances: Redis commands with ${sessions.toLocaleString('en')} live sessions`);
    await Promise.all([one.fill(sessions / 2), two.fill(sessions / 2)]);
    await sleep(1000);
    redis.cli('config', 'resetstat');
    const seconds = 10;
    await sleep(seconds * 1000);
    const byCommand: Record<string, number> = {};
    let total = 0;
    for (const m of redis.cli('info', 'commandstats').matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)) {
      if (m[1] === 'info' || m[1] === 'config') continue; // this bench's own
      byCommand[m[1]!] = Number(m[2]) / seconds;
      total += Number(m[2]);
    }
    const commandsPerSecond = total / seconds;
    return {
      pushes: pairs * perPair,
      local: { p50: ms(local, 50), p99: ms(local, 99) },
      remote: { p50: ms(remote, 50), p99: ms(remote, 99) },
      sessions,
      seconds,
      commandsPerSecond,
      byCommand,
      perThousandSessions: commandsPerSecond / (sessions / 1000),
    };
  } finally {
    for (const c of clients) c.close();
    await Promise.all([one.close(), two.close()]);
    redis.child.kill('SIGKILL');
  }
}

export function renderDirectory(d: DirectoryResult): string {
  const f = (n: number) => n.toFixed(3);
  return [
    `Several instances: two trackers (default shards) on one redis-server. Push latency: 8 requesters on instance one, each pushing ${d.pushes / 8} times to a session on its own instance and to one on instance two, one push in flight each; from the push to the pushReceived.`,
    '',
    '| push to a session on | pushes | p50 ms | p99 ms |',
    '| --- | ---: | ---: | ---: |',
    `| the same instance (no Redis) | ${d.pushes} | ${f(d.local.p50)} | ${f(d.local.p99)} |`,
    `| another instance (GET, PUBLISH, PUBLISH back) | ${d.pushes} | ${f(d.remote.p50)} | ${f(d.remote.p99)} |`,
    '',
    `Redis load with ${d.sessions.toLocaleString('en')} live sessions over ${d.seconds} s: ${d.commandsPerSecond.toFixed(1)} commands/s (${Object.entries(d.byCommand).map(([c, n]) => `${c} ${n.toFixed(1)}/s`).join(', ')}), that is ${d.perThousandSessions.toFixed(2)} commands/s per 1 k live sessions. Keep-alives never reach Redis; each pointer is refreshed once per max(ttl/3, 30 s).`,
  ].join('\n');
}
