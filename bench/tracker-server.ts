// Runs the real tracker as a bench child process.
// argv: --io native|dgram  --shards N|default  [--ttl seconds]  [--directory URL --instance-id NAME]
// (always with a relay configured, so the amplification table can ask it for credentials)
import { parseArgs } from 'node:util';
import { startTracker } from '../src/tracker.js';
import { serveBench } from './child-ipc.js';

const { values } = parseArgs({ options: {
  io: { type: 'string', default: 'native' }, shards: { type: 'string', default: 'default' }, ttl: { type: 'string' },
  directory: { type: 'string' }, 'instance-id': { type: 'string' },
} });

const tracker = await startTracker({
  host: '127.0.0.1',
  port: 0,
  logLevel: 'warn',
  io: values.io === 'dgram' ? 'dgram' : 'native',
  ...(values.shards !== 'default' ? { shards: Number(values.shards) } : {}),
  ...(values.ttl !== undefined ? { ttl: Number(values.ttl) } : {}),
  ...(values.directory !== undefined ? { directory: values.directory, instanceId: values['instance-id'] ?? 'bench' } : {}),
  // a relay configured, as a tracker with one runs (nothing relays: the bench only asks for credentials)
  turnUrl: 'turn:203.0.113.20:3478',
  turnSecret: 'bench-turn-secret',
});
const bound = tracker.addresses.find((a) => a.family === 'IPv4') ?? tracker.addresses[0];
if (!bound) throw new Error('tracker bound no socket');

serveBench({
  port: bound.port,
  stats: (resetLoopDelay) => tracker.stats({ resetLoopDelay }),
  fill: (peers) => tracker.fill(peers),
  close: () => tracker.close(),
});
