// /healthz: healthy means datagrams can be served right now, so the UDP socket
// is bound and every shard answers a ping within the deadline (a hung shard
// would silently drop its share of the traffic). Also the `sobani-tracker health`
// client, which a container HEALTHCHECK runs (no curl in the image).
import http from 'node:http';
import { ConfigError, loadConfig } from '../config.js';
import type { RedisDirectory } from '../directory/redis-directory.js';
import type { DatagramIo } from '../io/datagram-io.js';
import type { ShardControl } from './snapshot.js';

export const PING_DEADLINE_MS = 1000;

export interface Health { ok: boolean; reason: string }

/**
 * Healthy: the socket is bound and every shard answers. A session directory
 * that cannot be reached makes the tracker degraded, not down (200, saying so):
 * it still serves every session of its own.
 */
export async function checkHealth(io: Pick<DatagramIo, 'isBound'>, links: readonly ShardControl[],
  directory: Pick<RedisDirectory, 'state'> | null, deadlineMs = PING_DEADLINE_MS): Promise<Health> {
  if (!io.isBound()) return { ok: false, reason: 'the UDP socket is not bound' };
  const answers = await Promise.all(links.map((l) => l.control('ping', undefined, deadlineMs)));
  const silent = links.filter((_, i) => answers[i] !== 'pong').map((l) => l.index);
  if (silent.length > 0) {
    return { ok: false, reason: `shard ${silent.join(', ')} did not answer a ping within ${deadlineMs} ms` };
  }
  if (directory !== null && directory.state !== 'up') {
    return { ok: true, reason: `degraded: the session directory is ${directory.state === 'down' ? 'unreachable' : 'not connected yet'}; pushes to other instances' sessions fail with DIRECTORY_UNAVAILABLE` };
  }
  return { ok: true, reason: `ok: UDP socket bound, ${links.length} shard${links.length === 1 ? '' : 's'} answering${directory !== null ? ', session directory reachable' : ''}` };
}

export const HEALTH_USAGE = `Usage: sobani-tracker health [--metrics-host ADDR] [--metrics-port N] [--config FILE] [...]
GETs /healthz from the tracker's metrics listener and prints its answer: exit 0 on 200
(healthy, or degraded), 1 otherwise, 2 on a usage error. It finds the listener through the
same settings as the tracker (flags, SOBANI_METRICS_PORT / SOBANI_METRICS_HOST, the config
file), so the tracker's own flags may be given; a wildcard host is reached on loopback.`;

/**
 * `sobani-tracker health [--metrics-host H] [--metrics-port N]`: GETs /healthz
 * from the metrics listener; exit 0 on 200, else 1, printing the body. Settings
 * come from the same flags/env/config file as the tracker's own.
 */
export async function runHealthCommand(argv: readonly string[]): Promise<number> {
  let host: string, port: number;
  try {
    const args = loadConfig(argv);
    if (args.help) { process.stdout.write(`${HEALTH_USAGE}\n`); return 0; }
    for (const w of args.warnings) process.stderr.write(`sobani-tracker health: warning: ${w}\n`);
    ({ metricsHost: host, metricsPort: port } = args.config);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`sobani-tracker health: ${err.message}\n`);
    return 2;
  }
  if (port === 0) {
    process.stderr.write('sobani-tracker health: the metrics listener is off: give --metrics-port (or SOBANI_METRICS_PORT)\n');
    return 1;
  }
  // A wildcard bind is reached on loopback.
  if (host === '0.0.0.0') host = '127.0.0.1';
  if (host === '::') host = '::1';
  const { status, body } = await get(host, port, '/healthz', 3000);
  (status === 200 ? process.stdout : process.stderr).write(`${body.trim()}\n`);
  return status === 200 ? 0 : 1;
}

function get(host: string, port: number, path: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', (err) => resolve({ status: 0, body: `unhealthy: ${err.message}` }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => resolve({ status: 0, body: `unhealthy: http://${host.includes(':') ? `[${host}]` : host}:${port}${path}: ${err.message}` }));
  });
}
