// How many TURN credentials mintTurnCredential (src/relay/credentials.ts) makes per
// second on one core: one HMAC-SHA1 and a base64 per credential, the cost the
// tracker would pay per relay it hands out. A script, not part of `yarn bench`:
//
//   node --import tsx bench/turn-credentials.ts [seconds per round, default 1] [rounds, default 5]
//
// Prints one JSON line per round and a summary with the median.
import { mintTurnCredential } from '../src/relay/credentials.js';

const seconds = Number(process.argv[2] ?? 1);
const rounds = Number(process.argv[3] ?? 5);
const secret = 'a-static-auth-secret-of-ordinary-length';
const ids = Array.from({ length: 1024 }, (_, i) => `share${i.toString(36).padStart(7, '0')}`);

let sink = 0; // keeps the results alive, so nothing is optimised away
const round = (ms: number): number => {
  const now = Date.now();
  let n = 0;
  const start = performance.now();
  let end = start;
  while (end - start < ms) {
    for (let i = 0; i < 1000; i++) sink += mintTurnCredential(secret, ids[(n + i) & 1023]!, 300, now).credential.length;
    n += 1000;
    end = performance.now();
  }
  return n / ((end - start) / 1000);
};

round(200); // warm up
const rates: number[] = [];
for (let r = 0; r < rounds; r++) {
  const rate = round(seconds * 1000);
  rates.push(rate);
  console.log(JSON.stringify({ round: r + 1, credentialsPerSecond: Math.round(rate) }));
}
const sorted = [...rates].sort((a, b) => a - b);
console.log(JSON.stringify({
  median: Math.round(sorted[Math.floor(sorted.length / 2)]!),
  min: Math.round(sorted[0]!),
  max: Math.round(sorted.at(-1)!),
  microsecondsEach: Math.round((1e6 / sorted[Math.floor(sorted.length / 2)]!) * 100) / 100,
  node: process.version,
  sink: sink > 0,
}));
