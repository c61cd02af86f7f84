// Chooses the datagram I/O path (config `io`): native where the addon is built and
// loads, else dgram, with one warning; `--io native` insists, `--io dgram` never tries.
import { stunOtherPort, type Config } from '../config.js';
import type { Logger } from '../log.js';
import type { DatagramIo, Endpoint } from './datagram-io.js';
import { DgramIo } from './dgram-io.js';
import { loadNativeUdp, MAX_ENDPOINTS, NativeIo } from './native-io.js';

/**
 * Binds config host:port (socket 0) and, after it, each of `extra` (sockets 1, 2,
 * ...; at most 3), every one on the same path. A socket that cannot be bound is a
 * ListenError naming its address.
 */
export async function openDatagramIo(config: Config, log: Logger, extra: readonly Endpoint[] = []): Promise<DatagramIo> {
  if (1 + extra.length > MAX_ENDPOINTS) throw new RangeError(`at most ${MAX_ENDPOINTS - 1} extra endpoints, got ${extra.length}`);
  const endpoints = [{ host: config.host, port: config.port }, ...extra];
  const settings = (err: NodeJS.ErrnoException & { address?: string; port?: number }): string =>
    endpoints.findIndex((e) => e.host === err.address && e.port === err.port) > 0 ? '--stun-other-host or --stun-other-port' : '--port';
  try {
    if (config.io !== 'dgram') {
      const addon = loadNativeUdp();
      if (!(addon instanceof Error)) return new NativeIo(addon, config, extra);
      if (config.io === 'native') throw new Error(`--io native: ${addon.message}`);
      log.warn(`the native UDP path is unavailable, so the tracker uses Node dgram: ${addon.message}`);
    }
    return await DgramIo.open(config, log, extra);
  } catch (err) {
    throw ListenError.from(err, 'UDP', settings(err as NodeJS.ErrnoException)) ?? err;
  }
}

/**
 * A socket the tracker could not bind (a port in use, say): its message is one line
 * naming the address and what to do, which the CLI prints alone, with no stack.
 */
export class ListenError extends Error {
  constructor(message: string, readonly code: string) { super(message); }

  /**
   * The ListenError for a failed bind or listen (a Node or addon errno error with
   * address and port), or null for any other error. `settings`: the flags that choose
   * the address; `what`: the listener, where it is not the tracker's own UDP socket.
   */
  static from(err: unknown, proto: 'UDP' | 'TCP', settings: string, what?: string): ListenError | null {
    const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
    if (!(e instanceof Error) || (e.syscall !== 'bind' && e.syscall !== 'listen') || typeof e.code !== 'string' || e.address === undefined) return null;
    const at = `${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port}`;
    const why = e.code === 'EADDRINUSE' ? `the address is in use (EADDRINUSE): another process listens there; stop it, or choose another port with ${settings}`
      : e.code === 'EACCES' ? `permission denied (EACCES): a port below 1024 needs root or the CAP_NET_BIND_SERVICE capability; or choose another with ${settings}`
      : e.code === 'EADDRNOTAVAIL' ? 'this host has no such address (EADDRNOTAVAIL): give one of its own, or a wildcard (:: or 0.0.0.0)'
      : e.message;
    return new ListenError(`cannot listen on ${proto} ${at}${what !== undefined ? ` (${what})` : ''}: ${why}`, e.code);
  }
}

/**
 * The sockets RFC 5780 NAT behaviour discovery needs besides config host:port
 * (config stunOtherHost; none without it), in the order whose socket index says
 * which IP and port it has: index = ip * 2 + port, 0 the primary and 1 the other,
 * so flipping bit 1 changes the IP and bit 0 the port (shard.ts CHANGE-REQUEST).
 *   1: primary IP, other port   2: other IP, primary port   3: other IP, other port
 */
export function stunEndpoints(config: Config): Endpoint[] {
  if (config.stunOtherHost === '') return [];
  const otherPort = stunOtherPort(config);
  return [
    { host: config.host, port: otherPort },
    { host: config.stunOtherHost, port: config.port },
    { host: config.stunOtherHost, port: otherPort },
  ];
}
