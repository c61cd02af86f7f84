// What a request handler may use of its shard (shard.ts is the one implementation):
// the sessions, the per-IP budgets, the requester (where replies go, what they may
// cost), the counters, and the outbox for what leaves the shard besides replies.
import type { PushForward } from '../wire/messages.js';
import type { ReplyWriter } from '../wire/frame.js';
import type { ShardCounters } from './counters.js';
import type { DirectoryPointers } from './directory.js';
import type { IpTable } from './ip-table.js';
import type { ShardOptions } from './options.js';
import type { Requester } from './requester.js';
import type { Sessions } from './sessions.js';

export interface ShardContext {
  readonly opts: ShardOptions;
  readonly sessions: Sessions;
  readonly ips: IpTable;
  readonly requester: Requester;
  readonly counters: ShardCounters;
  readonly pointers: DirectoryPointers;
  /** The batch's reply records: requester replies, income, STUN responses. */
  readonly writer: ReplyWriter;
  /** Replies to a push from another instance: written here, sent by that instance. */
  readonly remoteWriter: ReplyWriter;
  /** Reads the clock for the piece of work about to start. */
  readTime(): void;
  /** A push for a target in shard `shard` of this instance, sent with this batch's reply. */
  forward(shard: number, f: PushForward): void;
  /** A push whose target no shard here holds: the main thread asks the directory. */
  lookup(f: PushForward): void;
  /** The requester's replies to a push from another instance, for it to send. */
  result(from: string, req: string, replies: Uint8Array[]): void;
}
