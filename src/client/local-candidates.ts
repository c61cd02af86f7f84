// Our local candidates: the addresses our session socket has on this host's own
// network interfaces, told to the tracker (`"local"` on announce and pulse) so a
// peer behind the same NAT can reach us without the NAT, which often does not
// hairpin (send a datagram from inside to its own public address back in). ICE
// calls these host candidates (RFC 8445 5.1.1.1).
//
// Each is the socket's port on one interface address: IPv4 only for an IPv4
// socket, IPv4 and IPv6 for a dual-stack IPv6 one; never loopback, link-local
// IPv6 (it needs a zone no other host shares) or any address the tracker would
// refuse (protocol/local-candidates.ts decides, for both sides); IPv4 first, at
// most MAX_LOCAL. A socket bound to one address has that one candidate alone.
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import { MAX_LOCAL, canonicalCandidate } from '../protocol/local-candidates.js';
import { formatPeerAddr } from './peer-addr.js';

export { MAX_LOCAL };

export interface GatherOptions {
  /** The session socket's port. */
  port: number;
  /** The session socket's family: an IPv4 socket cannot receive on IPv6 addresses. */
  family: 4 | 6;
  /** The address the socket is bound to, if not every address ('0.0.0.0', '::'). */
  boundTo?: string;
  /** The host's interfaces (default: os.networkInterfaces()); for tests. */
  interfaces?: NodeJS.Dict<NetworkInterfaceInfo[]>;
}

export function gatherLocalCandidates(opts: GatherOptions): string[] {
  const wildcard = opts.boundTo === undefined || opts.boundTo === '0.0.0.0' || opts.boundTo === '::';
  const v4: string[] = [], v6: string[] = [];
  const consider = (address: string, family: 4 | 6): void => {
    if (family === 6 && opts.family === 4) return;
    const c = canonicalCandidate(formatPeerAddr(address, opts.port));
    if (typeof c !== 'string') return; // loopback, link-local IPv6, ...
    const list = c.startsWith('[') ? v6 : v4;
    if (!list.includes(c)) list.push(c);
  };
  if (!wildcard) consider(opts.boundTo!, opts.boundTo!.includes(':') ? 6 : 4);
  else {
    for (const infos of Object.values(opts.interfaces ?? networkInterfaces())) {
      for (const info of infos ?? []) {
        if (info.internal) continue;
        consider(info.address, info.family === 'IPv6' || (info.family as unknown) === 6 ? 6 : 4);
      }
    }
  }
  return [...v4, ...v6].slice(0, MAX_LOCAL);
}
