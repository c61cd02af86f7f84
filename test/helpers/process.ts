// The real tracker as a child process, started the way users start it.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CLI = ['--import', 'tsx', 'src/cli.ts'];

export interface Running {
  child: ChildProcess;
  port: number;
  output: () => string;
  /** Once the process has exited and its stdout and stderr are closed: output() then holds everything it wrote. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Runs `sobani-tracker ...args` (from a checkout at `cwd`; or `command`, e.g. an installed
 * bin) and resolves once its "listening" log line names the port. No start-up deadline:
 * it resolves when the process says it listens, or rejects when it exits first.
 */
export function runTracker(args: string[], env: NodeJS.ProcessEnv = {}, cwd = ROOT, command = [process.execPath, ...CLI]): Promise<Running> {
  const child = spawn(command[0]!, [...command.slice(1), ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  // 'close', not 'exit': at 'exit' the last lines may still be in the pipes
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer): void => {
      out += d.toString();
      const m = /"msg":"sobani-tracker listening"/.test(out) && /"addresses":\[\{"address":"[^"]+","port":(\d+)/.exec(out);
      if (m) resolve({ child, port: Number(m[1]), output: () => out, exited });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then(({ code }) => reject(new Error(`tracker exited (${code}) before listening:\n${out}`)));
  });
}

/** Runs the CLI (from a checkout at `cwd`; or `command`) to completion and returns its exit code and output. */
export function runCli(
  args: string[], env: NodeJS.ProcessEnv = {}, cwd = ROOT, command = [process.execPath, ...CLI],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command[0]!, [...command.slice(1), ...args], { cwd, env: { ...process.env, ...env } });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d; });
    child.stderr.on('data', (d: Buffer) => { stderr += d; });
    // 'close': every byte it wrote has been read
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
