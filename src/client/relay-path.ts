// The relay as a PeerPath (peer-path.ts), for a pair that no punch can connect:
// our allocation on a TURN server (turn-client.ts) carries the datagrams, and the
// peer sends to our relayed address from its own socket.
//
// The path holds a permission for the peer's IP and a channel to its address, so
// its datagrams come in as Data indications until the channel is bound and as
// ChannelData after, and ours go out as ChannelData (4 bytes of overhead). Closing
// the path releases both holds, not the allocation, which may serve other peers.
//
// A peer behind a hard NAT reaches our relay from a port the tracker never saw
// (each destination gets its own mapping). The permission covers every port of its
// IP, so its datagrams arrive; a probe carrying its shareId from another port of
// that IP moves the path there, as direct-punch.ts does for a direct path. Other
// datagrams from other ports are not the peer's: a NAT's IP may be shared.
import { formatPeerAddr } from './peer-addr.js';
import { probeSender, type PeerPath } from './peer-path.js';
import type { ChannelHold, TurnClient, TurnPeer } from './turn-client.js';

export interface RelayPeer extends TurnPeer {
  /** The peer's shareId: its probes from another port of its IP move the path there. */
  shareId?: string;
}

/**
 * A path to `peer` through `turn`'s allocation, once the permission and the channel
 * are in place. Rejects with the TurnError of a refused CreatePermission or
 * ChannelBind (e.g. 403 for a peer address the server does not relay to).
 */
export async function relayPath(turn: TurnClient, peer: RelayPeer): Promise<PeerPath> {
  const releasePermission = await turn.createPermission(peer.address);
  let channel: ChannelHold;
  try {
    channel = await turn.bindChannel(peer);
  } catch (err) {
    releasePermission();
    throw err;
  }
  let current: TurnPeer = { address: channel.peer.address, port: channel.peer.port };
  let closed = false;
  const listeners = new Set<(msg: Buffer) => void>();
  const moveTo = (to: TurnPeer): void => {
    current = to;
    turn.bindChannel(to).then((next) => {
      const previous = channel;
      channel = next;
      previous.release();
      if (closed) next.release();
    }, () => undefined); // until it is bound, datagrams go as Send indications
  };
  const onData = (data: Buffer, from: TurnPeer): void => {
    if (from.address !== current.address) return;
    if (from.port !== current.port) {
      if (peer.shareId === undefined || probeSender(data) !== peer.shareId) return;
      moveTo(from);
    }
    for (const l of [...listeners]) l(data);
  };
  turn.on('data', onData);
  return {
    kind: 'relay',
    get peeraddr() { return formatPeerAddr(current.address, current.port); },
    send: (msg) => turn.send(msg, current),
    onMessage: (fn) => { listeners.add(fn); return () => { listeners.delete(fn); }; },
    close: () => {
      if (closed) return;
      closed = true;
      turn.off('data', onData);
      listeners.clear();
      channel.release();
      releasePermission();
    },
  };
}
