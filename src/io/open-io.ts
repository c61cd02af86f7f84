// Chooses the datagram I/O path (config `io`): native where the addon is built and
// loads, else dgram, with one warning; `--io native` insists, `--io dgram` never tries.
import { stunOtherPort, type Config } from '../config.js';
import type { Logger } from '../log.js';
import type { DatagramIo, Endpoint } from './datagram-io.js';
import { DgramIo } from './dgram-io.js';
import { loadNativeUdp, MAX_ENDPOINTS, NativeIo } from './native-io.js';

/**
 * Binds config host:port (socket 0) and, after it, each of `extra` (sockets 1, 2,
 * ...; at most 3), every one on the same path.
 */
export async function openDatagramIo(config: Config, log: Logger, extra: readonly Endpoint[] = []): Promise<DatagramIo> {
  if (1 + extra.length > MAX_ENDPOINTS) throw new RangeError(`at most ${MAX_ENDPOINTS - 1} extra endpoints, got ${extra.length}`);
  if (config.io !== 'dgram') {
    const addon = loadNativeUdp();
    if (!(addon instanceof Error)) return new NativeIo(addon, config, extra);
    if (config.io === 'native') throw new Error(`--io native: ${addon.message}`);
    log.warn(`the native UDP path is unavailable, so the tracker uses Node dgram: ${addon.message}`);
  }
  return DgramIo.open(config, log, extra);
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
