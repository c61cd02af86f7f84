// The process's one pino logger. Synchronous writes to stdout: a line logged just
// before exit is never lost, and nothing is logged per datagram at info.
import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

export function createLogger(level: LogLevel): Logger {
  return pino({ name: 'sobani-tracker', level }, pino.destination({ fd: 1, sync: true }));
}
