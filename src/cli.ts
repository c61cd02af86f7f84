#!/usr/bin/env node
// sobani-tracker [options]            run the tracker
// sobani-tracker announce|pulse|push|punch --tracker HOST:PORT ...   client commands
// sobani-tracker health [--metrics-host ADDR] [--metrics-port N]       exit 0 iff /healthz says 200
import { ConfigError, helpText, loadConfig, printConfig, type CommandHelp } from './config.js';
import { ListenError } from './io/open-io.js';
import { createLogger } from './log.js';
import { startTracker } from './tracker.js';

/** The commands besides running the tracker, as --help lists them; each loads its code only when run. */
const COMMANDS: Record<string, CommandHelp & { run: (argv: string[]) => Promise<number> }> = {
  announce: { usage: 'announce --tracker HOST:PORT', doc: 'Announce to a tracker, print its replies (JSON lines)', run: (argv) => client('announce', argv) },
  pulse: { usage: 'pulse --tracker HOST:PORT', doc: 'Announce, then pulse, print the replies', run: (argv) => client('pulse', argv) },
  push: { usage: 'push --tracker HOST:PORT SHAREID', doc: 'Announce, then push to the peer SHAREID, print the replies', run: (argv) => client('push', argv) },
  punch: { usage: 'punch --tracker HOST:PORT', doc: 'Open a direct path to a peer (--peer SHAREID, or wait for one): hole punch, else relay', run: (argv) => client('punch', argv) },
  health: { usage: 'health', doc: 'Exit 0 if the running tracker\'s /healthz (--metrics-port) answers 200', run: async (argv) => (await import('./ops/health.js')).runHealthCommand(argv) },
};

async function client(command: string, argv: string[]): Promise<number> {
  const { runClientCommand } = await import('./client/cli.js');
  return runClientCommand(command, argv);
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command !== undefined && Object.hasOwn(COMMANDS, command)) return COMMANDS[command]!.run(rest);
  let args;
  try {
    args = loadConfig(argv);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`sobani-tracker: ${err.message}\n`);
    return 2;
  }
  const printed = args.help ? helpText(Object.values(COMMANDS)) : args.printConfig !== false ? printConfig(args.config, args.given, args.printConfig) : null;
  if (printed !== null) {
    for (const w of args.warnings) process.stderr.write(`sobani-tracker: warning: ${w}\n`); // stdout is the config
    process.stdout.write(`${printed}\n`);
    return 0;
  }

  // Listen for the stop signal before starting: one that arrives while the tracker
  // starts (or just after it says it listens) still stops it cleanly.
  const stopped = new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  const log = createLogger(args.config.logLevel);
  for (const w of args.warnings) log.warn(w);
  let tracker;
  try {
    tracker = await startTracker(args.config, log);
  } catch (err) {
    // what the user can fix, in one line: a setting (exit 2), an address that cannot be had (exit 1)
    if (!(err instanceof ConfigError) && !(err instanceof ListenError)) throw err;
    process.stderr.write(`sobani-tracker: ${err.message}\n`);
    return err instanceof ConfigError ? 2 : 1;
  }
  await stopped;
  // A second signal while stopping exits at once.
  const force = (): never => process.exit(1);
  process.once('SIGTERM', force);
  process.once('SIGINT', force);
  const watchdog = setTimeout(() => { process.stderr.write('sobani-tracker: shutdown took too long\n'); process.exit(1); }, 5000);
  watchdog.unref();
  await tracker.close();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => { process.stderr.write(`sobani-tracker: ${(err as Error)?.stack ?? err}\n`); process.exitCode = 1; },
);
