// What reaches this shard from elsewhere: pushes from another shard of this
// instance, from another instance (through the directory, checked by
// directory/messages.ts), or sent back by the main thread as failed (the requester
// is told why); token requests another shard of this instance received for a
// session of this one (handled as if they had arrived here); and, from the main
// thread, claims between instances (claims.ts): a claim's answer with its request,
// and another instance's claim of a session here. The requester's
// replies go where this instance recorded the request came from, within the budget
// it carried; for a push from another instance, back to that instance as bare
// payloads, which it sends where it recorded.
//
// A forward that makes a handler throw costs that one forward (counted as
// drops{reason="bad_forward"}), never the shard and the sessions it holds.
import { Unpackr } from 'msgpackr';
import { replyPayloads } from '../wire/frame.js';
import type { ClaimForward, Forward, PushForward, ReleaseForward } from '../wire/messages.js';
import { release } from './claims.js';
import { PUSH } from './counters.js';
import { WIRE_OVERHEAD_V4, WIRE_OVERHEAD_V6, wireOverheadOf } from './ip-table.js';
import { resolvePush } from './push.js';
import type { ShardContext } from './context.js';

const unpackr = new Unpackr({ useRecords: false });

type RequestForwardLike = Extract<Forward, { request: Uint8Array }>;

export function handleForwards(s: ShardContext & { handleForwardedRequest(f: RequestForwardLike): void; handleClaimAnswer(f: ClaimForward): void }, packed: Uint8Array): void {
  let list: unknown;
  try { list = unpackr.unpack(packed); } catch { s.counters.drop('bad_forward'); return; }
  if (!Array.isArray(list)) { s.counters.drop('bad_forward'); return; }
  s.readTime();
  for (const any of list as Forward[]) {
    const at = s.writer.position;
    try {
      // A raw request comes from a shard of this instance only (or, with a claim's
      // outcome, from the main thread): anything from another instance is a push or a
      // release (it has `remote`), whatever else the message holds.
      if ('request' in any && (any as { remote?: unknown }).remote === undefined) {
        if ('outcome' in any) s.handleClaimAnswer(any);
        else s.handleForwardedRequest(any);
      } else if ('request' in any) s.counters.drop('bad_forward');
      else if ('release' in any) release(s, any as ReleaseForward);
      else handleForward(s, any as PushForward);
    } catch {
      // what this forward began writing goes too: the batch's other records stay whole
      s.writer.cancel(at);
      s.remoteWriter.cancel(0);
      s.counters.drop('bad_forward');
    }
  }
}

function handleForward(s: ShardContext, f: PushForward): void {
  const r = s.requester;
  const remote = f.remote;
  r.action = PUSH; r.dialect = f.dialect;
  const cap = typeof f.cap === 'number' && f.cap >= 0 ? Math.min(f.cap, f.grant < 0 ? Infinity : f.grant) : f.grant;
  if (remote !== undefined) {
    // no address: the requester's instance sends the replies where it recorded the push came from
    r.fromForward(0, '', 0, remote.v6 ? WIRE_OVERHEAD_V6 : WIRE_OVERHEAD_V4, f.grant, s.remoteWriter, cap);
  } else {
    r.fromForward(f.socket, f.address, f.port, wireOverheadOf(f.address), f.grant, s.writer, cap);
  }
  if (f.tagged === true && typeof f.requester?.shareId === 'string') r.tagWith(s.key.tagKeyOf(f.requester.shareId));
  if (f.failed !== undefined) r.error(f.failed);
  else resolvePush(s, f, -1);
  if (remote !== undefined) {
    // Always answered, if only with nothing (every reply over budget): the
    // requester's instance must not mistake silence for an owner that is gone.
    s.result(remote.from, remote.req, replyPayloads(s.remoteWriter.take()));
  }
}
