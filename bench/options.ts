// The bench's flags and their defaults. The defaults finish in under three
// minutes on a 2-core machine.
import { parseArgs } from 'node:util';
import { defaultGenerator, type Generator } from './loadgen/index.js';

export interface BenchOptions {
  /** Measured seconds per load test (after the warm-up). */
  seconds: number;
  warmup: number;
  /** Simulated clients (UDP sockets) per load test. */
  clients: number;
  /** Closed loop: pulses outstanding per client. */
  window: number;
  /** Open loop: offered pulses per second, all clients together; 0: half of each server's closed-loop rate in the same round. */
  rate: number;
  /** Shard counts of the native-path trackers to compare. */
  shards: (number | 'default')[];
  generator: Generator;
  /** Peers for the scale phase; 0 skips it. */
  peers: number;
  rounds: number;
  /** Load-generator threads. */
  threads: number;
  /** Session TTL (s) of the tracker whose table is left to expire. */
  ttl: number;
  /** Requests per kind and source in the amplification table; 0 skips it. */
  amp: number;
  /** Live sessions for the several-instances phase's Redis load; 0 skips the phase. */
  directorySessions: number;
  /** Rounds of the STUN-beside-pulses phase; 0 skips it. */
  stunRounds: number;
  /** Soak mode: seconds to run (0: off, the normal bench). */
  soak: number;
  soakRate: number;
  soakTtl: number;
  out: string;
}

const HELP = `yarn bench [flags]

  --seconds N    measured seconds per load test            (default 1)
  --warmup N     warm-up seconds before each measurement    (default 0.3)
  --clients N    simulated clients, one UDP socket and one   (default 256)
                 loopback source IP (127.0.X.Y) each
  --window N     closed loop: pulses in flight per client   (default 4)
  --rate N       open loop: offered pulses/s in total; 0:   (default 0)
                 half of each server's closed-loop rate
                 measured in the same round
  --shards LIST  shard counts of the native-path trackers   (default 1,2,4)
                 (the dgram-path tracker runs the default)
  --generator G  native (C, recvmmsg/sendmmsg; where built)  (default native
                 or node (worker threads of dgram sockets)   where built)
  --peers N      live peers for the scale phase, 0 to skip  (default 1000000)
  --rounds N     interleaved rounds over all servers        (default 5)
  --threads N    load-generator threads                     (default 1)
  --ttl N        session TTL (s) for the expiry phase       (default 20)
  --amp N        requests per kind in the amplification     (default 20)
                 table, 0 to skip
  --directory-sessions N  several instances on one Redis:   (default 100000)
                 live sessions for the Redis load, 0 to
                 skip the phase (needs redis-server)
  --stun N       rounds of token pulses and STUN Binding     (default 3)
                 beside plain pulses on
                 the default tracker, 0 to skip (needs the
                 native generator)
  --soak N       soak mode: only run the tracker for N s    (default off)
                 under steady open-loop load with churn,
                 sampling RSS and event-loop delay
  --soak-rate N  soak: pulses/s offered                     (default 20000)
  --soak-ttl N   soak: session TTL (s)                      (default 10)
  --out DIR      results folder                             (default bench/results)

Per-IP limits: the tracker allows 4096 requests/s per source IP, so keep
closed-loop replies/s ÷ clients under that (256 clients: up to ~1 M/s).
`;

export function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      seconds: { type: 'string', default: '1' },
      warmup: { type: 'string', default: '0.3' },
      clients: { type: 'string', default: '256' },
      window: { type: 'string', default: '4' },
      rate: { type: 'string', default: '0' },
      shards: { type: 'string', default: '1,2,4' },
      generator: { type: 'string', default: defaultGenerator() },
      peers: { type: 'string', default: '1000000' },
      rounds: { type: 'string', default: '5' },
      threads: { type: 'string', default: '1' },
      ttl: { type: 'string', default: '20' },
      out: { type: 'string', default: 'bench/results' },
      amp: { type: 'string', default: '20' },
      'directory-sessions': { type: 'string', default: '100000' },
      stun: { type: 'string', default: '3' },
      soak: { type: 'string', default: '0' },
      'soak-rate': { type: 'string', default: '20000' },
      'soak-ttl': { type: 'string', default: '10' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const num = (name: keyof typeof values, min: number): number => {
    const n = Number(values[name]);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number ≥ ${min}, got ${String(values[name])}`);
    return n;
  };
  const int = (name: keyof typeof values, min: number) => Math.floor(num(name, min));
  const shards = values.shards.split(',').map((s) => {
    const t = s.trim();
    if (t === 'default') return 'default' as const;
    const n = Number(t);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--shards: "${t}" is not a shard count or "default"`);
    return n;
  });
  const generator = values.generator as Generator;
  if (generator !== 'native' && generator !== 'node') throw new Error(`--generator must be native or node, got ${generator}`);
  return {
    seconds: num('seconds', 0.1),
    warmup: num('warmup', 0),
    clients: int('clients', 1),
    window: int('window', 1),
    rate: num('rate', 0),
    shards,
    generator,
    peers: int('peers', 0),
    rounds: int('rounds', 1),
    threads: int('threads', 1),
    ttl: num('ttl', 1),
    amp: int('amp', 0),
    directorySessions: int('directory-sessions', 0),
    stunRounds: int('stun', 0),
    soak: num('soak', 0),
    soakRate: num('soak-rate', 1),
    soakTtl: int('soak-ttl', 1),
    out: values.out,
  };
}
