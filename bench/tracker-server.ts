// Runs the real tracker as a bench child process.
// argv: --shards N|default  [--ttl seconds]
import { parseArgs } from 'node:util';
import { startTracker } from '../src/tracker.js';
import { serveBench } from './child-ipc.js';

const { values } = parseArgs({ options: { shards: { type: 'string', default: 'default' }, ttl: { type: 'string' } } });

const tracker = await startTracker({
  host: '127.0.0.1',
  port: 0,
  logLevel: 'warn',
  ...(values.shards !== 'default' ? { shards: Number(values.shards) } : {}),
  ...(values.ttl !== undefined ? { ttl: Number(values.ttl) } : {}),
});
const bound = tracker.addresses.find((a) => a.family === 'IPv4') ?? tracker.addresses[0];
if (!bound) throw new Error('tracker bound no socket');

serveBench({
  port: bound.port,
  stats: (resetLoopDelay) => tracker.stats({ resetLoopDelay }),
  fill: (peers) => tracker.fill(peers),
  close: () => tracker.close(),
});
