// The session directory on Redis (or Valkey), as one tracker instance sees it.
//
// Redis holds only a pointer per session, never its keep-alives:
//   sobani:s:<shareId>  ->  "<instanceId>\t<peeraddr>\t<multiaddr>"   (SET ... PX)
// written when a session is created, regenerated or overridden, and refreshed by
// the shards about once per pointer ttl / 3 (shard.ts pointerRefreshMs), pipelined.
// A pointer expires by itself, so a dead instance's pointers vanish.
// Each instance listens on its own pub/sub channel, sobani:i2:<instanceId>, for
// pushes to its sessions and for the answers to its own (remote-pushes.ts).
//
// Nothing on the hot path waits for Redis: writes are fire-and-forget, and a
// lookup fails at once while Redis is known to be down (offline queue off) or
// after `timeoutMs` when it stalls. When Redis answers again after a failure (a
// restart included, empty or not), onRecovered() asks the shards to write every
// live pointer again.
import { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import type { PointerWrite } from '../wire/messages.js';

export type DirectoryState = 'connecting' | 'up' | 'down';

export interface DirectoryCounters {
  lookups: { found: number; missing: number; error: number };
  /** pointers written (SET), and writes that failed */
  writes: number;
  writeErrors: number;
  /** messages published to other instances, and those no instance was listening for */
  published: number;
  publishedToNobody: number;
  /** failures by reason: timeout, connection, ... */
  errors: Record<string, number>;
}

const KEY = (shareId: string): string => `sobani:s:${shareId}`;
export const CHANNEL = (instanceId: string): string => `sobani:i2:${instanceId}`;
/** How often the connection is checked (PING) while nothing else is said. */
const PING_MS = 1000;

export class RedisDirectory {
  state: DirectoryState = 'connecting';
  readonly counters: DirectoryCounters = {
    lookups: { found: 0, missing: 0, error: 0 }, writes: 0, writeErrors: 0, published: 0, publishedToNobody: 0, errors: {},
  };
  private readonly commands: Redis;
  private readonly subscriber: Redis;
  private readonly pinger: NodeJS.Timeout;
  /** A failure was seen since the last time every pointer was written: re-register once Redis answers. */
  private dirty = false;
  private closed = false;

  /** The directory as logs name it: its URL with any password redacted. */
  private readonly shown: string;

  constructor(
    /** `password`, when given, is the one from --directory-password-file; `shown` is the URL with any password redacted. */
    target: { url: string; password: string | undefined; shown: string },
    readonly instanceId: string,
    /** PX of every pointer */
    private readonly pointerTtlMs: number,
    /** directoryTimeout: a whole remote push's bound; Redis itself gets half of it */
    timeoutMs: number,
    private readonly log: Logger,
    onMessage: (message: Buffer) => void,
    private readonly onRecovered: () => void,
  ) {
    const options = {
      lazyConnect: true,
      // Never queue behind a dead connection: fail at once, answer the client with an error.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      // Half the push's bound: a stalled Redis is told apart (DIRECTORY_UNAVAILABLE)
      // from an owner that does not answer (PEER_UNREACHABLE).
      commandTimeout: Math.max(25, Math.floor(timeoutMs / 2)),
      retryStrategy: (times: number) => Math.min(100 * times, 1000),
      connectionName: `sobani-tracker:${instanceId}`,
      // (a password in the URL wins: ioredis reads the URL first; the tracker refuses both)
      ...(target.password !== undefined ? { password: target.password } : {}),
    };
    this.shown = target.shown;
    const url = target.url;
    this.commands = new Redis(url, options);
    // The subscriber may queue its SUBSCRIBE until the first connection; ioredis
    // subscribes again by itself after every reconnect.
    this.subscriber = new Redis(url, { ...options, enableOfflineQueue: true, commandTimeout: undefined, connectionName: `sobani-tracker:${instanceId}:sub` });
    for (const [role, client] of [['commands', this.commands], ['subscriber', this.subscriber]] as const) {
      client.on('error', (err: Error) => this.failed(`${role}: ${err.message}`));
      client.on('close', () => { if (!this.closed) this.failed(`${role}: connection closed`); });
    }
    this.commands.on('ready', () => this.check());
    this.subscriber.on('messageBuffer', (_channel: Buffer, message: Buffer) => onMessage(message));
    this.pinger = setInterval(() => this.check(), PING_MS);
    this.pinger.unref();
  }

  /** Connects in the background: a tracker starts and serves whether Redis is there or not. */
  start(): void {
    this.commands.connect().catch(() => {});
    this.subscriber.connect().catch(() => {});
    this.subscriber.subscribe(CHANNEL(this.instanceId)).catch((err: Error) => this.failed(`subscribe: ${err.message}`));
  }

  private failed(reason: string): void {
    const key = /timed out/i.test(reason) ? 'timeout' : 'connection';
    this.counters.errors[key] = (this.counters.errors[key] ?? 0) + 1;
    this.dirty = true;
    if (this.state !== 'down') {
      this.log.warn({ directory: this.shown, reason }, 'session directory unreachable: pushes to other instances fail with DIRECTORY_UNAVAILABLE until it is back');
    }
    this.state = 'down';
  }

  private check(): void {
    if (this.closed) return;
    this.commands.ping().then(() => {
      const was = this.state;
      this.state = 'up';
      if (was !== 'up') this.log.info({ directory: this.shown, instanceId: this.instanceId }, 'session directory reachable');
      if (this.dirty || was === 'connecting') {
        this.dirty = false;
        this.onRecovered(); // the data may be gone (a restart) or stale: write every pointer again
      }
    }, (err: Error) => this.failed(`ping: ${err.message}`));
  }

  /** Writes pointers, pipelined, without waiting. */
  writePointers(pointers: readonly PointerWrite[]): void {
    if (this.state !== 'up') { this.dirty = true; return; } // re-registered when it is back
    const p = this.commands.pipeline();
    for (const [shareId, peeraddr, multiaddr] of pointers) {
      p.set(KEY(shareId), `${this.instanceId}\t${peeraddr}\t${multiaddr ?? ''}`, 'PX', this.pointerTtlMs);
    }
    this.counters.writes += pointers.length;
    p.exec().then((results) => {
      const errors = results?.filter(([err]) => err !== null).length ?? pointers.length;
      if (errors > 0) { this.counters.writeErrors += errors; this.dirty = true; }
    }, (err: Error) => { this.counters.writeErrors += pointers.length; this.failed(`write: ${err.message}`); });
  }

  /** The instance that holds shareId, or null if no pointer names one. Rejects when Redis cannot answer. */
  async lookup(shareId: string): Promise<string | null> {
    try {
      const value = await this.commands.get(KEY(shareId));
      if (value === null) { this.counters.lookups.missing++; return null; }
      this.counters.lookups.found++;
      return value.slice(0, value.indexOf('\t'));
    } catch (err) {
      this.counters.lookups.error++;
      this.failed(`lookup: ${(err as Error).message}`);
      throw err;
    }
  }

  /** Publishes to another instance's channel; resolves with how many listened (0: it is gone). */
  async publish(instanceId: string, message: Uint8Array): Promise<number> {
    try {
      const receivers = await this.commands.publish(CHANNEL(instanceId), Buffer.from(message.buffer, message.byteOffset, message.byteLength));
      this.counters.published++;
      if (receivers === 0) this.counters.publishedToNobody++;
      return receivers;
    } catch (err) {
      this.failed(`publish: ${(err as Error).message}`);
      throw err;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.pinger);
    this.commands.disconnect();
    this.subscriber.disconnect();
  }
}
