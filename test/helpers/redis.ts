// A real redis-server for the tests that need one (.ci/run installs it): started
// on a free port with persistence off, stopped afterwards. Never a mock.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { freePort } from './ops.js';

export interface RedisServer {
  port: number;
  url: string;
  /** Runs redis-cli against it and returns its output. */
  cli(...args: string[]): string;
  /** Total calls of a command since start (INFO commandstats), e.g. calls('set'). */
  calls(command: string): number;
  signal(sig: NodeJS.Signals): void;
  /** Stops it (SIGKILL) and waits for the exit. */
  kill(): Promise<void>;
  /** Starts it again, empty, on the same port. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** Why these tests cannot run here, or null when redis-server and redis-cli are installed. */
export function redisMissing(): string | null {
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  const c = spawnSync('redis-cli', ['--version'], { encoding: 'utf8' });
  return r.status === 0 && c.status === 0 ? null : 'redis-server is not installed (apt-get install redis-server; .ci/run does it)';
}

/** How long a start may take, and one redis-cli call: they only bound a failing test, so they are generous. */
const START_MS = 60_000;
const CLI_MS = 30_000;

/** `requirepass`: clients must AUTH with this password (user "default"). */
export async function startRedis({ requirepass }: { requirepass?: string } = {}): Promise<RedisServer> {
  const port = await freePort();
  let child: ChildProcess;
  const auth = requirepass === undefined ? [] : ['-a', requirepass, '--no-auth-warning'];
  const cli = (...args: string[]): string => spawnSync('redis-cli', ['-p', String(port), ...auth, ...args], { encoding: 'utf8', timeout: CLI_MS }).stdout ?? '';
  const launch = async (): Promise<void> => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning',
      ...(requirepass === undefined ? [] : ['--requirepass', requirepass])], { stdio: 'ignore' });
    // until it answers PING, however long it takes to start (or it exits)
    const deadline = Date.now() + START_MS;
    while (cli('ping').trim() !== 'PONG') {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`redis-server on port ${port} exited (${child.exitCode ?? child.signalCode}) before answering PING`);
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING within ${START_MS} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const kill = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  };
  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    cli,
    calls(command) {
      const m = new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(cli('info', 'commandstats'));
      return m ? Number(m[1]) : 0;
    },
    signal: (sig) => { child.kill(sig); },
    kill,
    restart: launch,
    stop: kill,
  };
}
