// Child of test/send-pressure.test.ts, run inside the sending network namespace:
//   node --import tsx test/helpers/send-burst.ts <addon> '<spec JSON>'
// spec: { host, to, port, batches, perBatch, payload (bytes), everyMs, sendBufferSize, loopback? }
// One UdpSocket of the addon, bound to `host` with a small send buffer, is handed
// `batches` reply batches of `perBatch` SEND_TO records for to:port, as a tracker
// under load would: all at once (everyMs 0) or one every `everyMs` while the queue
// drains. Each payload is "#<seq>." then a filler byte that depends on seq, so the
// receiver can tell a damaged datagram. Prints its stats after the first
// sendReplies() and once its send queue is empty again, as one JSON line.
// With `loopback: n`, the UdpSocket has a second endpoint on 127.0.0.1, and right
// after the first batch (socket 0's queue full) n SEND_TOs leave from socket 1 to a
// dgram socket of this process: the queue is per socket, so they go at once.
import dgram from 'node:dgram';
import { createRequire } from 'node:module';
import type { NativeUdp } from '../../src/io/native-io.js';

interface Spec { host: string; to: string; port: number; batches: number; perBatch: number; payload: number; everyMs: number; sendBufferSize: number; loopback?: number }
const [file, specJson] = process.argv.slice(2);
const spec = JSON.parse(specJson!) as Spec;
const addon = createRequire(import.meta.url)(file!) as NativeUdp;
const sock = new addon.UdpSocket({
  endpoints: [{ host: spec.host, port: 0 }, ...(spec.loopback ? [{ host: '127.0.0.1', port: 0 }] : [])], recvBufferSize: 0, sendBufferSize: spec.sendBufferSize, maxDatagram: 1024,
  tooLargeReply: Buffer.from('x'), shards: 1, state: new Int32Array(2), onBatch: () => null, onReceived: () => {},
});

let seq = 0;
function batch(): Buffer {
  const parts: Buffer[] = [];
  const a = Buffer.from(spec.to, 'latin1');
  for (let i = 0; i < spec.perBatch; i++) {
    const r = Buffer.alloc(7 + a.length + spec.payload, 97 + (seq % 26));
    r[0] = 1; // SEND_TO, socket 0
    r[1] = 0;
    r.writeUInt16BE(spec.port, 2);
    r[4] = a.length;
    a.copy(r, 5);
    r.writeUInt16BE(spec.payload, 5 + a.length);
    r.write(`#${seq++}.`, 7 + a.length, 'latin1');
    parts.push(r);
  }
  return Buffer.concat(parts);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let sentNow = sock.sendReplies(batch(), null, 0);
const afterFirst = sock.stats();
let loopback: { sentNow: number; queueDepthThen: number; blockedCalls: number; received: number } | undefined;
if (spec.loopback) {
  const rx = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
  let received = 0;
  rx.on('message', () => { received++; });
  await new Promise<void>((r) => rx.bind(0, '127.0.0.1', r));
  const records = Buffer.concat(Array.from({ length: spec.loopback }, () => {
    const r = Buffer.alloc(7 + 9 + 100, 0x2e);
    r[0] = 1; r[1] = 1; // SEND_TO from socket 1
    r.writeUInt16BE(rx.address().port, 2); r[4] = 9; r.write('127.0.0.1', 5, 'latin1'); r.writeUInt16BE(100, 14);
    return r;
  }));
  const before = sock.stats();
  const now = sock.sendReplies(records, null, 0);
  const after = sock.stats();
  while (received < now) await sleep(5);
  rx.close();
  loopback = { sentNow: now, queueDepthThen: before.sendQueueDepth, blockedCalls: after.sendBlockedCalls - before.sendBlockedCalls, received };
}
for (let i = 1; i < spec.batches; i++) {
  if (spec.everyMs > 0) await sleep(spec.everyMs);
  sentNow += sock.sendReplies(batch(), null, 0);
}
// until the queue is empty: the slow link sets the pace, the bound only ends a broken run
const until = Date.now() + 120_000;
while (sock.stats().sendQueueDepth > 0 && Date.now() < until) await sleep(5);
const end = sock.stats();
sock.close();
process.stdout.write(`${JSON.stringify({ attempted: seq, sentNow, afterFirst, end, loopback })}\n`);
