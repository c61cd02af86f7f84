// A shard's side of the session directory (src/directory/, with --directory): the
// pointer of every live session (shareId -> this instance, and what push reports),
// written when a session starts or changes what push reports, and refreshed at an
// even pace so that Redis sees each once per pointerRefreshMs (Redis cannot take
// a write per keep-alive: 1 M clients are 500 k keep-alives a second).
import { formatPeerAddr } from '../protocol/address.js';
import type { PointerWrite } from '../wire/messages.js';
import type { Sessions } from './sessions.js';

/** How often a shard writes its next slice of directory pointers (worker.ts). */
export const DIRECTORY_TICK_MS = 100;
/** Table slots re-registered per shard per directory tick after the directory came back: up to 50 k a second. */
const REREGISTER_PER_TICK = 5000;

export class DirectoryPointers {
  /** The next slot whose pointer is written, the pointers owed (a fraction), and a re-registration's remainder. */
  private cursor = 0;
  private credit = 0;
  private reregisterLeft = 0;

  /** `refreshMs` 0: no directory, nothing is written. */
  constructor(private readonly sessions: Sessions, private readonly refreshMs: number, private readonly emit: (p: PointerWrite) => void) {}

  get enabled(): boolean { return this.refreshMs > 0; }

  /** Queues this session's pointer (when there is a directory). */
  write(slot: number): void {
    if (this.refreshMs === 0) return;
    const v = this.sessions.view(slot);
    this.emit([v.shareId, formatPeerAddr(v.ip, v.port), v.multiaddr]);
  }

  /**
   * Called every DIRECTORY_TICK_MS: writes the pointers of the next live sessions
   * in slot order, as many as make every live session's pointer written once per
   * refreshMs at an even rate; after reregister(), every pointer again at up to
   * REREGISTER_PER_TICK.
   */
  tick(): void {
    if (this.refreshMs === 0) return;
    const { table, wheel } = this.sessions;
    // fractions carry over, so a small table is not refreshed faster than a big one
    this.credit += (table.size * DIRECTORY_TICK_MS) / this.refreshMs;
    let quota = Math.floor(this.credit);
    this.credit -= quota;
    if (this.reregisterLeft > 0) {
      const n = Math.min(this.reregisterLeft, REREGISTER_PER_TICK);
      this.reregisterLeft -= n;
      quota = Math.max(quota, n);
    }
    // At most one pass over the table per tick, however sparse it is.
    for (let scanned = 0; quota > 0 && scanned < table.capacity; scanned++) {
      const slot = this.cursor;
      this.cursor = slot + 1 >= table.capacity ? 0 : slot + 1;
      if (!wheel.isScheduled(slot)) continue; // every live slot is on the wheel, and only those
      this.write(slot);
      quota--;
    }
  }

  /** The directory lost its data (or was unreachable): write every live pointer again, paced. */
  reregister(): void {
    this.reregisterLeft = this.sessions.size;
  }
}
