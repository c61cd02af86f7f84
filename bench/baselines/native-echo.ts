// The kernel's ceiling: a C echo server (bench/native/bench.c) that receives with
// recvmmsg and sends every datagram straight back with sendmmsg, on one thread.
// No JS runs per datagram. What any server on one socket and one core can do here.
import { nativeBench } from '../loadgen/native.js';
import { serveBench } from '../child-ipc.js';

const bench = nativeBench();
if (bench instanceof Error) throw bench;
const echo = new bench.EchoServer({ host: '127.0.0.1', port: 0, recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
serveBench({
  port: echo.address().port,
  stats: () => ({ peers: 0 }),
  close: () => echo.close(),
});
