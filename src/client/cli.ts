import { parseArgs } from 'node:util';
import type { Dialect, PulseOptions } from './messages.js';
import { parseHostPort } from './peer-addr.js';
import { punch } from './punch.js';
import { TrackerClient, TrackerError } from './tracker-client.js';
import type { TrackerClientOptions } from './tracker-client.js';

export const CLIENT_COMMANDS = ['announce', 'pulse', 'push', 'punch'] as const;
export type ClientCommand = (typeof CLIENT_COMMANDS)[number];

export const CLIENT_USAGE = `Client commands (each prints JSON lines on stdout):
  announce --tracker HOST:PORT              announce, print the replies
  pulse    --tracker HOST:PORT [--override [--ip IP] [--port PORT] [--multiaddr MA]]
           [--regenerate] [--skip-announce]  announce, then pulse, print the replies
  push     --tracker HOST:PORT SHAREID      announce, then push to SHAREID, print the replies
                                            (or --share-id=SHAREID)
  punch    --tracker HOST:PORT [--peer SHAREID] [--timeout SECONDS] [--exchange SECONDS] [--no-discover]
           [--discover-timeout SECONDS] [--no-local]
                                            learn our NAT type from the tracker's STUN, announce,
                                            (push,) open a direct path with the strategy that fits
                                            both NATs; prints {"event":"nat"|"announced"|"peer"|
                                            "connected"|"silent"|"moved"|"reconnected"|"exchanged"|
                                            "failed",...}; --exchange: then send 50 numbered
                                            datagrams/s each way over the path, following a
                                            network change (exit 1 if the path broke for good);
                                            --discover-timeout: how long each STUN Binding waits
                                            (default 1) before the NAT type is "unknown"; a peer on
                                            our own network is reached on its local addresses
                                            (see docs/local-candidates.md)
Common options:
  --dialect documented|legacy   what to send (default documented)
  --bind [HOST:]PORT            local address of the client socket (default: any, ephemeral)
  --no-token                    documented dialect: ask for no session token (untagged replies)
  --timeout SECONDS             give up after this long (default 5; punch: 10)
  --no-local                    do not tell the tracker this host's local addresses (documented
                                dialect; then a peer behind the same NAT cannot reach us directly)
Exit status: 0 done, 1 failed or timed out, 2 usage error.`;

export interface ClientCommandIo {
  /** Receives each output line without its newline. Default: process.stdout. */
  stdout?: (line: string) => void;
  /** Usage errors. Default: process.stderr. */
  stderr?: (line: string) => void;
  /** Stops the command (exit status 130). Default: SIGINT / SIGTERM. */
  signal?: AbortSignal;
}

class UsageError extends Error {}

/** Runs `sobani-tracker <cmd> ...argv` for a client command; resolves with the exit status. */
export async function runClientCommand(cmd: string, argv: string[], io: ClientCommandIo = {}): Promise<number> {
  const out = io.stdout ?? ((line: string) => void process.stdout.write(line + '\n'));
  const err = io.stderr ?? ((line: string) => void process.stderr.write(line + '\n'));
  let parsed: ReturnType<typeof parse>;
  try {
    if (!(CLIENT_COMMANDS as readonly string[]).includes(cmd)) throw new UsageError(`unknown client command ${JSON.stringify(cmd)}`);
    parsed = parse(cmd as ClientCommand, argv);
  } catch (e) {
    err(`sobani-tracker ${cmd}: ${(e as Error).message}\n\n${CLIENT_USAGE}`);
    return 2;
  }
  if (parsed.help) {
    out(CLIENT_USAGE);
    return 0;
  }

  const stop = new AbortController();
  const onSignal = (): void => stop.abort(new Error('interrupted'));
  if (io.signal) io.signal.addEventListener('abort', onSignal, { once: true });
  else {
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  }
  // One-shot commands show exactly the exchange asked for: no background
  // pulses, no silent re-announce.
  const oneShot = parsed.cmd !== 'punch';
  const client = new TrackerClient({ ...parsed.client, signal: stop.signal, ...(oneShot ? { autoPulse: false, reannounce: false } : {}) });
  const print = (obj: unknown): void => out(JSON.stringify(obj));
  try {
    if (parsed.cmd === 'punch') {
      const result = await punch({
        client,
        ...(parsed.peer !== undefined ? { peer: parsed.peer } : {}),
        timeoutMs: parsed.timeoutMs,
        ...(parsed.exchangeSeconds !== undefined ? { exchangeSeconds: parsed.exchangeSeconds } : {}),
        discover: !parsed.noDiscover,
        ...(parsed.discoverTimeoutMs !== undefined ? { discoverTimeoutMs: parsed.discoverTimeoutMs } : {}),
        signal: stop.signal,
        onEvent: print,
      });
      if (result.ok) result.path.close();
      return result.ok ? 0 : stop.signal.aborted ? 130 : 1;
    }
    client.on('reply', (reply) => print(reply.raw));
    const call = { signal: stop.signal, timeoutMs: parsed.timeoutMs };
    if (!parsed.skipAnnounce) await client.announce(call);
    if (parsed.cmd === 'pulse') await client.pulse(parsed.pulse, call);
    if (parsed.cmd === 'push') await client.push(parsed.shareId as string, call);
    // Print what arrives just after the answer too (the documented tracker
    // also sends the legacy form of some replies).
    await new Promise((resolve) => setTimeout(resolve, 150));
    return 0;
  } catch (e) {
    if (stop.signal.aborted) return 130;
    const reason = e instanceof TrackerError ? `${e.code}: ${e.message}` : (e as Error).message;
    print({ event: 'failed', reason });
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    io.signal?.removeEventListener('abort', onSignal);
    await client.close();
  }
}

