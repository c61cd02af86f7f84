// The baseline: the sobani tracker a user would write in an afternoon.
// One thread, JSON.parse per datagram, a Map of session objects keyed by
// "ip:port", JSON.stringify per reply, a sweep for expiry. Written plainly:
// not slowed down on purpose, not optimised either.
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { serveBench } from '../child-ipc.js';

const TTL_MS = 5 * 60 * 1000;

interface Session {
  ip: string;
  port: number;
  shareId: string;
  lastSeen: number;
}

const sessions = new Map<string, Session>(); // "ip:port" -> session
const byShareId = new Map<string, Session>();

const socket = dgram.createSocket('udp4');

function reply(message: unknown, port: number, address: string): void {
  socket.send(JSON.stringify(message), port, address);
}

socket.on('error', (err) => console.error('naive-tracker:', err.message));

socket.on('message', (msg, rinfo) => {
  let req: { action?: unknown; shareId?: unknown };
  try {
    req = JSON.parse(msg.toString('utf8'));
  } catch {
    return;
  }
  if (typeof req !== 'object' || req === null) return;
  const key = `${rinfo.address}:${rinfo.port}`;

  switch (req.action) {
    case 'announce': {
      const old = sessions.get(key);
      if (old) byShareId.delete(old.shareId);
      const session = { ip: rinfo.address, port: rinfo.port, shareId: randomBytes(4).toString('hex'), lastSeen: Date.now() };
      sessions.set(key, session);
      byShareId.set(session.shareId, session);
      reply({ action: 'announceReceived', data: { shareId: session.shareId } }, rinfo.port, rinfo.address);
      break;
    }
    case 'pulse': {
      const session = sessions.get(key);
      if (session) session.lastSeen = Date.now();
      reply(
        { action: 'pulseReceived', data: { status: session ? '0' : '1', overriden: 'false', shareId: session?.shareId } },
        rinfo.port,
        rinfo.address,
      );
      break;
    }
    case 'push': {
      const target = typeof req.shareId === 'string' ? byShareId.get(req.shareId) : undefined;
      if (target) reply({ action: 'pushReceived', data: { peeraddr: `${target.ip}:${target.port}` } }, rinfo.port, rinfo.address);
      break;
    }
  }
});

setInterval(() => {
  const now = Date.now();
  for (const [key, session] of sessions) {
    if (now - session.lastSeen > TTL_MS) {
      sessions.delete(key);
      byShareId.delete(session.shareId);
    }
  }
}, 10_000).unref();

socket.bind(0, '127.0.0.1', () => {
  serveBench({
    port: socket.address().port,
    stats: () => ({ peers: sessions.size }),
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  });
});
