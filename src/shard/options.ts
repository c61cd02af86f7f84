// What a shard is told at start: the settings it uses (config.ts documents each)
// and its own share of the totals. Built on the main thread, cloned into the shard.
import type { Config } from '../config.js';
import { pointerRefreshMs } from '../directory/cadence.js';

export interface ShardOptions extends Pick<Config, 'shareIdLength' | 'announceReply' | 'maxMultiaddr' | 'maxDatagram' |
  'maxSessionsPerIp' | 'maxSessionsPerIpv6Prefix' | 'ipRate' | 'ipBurst' | 'pushRate' | 'pushBurst' | 'relayRate' | 'relayBurst'> {
  index: number;
  shards: number;
  ttlMs: number;
  /** How long a session lives until its first keep-alive (config announceTtl, at most the ttl). */
  announceTtlMs: number;
  /** this shard's share of the configured totals */
  maxSessions: number;
  maxTrackedIps: number;
  /** socket index -> 'udp4' | 'udp6', to write addresses the sending socket accepts */
  socketTypes: readonly ('udp4' | 'udp6')[];
  /** A session directory is configured: unknown push targets are looked up there, and every live session's pointer is kept fresh in it, each once per this many ms (0: no directory). */
  pointerRefreshMs: number;
  /**
   * With STUN NAT behaviour discovery (config stunOtherHost), the tracker's four
   * addresses by socket index: primary IP and port, primary IP and other port, other
   * IP and primary port, other IP and other port (io/open-io.ts stunEndpoints). Else empty.
   */
  stunEndpoints: readonly { address: string; port: number }[];
  /** The relay whose credentials this shard mints (config turnUrl), or null: none configured. */
  relay: RelayOptions | null;
  /** The IPs a push's relayed address may be on, canonical (relay/allowed.ts): config relayIps, or turnUrl's hosts. Empty: none is. */
  relayIps: readonly string[];
  /** The shard's clock in ms (performance.now() unless a test simulates time). */
  now?: () => number;
}

/** What a shard needs to mint relay credentials (relay/credentials.ts) and hand them out. */
export interface RelayOptions {
  urls: string[];
  /** the secret shared with coturn, read at start (config turnSecret or turnSecretFile) */
  secret: string;
  ttl: number;
  interval: number;
}

/**
 * Shard `index`'s options under `config`: the settings it uses, and its share of the
 * totals. `io`: the datagram I/O's sockets, by index. `turnSecret`: the secret
 * read at start, when a relay is configured. `relayIps`: the relays' IPs, worked out
 * at start (relay/allowed.ts relayIpsOf).
 */
export function shardOptions(config: Config, index: number, io: { socketTypes: readonly ('udp4' | 'udp6')[]; addresses: readonly { address: string; port: number }[] },
  turnSecret: string | null = null, relayIps: readonly string[] = []): ShardOptions {
  return {
    index,
    shards: config.shards,
    ttlMs: config.ttl * 1000,
    announceTtlMs: Math.min(config.announceTtl, config.ttl) * 1000,
    shareIdLength: config.shareIdLength,
    announceReply: config.announceReply,
    maxMultiaddr: config.maxMultiaddr,
    maxDatagram: config.maxDatagram, // bounds STUN responses (shard/stun.ts)
    socketTypes: io.socketTypes,
    stunEndpoints: config.stunOtherHost === '' ? [] : io.addresses.map(({ address, port }) => ({ address, port })),
    maxSessions: Math.ceil(config.maxSessions / config.shards),
    maxSessionsPerIp: config.maxSessionsPerIp, // exact: all of an IP's sessions live in one shard
    maxSessionsPerIpv6Prefix: config.maxSessionsPerIpv6Prefix, // per shard: a /64's addresses route to any shard (routing.ts hashes the whole IP)
    maxTrackedIps: Math.ceil(config.maxTrackedIps / config.shards),
    ipRate: config.ipRate,
    ipBurst: config.ipBurst,
    pushRate: config.pushRate,
    pushBurst: config.pushBurst,
    relayRate: config.relayRate,
    relayBurst: config.relayBurst,
    relay: config.turnUrl === '' || turnSecret === null ? null
      : { urls: config.turnUrl.split(',').map((u) => u.trim()), secret: turnSecret, ttl: config.turnTtl, interval: config.relayInterval },
    relayIps,
    pointerRefreshMs: config.directory === '' ? 0 : pointerRefreshMs(config.ttl),
  };
}
