// Pushes that reach this shard from elsewhere: from another shard of this
// instance, from another instance (through the directory), or sent back by the
// main thread as failed (the requester is told why). The requester's replies go
// where the push says, within the budget it carried.
import { Unpackr } from 'msgpackr';
import type { Forward, PushForward } from '../wire/messages.js';
import { PUSH } from './counters.js';
import { wireOverheadOf } from './ip-table.js';
import { resolvePush } from './push.js';
import type { ShardContext } from './context.js';

const unpackr = new Unpackr({ useRecords: false });

type RequestForwardLike = Extract<Forward, { request: Uint8Array }>;

export function handleForwards(s: ShardContext & { handleForwardedRequest(f: RequestForwardLike): void }, packed: Uint8Array): void {
  let list: Forward[];
  try { list = unpackr.unpack(packed) as Forward[]; } catch { s.counters.drop('bad_forward'); return; }
  s.readTime();
  const r = s.requester;
  for (const any of list) {
    // A raw request comes from a shard of this instance only: anything from another
    // instance is a push (it has `remote`), whatever else the message holds.
    if ('request' in any && (any as { remote?: unknown }).remote === undefined) { s.handleForwardedRequest(any); continue; }
    if ('request' in any) { s.counters.drop('bad_forward'); continue; }
    const f: PushForward = any;
    const remote = f.remote !== undefined;
    r.action = PUSH; r.dialect = f.dialect;
    r.fromForward(f.socket, f.address, f.port, wireOverheadOf(f.address), f.grant, remote ? s.remoteWriter : s.writer,
      typeof f.cap === 'number' && f.cap >= 0 ? Math.min(f.cap, f.grant < 0 ? Infinity : f.grant) : f.grant);
    if (f.tagged === true && typeof f.requester?.shareId === 'string') r.tagWith(s.key.tagKeyOf(f.requester.shareId));
    if (f.failed !== undefined) r.error(f.failed);
    else resolvePush(s, f, -1);
    if (remote) {
      // Always answered, if only with nothing (every reply over budget): the
      // requester's instance must not mistake silence for an owner that is gone.
      s.result(f.remote!.from, f.remote!.req, s.remoteWriter.take() ?? new Uint8Array(0));
    }
  }
}
