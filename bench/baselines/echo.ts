// The ceiling: a bare node:dgram server that sends every datagram straight back.
// No parsing, no state. Whatever a Node UDP server does per datagram, it can't
// do less than this. Buffers are raised the way a tuned server would.
import dgram from 'node:dgram';
import { serveBench } from '../child-ipc.js';

const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
socket.on('error', (err) => console.error('echo:', err.message));
socket.on('message', (msg, rinfo) => {
  socket.send(msg, rinfo.port, rinfo.address);
});
socket.bind(0, '127.0.0.1', () => {
  serveBench({
    port: socket.address().port,
    stats: () => ({ peers: 0 }),
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  });
});
