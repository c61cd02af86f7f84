// Pushes that reach this shard from elsewhere: from another shard of this
// instance, from another instance (through the directory), or sent back by the
// main thread as failed (the requester is told why). The requester's replies go
// where the push says, within the budget it carried.
import { Unpackr } from 'msgpackr';
import type { PushForward } from '../wire/messages.js';
import { PUSH } from './counters.js';
import { wireOverheadOf } from './ip-table.js';
import { resolvePush } from './push.js';
import type { ShardContext } from './context.js';

const unpackr = new Unpackr({ useRecords: false });

export function handleForwards(s: ShardContext, packed: Uint8Array): void {
  let list: PushForward[];
  try { list = unpackr.unpack(packed) as PushForward[]; } catch { s.counters.drop('bad_forward'); return; }
  s.readTime();
  const r = s.requester;
  for (const f of list) {
    const remote = f.remote !== undefined;
    r.action = PUSH; r.dialect = f.dialect;
    r.fromForward(f.socket, f.address, f.port, wireOverheadOf(f.address), f.grant, remote ? s.remoteWriter : s.writer);
    if (f.failed !== undefined) r.error(f.failed);
    else resolvePush(s, f, -1);
    if (remote) {
      // Always answered, if only with nothing (every reply over budget): the
      // requester's instance must not mistake silence for an owner that is gone.
      s.result(f.remote!.from, f.remote!.req, s.remoteWriter.take() ?? new Uint8Array(0));
    }
  }
}
