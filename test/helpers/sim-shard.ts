// A shard on a simulated clock, driven directly with request batches from
// 127.0.0.1:port (no threads, no sockets): for the tests of what time does to
// sessions (expiry, announceTtl, who gives way) without waiting for it.
import assert from 'node:assert/strict';
import { defaultConfig, type Config } from '../../src/config.js';
import { addressBucket } from '../../src/routing.js';
import { Shard, shardOptions } from '../../src/shard/shard.js';
import { ONE_UDP4_SOCKET, readReplies, requestBatch } from './batch.js';

export interface Answer { action: string; data?: Record<string, string> }

export function simulatedShard(config: Partial<Config>) {
  let now = 0;
  const shard = new Shard({ ...shardOptions({ ...defaultConfig(), shards: 1, ...config }, 0, ONE_UDP4_SOCKET), now: () => now });
  const ip = '127.0.0.1', bucket = addressBucket(ip);
  /** One request from 127.0.0.1:port, and the replies to it. */
  const ask = (port: number, msg: unknown): Answer[] => {
    const buf = requestBatch([{ ip, port, bucket, payload: typeof msg === 'string' ? msg : JSON.stringify(msg) }]);
    shard.handleBatch(buf, buf.length);
    return readReplies(shard.finishBatch().out).map((r) => JSON.parse(r.payload) as Answer);
  };
  /** The `action` reply's data (asserted to come). */
  const reply = (port: number, msg: unknown, action: string): Record<string, string> => {
    const r = ask(port, msg).find((x) => x.action === action);
    assert.ok(r, `a ${action} to ${JSON.stringify(msg)} from port ${port}`);
    return r.data ?? {};
  };
  /** Time passes as the shard's worker sees it: an expiry pass every tick. */
  const wait = (ms: number): void => {
    for (const end = now + ms; now < end;) { now = Math.min(end, now + shard.tickMs); shard.expire(); }
  };
  return { shard, ask, reply, wait };
}
