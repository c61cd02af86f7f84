// The plain hole punch, for a pair whose NATs map endpoint-independently (or
// whose mapping is unknown): both sides probe each other's public address, as the
// tracker saw it, from the socket that holds the tracker session. Each NAT sees
// our outbound probe before the peer's arrives, and lets the peer's in.
//
// A datagram from the peer's address, or a probe that carries the peer's shareId
// from another port of its IP (its NAT may have moved it), opens the path. A probe
// from anywhere else is not direct: the peer's probes through a relay (relay-punch.ts)
// arrive from the relay's address.
import type { RemoteInfo } from 'node:dgram';
import { probePeer, probeSender, socketPath, type PeerPath, type PunchContext } from './peer-path.js';

export function directPunch(ctx: PunchContext): Promise<PeerPath> {
  return new Promise((resolve) => {
    const { peer } = ctx;
    const fromPeer = (msg: Buffer, from: RemoteInfo): boolean =>
      from.address === peer.host && (from.port === peer.port || (peer.shareId !== undefined && probeSender(msg) === peer.shareId));
    const opened = (from: RemoteInfo): void => {
      stopProbing();
      stopListening();
      ctx.signal.removeEventListener('abort', stop);
      resolve(socketPath('direct', ctx.send, from, ctx.clientMessages));
    };
    const stopListening = ctx.messages((msg, from) => { if (fromPeer(msg, from)) opened(from); });
    const stopProbing = probePeer(ctx);
    const stop = (): void => { stopProbing(); stopListening(); };
    ctx.signal.addEventListener('abort', stop, { once: true });
    const early = ctx.early().find(({ msg, from }) => fromPeer(msg, from));
    if (early !== undefined) opened(early.from);
  });
}