const OPTIONS = {
  tracker: { type: 'string' },
  dialect: { type: 'string' },
  bind: { type: 'string' },
  timeout: { type: 'string' },
  peer: { type: 'string' },
  'share-id': { type: 'string' },
  override: { type: 'boolean' },
  ip: { type: 'string' },
  port: { type: 'string' },
  multiaddr: { type: 'string' },
  regenerate: { type: 'boolean' },
  'skip-announce': { type: 'boolean' },
  exchange: { type: 'string' },
  'no-discover': { type: 'boolean' },
  'no-local': { type: 'boolean' },
  'no-token': { type: 'boolean' },
  'discover-timeout': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/**
 * shareIds may begin with '-' (it is in their alphabet), which parseArgs
 * would take for an option. So `--opt value` becomes `--opt=value`, and any
 * other word that is not `--something` or `-h` is a positional.
 */
function normalizeArgv(argv: string[]): string[] {
  const opts: string[] = [];
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const name = arg.startsWith('--') ? arg.slice(2) : undefined;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (name !== undefined && (OPTIONS as Record<string, { type: string }>)[name]?.type === 'string') {
      // `--tracker --timeout 5`: an option's name is not --tracker's value (a shareId may begin with '-', but is no option's name)
      const next = argv[i + 1];
      if (next === undefined || next === '-h' || (next.startsWith('--') && Object.hasOwn(OPTIONS, next.slice(2).split('=')[0]!))) throw new UsageError(`${arg} needs a value`);
      opts.push(`${arg}=${argv[++i] as string}`);
    } else if (name !== undefined || arg === '-h') {
      opts.push(arg);
    } else {
      positionals.push(arg);
    }
  }
  return [...opts, '--', ...positionals];
}

function parse(cmd: ClientCommand, argv: string[]) {
  const { values, positionals } = parseArgs({
    args: normalizeArgv(argv),
    allowPositionals: true,
    strict: true,
    options: OPTIONS,
  });
  if (values.help) return { help: true as const, cmd } as const;
  if (!values.tracker) throw new UsageError('--tracker HOST:PORT is required');
  const dialect = (values.dialect ?? 'documented') as Dialect;
  if (dialect !== 'documented' && dialect !== 'legacy') throw new UsageError('--dialect must be documented or legacy');
  const client: TrackerClientOptions = { tracker: parseHostPort(values.tracker), dialect, ...(values['no-local'] ? { shareLocal: false } : {}),
    ...(values['no-token'] ? { token: false } : {}) };
  if (values.bind !== undefined) {
    client.socket = /^\d+$/.test(values.bind) ? { port: Number(values.bind) } : (({ host, port }) => ({ host, port }))(parseHostPort(values.bind));
  }
  const timeoutS = values.timeout === undefined ? (cmd === 'punch' ? 10 : 5) : Number(values.timeout);
  if (!(timeoutS > 0)) throw new UsageError('--timeout must be a positive number of seconds');

  const pulse: PulseOptions = {};
  if (values.override) {
    pulse.override = true;
    if (values.ip !== undefined) pulse.ip = values.ip;
    if (values.port !== undefined) pulse.port = values.port;
    if (values.multiaddr !== undefined) pulse.multiaddr = values.multiaddr;
  } else if (values.ip !== undefined || values.port !== undefined || values.multiaddr !== undefined) {
    throw new UsageError('--ip, --port and --multiaddr need --override');
  }
  if (values.regenerate) pulse.regenerateShareId = true;
  if ((pulse.override || pulse.regenerateShareId) && (cmd !== 'pulse' || dialect === 'legacy')) {
    throw new UsageError('--override and --regenerate apply to pulse in the documented dialect only');
  }

  const shareId = values['share-id'] ?? (cmd === 'push' ? positionals[0] : undefined);
  if (cmd === 'push' && !shareId) throw new UsageError('push needs the target SHAREID');
  const extra = positionals.slice(cmd === 'push' && values['share-id'] === undefined ? 1 : 0);
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  if (values.peer !== undefined && cmd !== 'punch') throw new UsageError('--peer applies to punch only');
  if (values['skip-announce'] && (cmd === 'announce' || cmd === 'punch')) throw new UsageError(`--skip-announce makes no sense for ${cmd}`);
  if ((values.exchange !== undefined || values['no-discover'] || values['discover-timeout'] !== undefined) && cmd !== 'punch') {
    throw new UsageError('--exchange, --no-discover and --discover-timeout apply to punch only');
  }
  const discoverS = values['discover-timeout'] === undefined ? undefined : Number(values['discover-timeout']);
  if (discoverS !== undefined && !(discoverS > 0)) throw new UsageError('--discover-timeout must be a positive number of seconds');
  const exchangeSeconds = values.exchange === undefined ? undefined : Number(values.exchange);
  if (exchangeSeconds !== undefined && !(exchangeSeconds > 0)) throw new UsageError('--exchange must be a positive number of seconds');

  return {
    help: false as const,
    cmd,
    client,
    timeoutMs: Math.round(timeoutS * 1000),
    pulse,
    shareId,
    peer: values.peer,
    skipAnnounce: values['skip-announce'] === true,
    exchangeSeconds,
    noDiscover: values['no-discover'] === true,
    discoverTimeoutMs: discoverS === undefined ? undefined : Math.round(discoverS * 1000),
  };
}
