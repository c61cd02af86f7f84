#!/usr/bin/env node
// sobani-tracker [options]            run the tracker
// sobani-tracker announce|pulse|push|punch --tracker HOST:PORT ...   client commands
// sobani-tracker health [--metrics-host ADDR] [--metrics-port N]       exit 0 iff /healthz says 200
import { ConfigError, helpText, loadConfig, printConfig } from './config.js';
import { startTracker } from './tracker.js';

const CLIENT_COMMANDS = new Set(['announce', 'pulse', 'push', 'punch']);

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command !== undefined && CLIENT_COMMANDS.has(command)) {
    const { runClientCommand } = await import('./client/cli.js');
    return runClientCommand(command, rest);
  }
  if (command === 'health') {
    const { runHealthCommand } = await import('./ops/health.js');
    return runHealthCommand(rest);
  }
  let args;
  try {
    args = loadConfig(argv);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`sobani-tracker: ${err.message}\n`);
    return 2;
  }
  if (args.help) { process.stdout.write(helpText() + '\n'); return 0; }
  if (args.printConfig) { process.stdout.write(printConfig(args.config) + '\n'); return 0; }

  // Listen for the stop signal before starting: one that arrives while the tracker
  // starts (or just after it says it listens) still stops it cleanly.
  const stopped = new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  let tracker;
  try {
    tracker = await startTracker(args.config);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`sobani-tracker: ${err.message}\n`);
    return 2;
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
