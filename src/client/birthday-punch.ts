// The birthday punch, for a pair where one NAT maps each destination to its own
// port ("hard": address- or address-and-port-dependent mapping, a symmetric NAT)
// and the other maps endpoint-independently ("easy"). Tailscale and hyperdht use
// the same idea.
//
// The hard side cannot know which public port its NAT will give a socket, but it
// can open many: it sends from HARD_SOCKETS sockets to the easy side's public
// address, and each opens a mapping that accepts datagrams from exactly that
// address. The easy side's mapping is the one the tracker saw, so it sprays probes
// from its session socket to random ports of the hard side's IP, at a bounded rate,
// until one lands on an open mapping: with 256 mappings among 64,512 ports, 1,024
// probes find one with probability 1 - (1 - 256/64512)^1024, about 98 %. The
// socket that got through answers, and carries the connection; the others close.
//
// Both sides start at once: each begins on the push or income the tracker sends
// both in the same moment. Neither sprays an address that has not proved it
// receives (peerVerified), nor on the word of a message it could not authenticate
// (no tag under our token: a forged income from the tracker's address can claim
// peerVerified): either would aim those probes at a victim. Such a peer only gets
// its address probed a few times (peer-path.ts).
import dgram, { type RemoteInfo, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import { maySpray, probe, probePeer, probeSender, socketPath, takeProbe, type PeerPath, type PunchContext } from './peer-path.js';

export interface BirthdayOptions {
  /** Sockets the hard side opens. Default 256. */
  hardSockets?: number;
  /** Probes the easy side sends in all. Default 4096 (1,024 find one of 256 mappings 98 % of the time). */
  easyProbes?: number;
  /** Probes the easy side sends per second. Default 1000. */
  easyRate?: number;
}

/** The ports a NAT picks from. */
const FIRST_PORT = 1024;
const PORTS = 65536 - FIRST_PORT;
/** How often each of the hard side's sockets sends again (a lost first datagram, a mapping kept open). */
const HARD_RESEND_MS = 1000;

/** The easy side: spray random ports of the hard side's IP from the session socket. */
export function birthdayEasy(ctx: PunchContext, opts: BirthdayOptions = {}): Promise<PeerPath> {
  const { peer } = ctx;
  return new Promise((resolve) => {
    const knock = probe(ctx.myShareId);
    // also the address the tracker saw, as plain probes (a few only if unproven)
    const stopPlain = probePeer(ctx);
    let spray: NodeJS.Timeout | undefined;
    if (maySpray(peer)) {
      const total = Math.min(opts.easyProbes ?? 4096, PORTS);
      const rate = opts.easyRate ?? 1000;
      const ports = shuffledPorts();
      const started = performance.now();
      let sent = 0;
      const tick = (): void => {
        const due = Math.min(total, Math.ceil(((performance.now() - started) / 1000) * rate));
        for (; sent < due && takeProbe(ctx.probes); sent++) ctx.send(knock, peer.host, ports[sent]!);
        if (sent >= total) clearInterval(spray);
      };
      spray = setInterval(tick, 10);
      tick();
    }
    const stop = (): void => { stopPlain(); clearInterval(spray); stopListening(); };
    // Any port of the hard side's IP: its NAT chose one we could not know.
    const stopListening = ctx.messages((msg, from) => {
      if (from.address !== peer.host || (peer.shareId !== undefined && probeSender(msg) !== peer.shareId && from.port !== peer.port)) return;
      stop();
      ctx.signal.removeEventListener('abort', stop);
      ctx.send(knock, from.address, from.port); // so that side opens too, if it has not heard us yet
      resolve(socketPath('direct', ctx.send, from, ctx.clientMessages));
    });
    ctx.signal.addEventListener('abort', stop, { once: true });
  });
}

/** The hard side: many sockets, each sending to the easy side's address; the first one it answers wins. */
export function birthdayHard(ctx: PunchContext, opts: BirthdayOptions = {}): Promise<PeerPath> {
  const { peer } = ctx;
  return new Promise((resolve) => {
    if (!maySpray(peer)) {
      // an unproven address, or one named by a message we could not authenticate,
      // gets a few probes from the session socket, never a socket spray
      const stopProbing = probePeer(ctx);
      const stopListening = ctx.messages((msg, from) => {
        if (from.address !== peer.host || from.port !== peer.port) return;
        stopProbing(); stopListening();
        resolve(socketPath('direct', ctx.send, from, ctx.clientMessages));
      });
      ctx.signal.addEventListener('abort', () => { stopProbing(); stopListening(); }, { once: true });
      return;
    }
    const knock = probe(ctx.myShareId);
    const type = isIP(peer.host) === 6 ? 'udp6' : 'udp4';
    const sockets: Socket[] = [];
    let winner: Socket | null = null;
    const closeAll = (keep: Socket | null): void => {
      clearInterval(resend);
      for (const s of sockets) if (s !== keep) s.close();
    };
    const sendAll = (): void => {
      for (const s of sockets) if (takeProbe(ctx.probes)) s.send(knock, peer.port, peer.host, () => undefined);
    };
    for (let i = 0; i < (opts.hardSockets ?? 256); i++) {
      const s = dgram.createSocket(type);
      s.on('error', () => undefined);
      s.on('message', (msg: Buffer, from: RemoteInfo) => {
        if (winner !== null || from.address !== peer.host) return;
        if (peer.shareId !== undefined && probeSender(msg) !== peer.shareId && from.port !== peer.port) return;
        winner = s;
        ctx.signal.removeEventListener('abort', abort);
        closeAll(s);
        s.send(knock, from.port, from.address, () => undefined); // the easy side opens on this
        const listeners = new Set<(m: Buffer, f: RemoteInfo) => void>();
        s.on('message', (m: Buffer, f: RemoteInfo) => { for (const l of listeners) l(m, f); });
        const subscribe = (fn: (m: Buffer, f: RemoteInfo) => void): (() => void) => { listeners.add(fn); return () => listeners.delete(fn); };
        resolve(socketPath('direct', (m, a, p) => s.send(m, p, a, () => undefined), from, subscribe, () => s.close()));
      });
      s.bind(0, () => { if (takeProbe(ctx.probes)) s.send(knock, peer.port, peer.host, () => undefined); });
      sockets.push(s);
    }
    const resend = setInterval(sendAll, HARD_RESEND_MS);
    const abort = (): void => closeAll(null);
    ctx.signal.addEventListener('abort', abort, { once: true });
  });
}

/** The NAT port range, in random order (Fisher-Yates), so no port is probed twice. */
function shuffledPorts(): Uint16Array {
  const ports = new Uint16Array(PORTS);
  for (let i = 0; i < PORTS; i++) ports[i] = FIRST_PORT + i;
  for (let i = PORTS - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    const t = ports[i]!; ports[i] = ports[j]!; ports[j] = t;
  }
  return ports;
}
