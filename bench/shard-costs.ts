// What a request costs a shard, on one core: the shard's own code (the same as in
// production) driven directly with batches, as a shard thread runs them, so the
// figures are the shard's work alone (the main thread's UDP work is about the same
// for every request and is measured by the load tests). Side by side in one run:
//   pulse              {"action":"pulse"} from a proved session: the baseline
//   token pulse        {"action":"pulse","token":...} from a token session: the token
//                      checked (SipHash-2-4-128), the reply tagged (SipHash-2-4-64)
//   relay credentials  {"action":"relay"}: a fresh credential each (relayInterval 0),
//                      an HMAC-SHA1 and a base64, and the reply
//   relayed push       {"action":"push","shareId":...,"relay":"ip:port"}: the target's
//                      income carries the relayed address (the rendezvous message)
// and the minting function alone (relay/credentials.ts).
import { defaultConfig } from '../src/config.js';
import { mintTurnCredential } from '../src/relay/credentials.js';
import { shardOptions } from '../src/shard/options.js';
import { Shard } from '../src/shard/shard.js';
import { median } from './stats.js';
import { requestBatch } from '../test/helpers/batch.js';

export interface ShardCosts { rounds: number; perSecond: Record<'pulse' | 'tokenPulse' | 'relayCredentials' | 'relayedPush' | 'mint', number> }

const SESSIONS = 1024;
const SECRET = 'a-static-auth-secret-of-ordinary-length';

/** Requests per second the shard handles `b` at, over about `ms`. */
function rate(shard: Shard, b: Buffer, perBatch: number, ms: number): number {
  let n = 0;
  const start = performance.now();
  let end = start;
  while (end - start < ms) {
    shard.handleBatch(b, b.length);
    shard.finishBatch();
    n += perBatch;
    end = performance.now();
  }
  return n / ((end - start) / 1000);
}

export function runShardCosts(rounds = 3, ms = 700): ShardCosts {
  const config = {
    ...defaultConfig(), shards: 1, turnUrl: 'turn:203.0.113.20:3478', relayInterval: 0,
    relayRate: 1_000_000, relayBurst: 1_000_000, ipRate: 1_000_000, ipBurst: 1_000_000, pushRate: 1_000_000, pushBurst: 1_000_000,
  };
  const shard = new Shard(shardOptions(config, 0, { socketTypes: ['udp4'], addresses: [{ address: '0.0.0.0', port: 3000 }] }, SECRET));
  const ips = Array.from({ length: SESSIONS }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  // every session announces and proves, as a careful client does
  const announce = requestBatch(ips.map((ip) => ({ ip, port: 40000, payload: '{"action":"announce","pad":"xxxxxxxxxxxxxxxxxx"}' })));
  shard.handleBatch(announce, announce.length);
  const out = shard.finishBatch().out!;
  const ids: string[] = [];
  for (const m of Buffer.from(out).toString('latin1').matchAll(/"announceReceived","data":\{"shareId":"([^"]+)"/g)) ids.push(m[1]!);
  if (ids.length !== SESSIONS) throw new Error(`shard costs: ${ids.length} of ${SESSIONS} sessions announced`);
  const prove = requestBatch(ips.map((ip, i) => ({ ip, port: 40000, payload: `{"action":"pulse","shareId":"${ids[i]}"}` })));
  shard.handleBatch(prove, prove.length);
  shard.finishBatch();
  // as many token sessions, on IPs of their own, announced as the bundled client does (padded: its reply carries observed)
  const tokenIps = ips.map((_, i) => `10.200.${(i >> 8) & 255}.${i & 255}`);
  const tokenAnnounce = requestBatch(tokenIps.map((ip) => ({ ip, port: 40000, payload: '{"action":"announce","token":true,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}' })));
  shard.handleBatch(tokenAnnounce, tokenAnnounce.length);
  const tokens = [...Buffer.from(shard.finishBatch().out!).toString('latin1').matchAll(/"token":"([^"]+)"/g)].map((m) => m[1]!);
  if (tokens.length !== SESSIONS) throw new Error(`shard costs: ${tokens.length} of ${SESSIONS} token sessions announced`);

  const kinds = {
    pulse: requestBatch(ips.map((ip) => ({ ip, port: 40000, payload: '{"action":"pulse"}' }))),
    tokenPulse: requestBatch(tokenIps.map((ip, i) => ({ ip, port: 40000, payload: `{"action":"pulse","token":"${tokens[i]}"}` }))),
    relayCredentials: requestBatch(ips.map((ip) => ({ ip, port: 40000, payload: '{"action":"relay"}' }))),
    relayedPush: requestBatch(ips.map((ip, i) => ({ ip, port: 40000, payload: `{"action":"push","shareId":"${ids[(i + 1) % SESSIONS]}","relay":"203.0.113.20:49160"}` }))),
  };
  const got: Record<keyof ShardCosts['perSecond'], number[]> = { pulse: [], tokenPulse: [], relayCredentials: [], relayedPush: [], mint: [] };
  for (const b of Object.values(kinds)) rate(shard, b, SESSIONS, 100); // warm up
  const now = Date.now();
  for (let r = 0; r < rounds; r++) {
    for (const [kind, b] of Object.entries(kinds)) got[kind as keyof typeof kinds].push(rate(shard, b, SESSIONS, ms));
    let n = 0, sink = 0;
    const start = performance.now();
    while (performance.now() - start < ms) {
      for (let i = 0; i < 1000; i++) sink += mintTurnCredential(SECRET, ids[(n + i) & (SESSIONS - 1)]!, 600, now).credential.length;
      n += 1000;
    }
    if (sink > 0) got.mint.push(n / ((performance.now() - start) / 1000));
  }
  return { rounds, perSecond: { pulse: median(got.pulse), tokenPulse: median(got.tokenPulse), relayCredentials: median(got.relayCredentials), relayedPush: median(got.relayedPush), mint: median(got.mint) } };
}

export function renderShardCosts(r: ShardCosts): string {
  const k = (n: number) => `${(n / 1000).toFixed(0)} k`;
  const us = (n: number) => (1e6 / n).toFixed(2);
  const p = r.perSecond;
  return [
    `What a request costs a shard, on one core: the production code driven directly, ${r.rounds} rounds, medians; 1,024 proved sessions and 1,024 token sessions.`,
    '',
    '| work | per second | µs each | ÷ pulse |',
    '| --- | ---: | ---: | ---: |',
    `| pulse (baseline) | ${k(p.pulse)} | ${us(p.pulse)} | 1.00 × |`,
    `| token pulse: \`{"action":"pulse","token":"…"}\` → the token checked (SipHash-2-4-128), a tagged reply (SipHash-2-4-64) | ${k(p.tokenPulse)} | ${us(p.tokenPulse)} | ${(p.tokenPulse / p.pulse).toFixed(2)} × |`,
    `| relay credentials: \`{"action":"relay"}\` → relayReceived, a fresh credential each | ${k(p.relayCredentials)} | ${us(p.relayCredentials)} | ${(p.relayCredentials / p.pulse).toFixed(2)} × |`,
    `| relayed push: push carrying \`relay\` → pushReceived, and income with the relayed address | ${k(p.relayedPush)} | ${us(p.relayedPush)} | ${(p.relayedPush / p.pulse).toFixed(2)} × |`,
    `| minting alone (relay/credentials.ts: HMAC-SHA1, base64) | ${k(p.mint)} | ${us(p.mint)} | |`,
  ].join('\n');
}
