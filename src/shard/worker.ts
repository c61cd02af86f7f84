// The shard thread's entry: piscina runs serve() once per shard, and it serves
// the MessagePort it is handed until the main thread closes it. The shard's state
// lives for as long as this task runs.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { MessagePort } from 'node:worker_threads';
import { Packr } from 'msgpackr';
import type { ExportedPart, SessionBlock, ShardStats, ToShard } from '../wire/messages.js';
import { DIRECTORY_TICK_MS } from './directory.js';
import type { ShardOptions } from './options.js';
import { Shard } from './shard.js';

export interface ServeTask {
  port: MessagePort;
  options: ShardOptions;
}

export default function serve({ port, options }: ServeTask): Promise<{ peers: number }> {
  const shard = new Shard(options);
  shard.onInternalError = (err) => port.postMessage({ t: 'log', level: 'error', msg: 'request handler threw', err: String((err as Error)?.stack ?? err) });
  // Self-describing maps (no shared record structures): the reader may be another process, later.
  const packr = new Packr({ useRecords: false });
  const loopDelay = monitorEventLoopDelay({ resolution: 5 });
  loopDelay.enable();

  // Expiry: one wheel tick per tickMs; a mass expiry continues over setImmediate
  // turns (EXPIRY_BUDGET each) so batches keep being served in between.
  let expiring = false;
  const expireSome = (): void => {
    if (shard.expire()) expiring = false;
    else setImmediate(expireSome);
  };
  const ticker = setInterval(() => {
    if (!expiring) { expiring = true; expireSome(); }
  }, shard.tickMs);

  // Directory pointers: a slice of the table every tick; what piles up between
  // batches (refreshes, say) goes out on its own.
  const directoryTicker = options.pointerRefreshMs > 0 ? setInterval(() => {
    shard.directoryTick();
    const ext = shard.takeExtras();
    if (ext !== null) port.postMessage({ t: 'x', ext }, [ext.buffer as ArrayBuffer]);
  }, DIRECTORY_TICK_MS) : null;

  port.on('message', (m: ToShard) => {
    if (m.t === 'b') {
      if (m.buf !== null) shard.handleBatch(new Uint8Array(m.buf, 0, m.len), m.len);
      if (m.fwd !== null) for (const f of m.fwd) shard.handleForwards(f);
      const { out, fwd, ext } = shard.finishBatch();
      const transfer: ArrayBuffer[] = [];
      if (m.buf !== null) transfer.push(m.buf); // hand the request buffer back for reuse
      if (out !== null) transfer.push(out.buffer as ArrayBuffer);
      port.postMessage({ t: 'b', buf: m.buf, out, fwd, ext, peers: shard.peers }, transfer);
      return;
    }
    let result: unknown;
    const transfer: ArrayBuffer[] = [];
    switch (m.op) {
      case 'ping': result = 'pong'; break;
      case 'fill': shard.fill(m.arg as number); result = shard.peers; break;
      case 'stats':
        result = {
          index: options.index,
          peers: shard.peers,
          tableBytes: shard.table.bytes,
          loopDelayMaxMs: loopDelay.max / 1e6,
          counters: shard.counters.snapshot(),
        } satisfies ShardStats;
        if (m.arg === true) loopDelay.reset();
        break;
      case 'export': {
        // pack() returns a view into msgpackr's own buffer: copy it, then hand the copy over
        const block = shard.exportSessions();
        const packed = Uint8Array.prototype.slice.call(packr.pack(block));
        transfer.push(packed.buffer);
        result = { count: block.count, packed } satisfies ExportedPart;
        break;
      }
      case 'import': result = shard.importSessions(m.arg as SessionBlock); break;
      case 'reregister': shard.reregister(); result = 'ok'; break;
      case 'stall': {
        // Ops/test hook: a shard that stops answering, as a runaway handler would make it.
        const until = Date.now() + (m.arg as number);
        while (Date.now() < until) { /* spin */ }
        result = 'stalled';
        break;
      }
    }
    port.postMessage({ t: 'c', id: m.id, result }, transfer);
  });

  return new Promise((resolve) => {
    port.once('close', () => {
      clearInterval(ticker);
      if (directoryTicker !== null) clearInterval(directoryTicker);
      loopDelay.disable();
      resolve({ peers: shard.peers });
    });
  });
}
