// What a request handler may use of its shard (shard.ts is the one implementation):
// the sessions, the per-IP budgets, the requester (where replies go, what they may
// cost), the counters, and the outbox for what leaves the shard besides replies.
import type { SessionKey } from '../auth/session-key.js';
import type { ErrorCode } from '../protocol/errors.js';
import type { Forward, PushForward, SessionState } from '../wire/messages.js';
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
  /** The tracker's session key: tokens, tags, path challenges (tokens.ts). */
  readonly key: SessionKey;
  /** The socket the request being handled came in on. */
  readonly socket: number;
  /** Reads the clock for the piece of work about to start. */
  readTime(): void;
  /** A push for a target in shard `shard` of this instance, sent with this batch's reply. */
  forward(shard: number, f: Forward): void;
  /** The request being handled goes to shard `shard` of this instance, raw, to be handled there as if it had arrived there. */
  forwardRequest(shard: number): void;
  /** A push whose target no shard here holds: the main thread asks the directory. */
  lookup(f: PushForward): void;
  /** The requester's replies to a push from another instance, for it to send. */
  result(from: string, req: string, replies: Uint8Array[]): void;
  /** The request being handled, raw, to the main thread: claim this token session from another instance (claims.ts). */
  claim(shareId: string): void;
  /** The answer to another instance's claim: the released session's state, or null. */
  handover(from: string, req: string, state: SessionState | null): void;
  /** While a claim's answer is handled: 'none' (no instance holds it) or the error the requester is told, if no session started; else null. */
  readonly claimAnswer: 'none' | ErrorCode | null;
}
