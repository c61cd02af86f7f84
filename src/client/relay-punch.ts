// The relay, for a pair no punch connects: both NATs hard (each destination gets
// its own mapping), or a punch that found nothing within its window. The tracker
// mints TURN credentials; coturn relays; the two sides meet like this:
//
//   requester  asks the tracker for credentials (`relay`), allocates a relayed
//              address R on the TURN server from its session socket, permits the
//              peer's IP and binds a channel (relay-path.ts), then pushes again
//              with `relay: R`
//   target     finds R in that push's income, and sends to R from its session
//              socket; its NAT opens a mapping toward the TURN server, from a
//              port nobody could predict, which the IP permission lets in
//
// TURN permissions are by IP (RFC 8656 9), so one allocation per pair is enough
// whatever the target's NAT does to ports. The requester answers through the
// channel once the target's first datagram (a probe carrying its shareId) shows
// which port it comes from. R was named by a requester the tracker saw prove
// where it is, but R itself proved nothing: the target sends it only a few probes
// until R answers. The target takes R only from an income for the peer it punches
// with (punch.ts), and a token client only from a tagged one: a third party pushing
// to it meanwhile cannot hand it its own "relay".
import { formatPeerAddr } from './peer-addr.js';
import { probe, socketPath, UNPROVEN_PROBES, type PeerPath, type PunchContext } from './peer-path.js';
import { relayPath } from './relay-path.js';
import type { TrackerClient } from './tracker-client.js';
import { TurnClient, trackerTransport } from './turn-client.js';

/** turn:HOST[:PORT][?transport=udp] -> host and port (3478 by default). */
export function turnServer(url: string): { host: string; port: number } {
  const m = /^turn:(?:\[([^\]]+)\]|([^:?]+))(?::(\d+))?(?:\?transport=udp)?$/.exec(url);
  if (m === null) throw new Error(`not a UDP TURN URL: ${url}`);
  return { host: (m[1] ?? m[2])!, port: m[3] !== undefined ? Number(m[3]) : 3478 };
}

/** The requester's side: allocate, permit the peer, tell it through the tracker, and wait for its first datagram. */
export async function relayAsRequester(client: TrackerClient, ctx: PunchContext): Promise<PeerPath> {
  const { peer, signal } = ctx;
  if (peer.shareId === undefined) throw new Error('the tracker did not say who the peer is (no peerShareId): cannot hand it a relay');
  const creds = await client.relayCredentials({ signal });
  const turn = await TurnClient.allocate(trackerTransport(client), { server: turnServer(creds.urls[0]!), username: creds.username, password: creds.credential });
  try {
    const path = await relayPath(turn, { address: peer.host, port: peer.port, shareId: peer.shareId });
    const relayed = formatPeerAddr(turn.relayed.address, turn.relayed.port);
    await client.push(peer.shareId, { relay: relayed, signal });
    // Knock through the channel: once the peer's first datagram moved the path to its
    // real port, ours reach it, and it connects too.
    const knock = probe(ctx.myShareId);
    return await new Promise<PeerPath>((resolve, reject) => {
      const timer = setInterval(() => path.send(knock), ctx.probeIntervalMs);
      const stop = path.onMessage(() => {
        clearInterval(timer); stop();
        signal.removeEventListener('abort', onAbort);
        resolve({
          kind: 'relay', get peeraddr() { return path.peeraddr; }, send: path.send, onMessage: path.onMessage,
          close: () => { path.close(); void turn.close(); }, // the allocation was this pair's alone
          abandon: () => { path.close(); turn.abandon(); },
        });
      });
      const onAbort = (): void => { clearInterval(timer); stop(); path.close(); reject(signal.reason as Error); };
      signal.addEventListener('abort', onAbort, { once: true });
    });
  } catch (err) {
    void turn.close();
    throw err;
  }
}

/** The target's side: send to the relayed address from the session socket until it answers. */
export function relayAsTarget(ctx: PunchContext, relayed: { host: string; port: number }): Promise<PeerPath> {
  return new Promise((resolve) => {
    const knock = probe(ctx.myShareId);
    let left = UNPROVEN_PROBES;
    const send = (): void => {
      if (left-- <= 0) return;
      ctx.probes.sent++;
      ctx.send(knock, relayed.host, relayed.port);
    };
    const timer = setInterval(send, Math.max(250, ctx.probeIntervalMs));
    send();
    const stop = ctx.messages((_msg, from) => {
      if (from.address !== relayed.host || from.port !== relayed.port) return;
      clearInterval(timer); stop();
      ctx.signal.removeEventListener('abort', onAbort);
      resolve(socketPath('relay', ctx.send, { address: relayed.host, port: relayed.port }, ctx.clientMessages));
    });
    const onAbort = (): void => { clearInterval(timer); stop(); };
    ctx.signal.addEventListener('abort', onAbort, { once: true });
  });
}
