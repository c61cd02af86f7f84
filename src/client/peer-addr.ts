import { isIP } from 'node:net';

/** A UDP endpoint as the tracker reports it in `peeraddr`. */
export interface PeerAddr {
  host: string;
  port: number;
  family: 4 | 6;
}

/**
 * Parses `"1.2.3.4:5678"` or `"[2001:db8::1]:5678"` (the form the tracker uses
 * for IPv6 in the documented dialect). Throws a RangeError on anything else,
 * including host names: a peer address is always an IP literal.
 */
export function parsePeerAddr(text: string): PeerAddr {
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') throw new RangeError(`bad peer address: ${JSON.stringify(text)}`);
    host = text.slice(1, close);
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) throw new RangeError(`bad peer address (no port): ${JSON.stringify(text)}`);
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
  }
  const family = isIP(host);
  if (family === 0 || (family === 6 && !text.startsWith('['))) {
    throw new RangeError(`bad peer address (not an IP literal, or IPv6 without brackets): ${JSON.stringify(text)}`);
  }
  const port = Number(portText);
  if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535) {
    throw new RangeError(`bad peer address (port): ${JSON.stringify(text)}`);
  }
  return { host, port, family: family as 4 | 6 };
}

/** Inverse of parsePeerAddr (`ip:port`, or `[ip]:port` for IPv6): the tracker's own formatter. */
export { formatPeerAddr } from '../protocol/address.js';

/**
 * Parses a `HOST:PORT` (or `[v6]:PORT`) option value where HOST may be a
 * name, as for `--tracker`. Unlike parsePeerAddr it does not resolve or
 * validate the host.
 */
export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) throw new RangeError(`expected HOST:PORT, got ${JSON.stringify(text)}`);
  return { host: (m[1] ?? m[2]) as string, port };
}
