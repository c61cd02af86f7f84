// A real coturn (`turnserver`) for the relay tests (.ci/run installs it): started
// on free ports with shared-secret credentials, stopped afterwards. Never a mock.
//
// coturnArgs builds the command line alone, so a test can spawn it wherever it
// wants (e.g. `ip netns exec NS turnserver ...args`); startCoturn runs it here.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { CLASS_SUCCESS, METHOD, MessageBuilder, messageType } from '../../src/stun/codec.js';
import { StunTransactions } from '../../src/client/stun-transactions.js';

export interface CoturnOptions {
  /** Where it listens for TURN over UDP. */
  listeningIp: string;
  listeningPort: number;
  /** The address relayed endpoints are bound on. Default: listeningIp. */
  relayIp?: string;
  /** The relay port range, inclusive. */
  minPort: number;
  maxPort: number;
  /** `--static-auth-secret`: credentials are minted with it (src/relay/credentials.ts). */
  secret: string;
  realm: string;
  /**
   * coturn refuses peers on 127.x.x.x and ::1 (CreatePermission and ChannelBind get
   * 403 Forbidden IP) unless `--allow-loopback-peers`: checked here with coturn
   * 4.6.1, turnutils_uclient -y between two loopback relays. Default true, since the
   * tests' peers are on loopback.
   */
  allowLoopbackPeers?: boolean;
  /**
   * More flags, in the `--name=value` form: coturn 4.6.1 takes the values of
   * --max-allocate-lifetime, --permission-lifetime and --channel-lifetime only so
   * (`--channel-lifetime 4` ends in "Unknown argument: 4"), and --stale-nonce's is
   * optional. E.g. ['--user-quota=1', '--stale-nonce=2', '--permission-lifetime=4'].
   */
  extra?: string[];
}

/** The turnserver command line for `o`: foreground, no config file, UDP only, the log on stdout. */
export function coturnArgs(o: CoturnOptions): string[] {
  return [
    '-n', // no configuration file
    '--listening-ip', o.listeningIp, '--listening-port', String(o.listeningPort),
    '--relay-ip', o.relayIp ?? o.listeningIp,
    '--min-port', String(o.minPort), '--max-port', String(o.maxPort),
    '--no-tcp', '--no-tls', '--no-dtls', '--no-cli', '--no-tcp-relay',
    '--log-file', 'stdout', '--simple-log',
    '--pidfile', '/dev/null', // not /var/run/turnserver.pid, which every instance would overwrite
    '--use-auth-secret', '--static-auth-secret', o.secret, '--realm', o.realm,
    ...(o.allowLoopbackPeers === false ? [] : ['--allow-loopback-peers']),
    ...(o.extra ?? []),
  ];
}

/** Why coturn cannot be used here, or undefined when it can. */
export function coturnUnavailableReason(): string | undefined {
  for (const tool of ['turnserver', 'turnutils_uclient']) {
    if (spawnSync(tool, ['-h']).error) return `${tool} is not installed (apt-get install coturn; .ci/run does it)`;
  }
  return undefined;
}

export interface Coturn {
  host: string;
  port: number;
  secret: string;
  realm: string;
  relayIp: string;
  /** Everything it logged so far. */
  output(): string;
  /** SIGKILL, and wait for the exit. */
  stop(): Promise<void>;
}

/** A UDP port on `ip` that was free a moment ago. */
async function freeUdpPort(ip: string): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.bind(0, ip, () => resolve()); });
  const { port } = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/**
 * `count` consecutive UDP ports on `ip`, free a moment ago, below Linux's ephemeral
 * range (32768 and up) so that no socket bound to port 0 takes one meanwhile.
 */
async function freeUdpRange(ip: string, count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * (12_000 - count));
    const held: dgram.Socket[] = [];
    try {
      for (let p = base; p < base + count; p++) {
        const s = dgram.createSocket('udp4');
        await new Promise<void>((resolve, reject) => { s.once('error', reject); s.bind(p, ip, () => resolve()); });
        held.push(s);
      }
      return base;
    } catch {
      // taken: try another block
    } finally {
      await Promise.all(held.map((s) => new Promise<void>((r) => s.close(() => r()))));
    }
  }
  throw new Error(`no ${count} free consecutive UDP ports on ${ip}`);
}

/** Whether a STUN Binding to host:port is answered (coturn answers it without credentials). */
async function answersBinding(host: string, port: number): Promise<boolean> {
  const socket = dgram.createSocket('udp4');
  const transactions = new StunTransactions();
  socket.on('message', (msg, from) => transactions.receive(msg, from));
  try {
    await new Promise<void>((r) => socket.bind(0, host, () => r()));
    const request = new MessageBuilder(messageType(METHOD.BINDING, 0), StunTransactions.transactionId()).build();
    const reply = await transactions.request(request, (m) => socket.send(m, port, host), `${host}:${port}`, { timeoutMs: 300, retransmitMs: 100 });
    return reply.message.cls === CLASS_SUCCESS;
  } catch {
    return false;
  } finally {
    socket.close();
  }
}

/**
 * Starts turnserver on `host` (a loopback address by default) with free ports, and
 * resolves once it answers a STUN Binding (asked again and again: the deadline only
 * bounds a start that fails).
 */
export async function startCoturn(opts: Partial<CoturnOptions> & { relayPorts?: number } = {}): Promise<Coturn> {
  const host = opts.listeningIp ?? '127.0.0.1';
  const relayIp = opts.relayIp ?? host;
  const count = opts.relayPorts ?? 40;
  const minPort = opts.minPort ?? await freeUdpRange(relayIp, count);
  const o: CoturnOptions = {
    listeningIp: host,
    listeningPort: opts.listeningPort ?? await freeUdpPort(host),
    relayIp,
    minPort,
    maxPort: opts.maxPort ?? minPort + count - 1,
    secret: opts.secret ?? 'sobani-test-secret',
    realm: opts.realm ?? 'sobani.test',
    ...(opts.allowLoopbackPeers !== undefined ? { allowLoopbackPeers: opts.allowLoopbackPeers } : {}),
    ...(opts.extra !== undefined ? { extra: opts.extra } : {}),
  };
  const child: ChildProcess = spawn('turnserver', coturnArgs(o), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  for (const end = Date.now() + 60_000; Date.now() < end;) {
    if (child.exitCode !== null) break;
    if (await answersBinding(host, o.listeningPort)) {
      return { host, port: o.listeningPort, secret: o.secret, realm: o.realm, relayIp, output: () => out, stop };
    }
  }
  await stop();
  throw new Error(`turnserver ${coturnArgs(o).join(' ')} did not answer a STUN Binding:\n${out}`);
}

/** Runs `fn` with a fresh coturn, and stops it afterwards (its log goes with a failure). */
export async function withCoturn(opts: Parameters<typeof startCoturn>[0], fn: (c: Coturn) => Promise<void>): Promise<void> {
  const coturn = await startCoturn(opts);
  try {
    await fn(coturn);
  } catch (err) {
    if (err instanceof Error) err.message += `\n--- coturn log (last 3000 characters) ---\n${coturn.output().slice(-3000)}`;
    throw err;
  } finally {
    await coturn.stop();
  }
}
