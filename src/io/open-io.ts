// Chooses the datagram I/O path (config `io`): native where the addon is built and
// loads, else dgram, with one warning; `--io native` insists, `--io dgram` never tries.
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { DatagramIo } from './datagram-io.js';
import { DgramIo } from './dgram-io.js';
import { loadNativeUdp, NativeIo } from './native-io.js';

export async function openDatagramIo(config: Config, log: Logger): Promise<DatagramIo> {
  if (config.io !== 'dgram') {
    const addon = loadNativeUdp();
    if (!(addon instanceof Error)) return new NativeIo(addon, config);
    if (config.io === 'native') throw new Error(`--io native: ${addon.message}`);
    log.warn(`the native UDP path is unavailable, so the tracker uses Node dgram: ${addon.message}`);
  }
  return DgramIo.open(config, log);
}
