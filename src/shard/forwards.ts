// Pushes that reach this shard from elsewhere: from another shard of this
// instance, from another instance (through the directory, checked by
// directory/messages.ts), or sent back by the main thread as failed (the requester
// is told why). The requester's replies go where this instance recorded the push
// came from, within the budget it carried; for a push from another instance, back
// to that instance as bare payloads, which it sends where it recorded.
//
// A forward that makes a handler throw costs that one forward (counted as
// drops{reason="bad_forward"}), never the shard and the sessions it holds.
import { Unpackr } from 'msgpackr';
import { replyPayloads } from '../wire/frame.js';
import type { PushForward } from '../wire/messages.js';
import { PUSH } from './counters.js';
import { WIRE_OVERHEAD_V4, WIRE_OVERHEAD_V6, wireOverheadOf } from './ip-table.js';
import { resolvePush } from './push.js';
import type { ShardContext } from './context.js';

const unpackr = new Unpackr({ useRecords: false });

export function handleForwards(s: ShardContext, packed: Uint8Array): void {
  let list: unknown;
  try { list = unpackr.unpack(packed); } catch { s.counters.drop('bad_forward'); return; }
  if (!Array.isArray(list)) { s.counters.drop('bad_forward'); return; }
  s.readTime();
  for (const f of list as PushForward[]) {
    const at = s.writer.position;
    try {
      handleForward(s, f);
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
  if (remote !== undefined) {
    // no address: the requester's instance sends the replies where it recorded the push came from
    r.fromForward(0, '', 0, remote.v6 ? WIRE_OVERHEAD_V6 : WIRE_OVERHEAD_V4, f.grant, s.remoteWriter);
  } else {
    r.fromForward(f.socket, f.address, f.port, wireOverheadOf(f.address), f.grant, s.writer);
  }
  if (f.failed !== undefined) r.error(f.failed);
  else resolvePush(s, f, -1);
  if (remote !== undefined) {
    // Always answered, if only with nothing (every reply over budget): the
    // requester's instance must not mistake silence for an owner that is gone.
    s.result(remote.from, remote.req, replyPayloads(s.remoteWriter.take()));
  }
}
