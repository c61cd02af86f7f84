// Which relayed addresses a push may carry to its target (issue 23, finding 3). A
// relayed address sends the target's traffic there, and the target takes data from
// it: a push naming an address of the requester's own choosing would connect the
// target to whoever the requester likes. So the tracker forwards a relayed address
// only if it is on a relay the operator configured: the IPs in relayIps, or (unset)
// the IPs of turnUrl's hosts, host names looked up once at start. A relay whose
// relayed addresses are on other IPs than it listens on (coturn --relay-ip) needs
// relayIps.
import { lookup } from 'node:dns/promises';
import { ConfigError, type Config } from '../config.js';
import { canonicalIp } from '../protocol/address.js';

/** The IP of a canonical relayed address ("1.2.3.4:5" or "[v6]:5", as protocol/request.ts writes it). */
export function ipOfEndpoint(endpoint: string): string {
  return endpoint.charCodeAt(0) === 0x5b /* [ */ ? endpoint.slice(1, endpoint.lastIndexOf(']')) : endpoint.slice(0, endpoint.lastIndexOf(':'));
}

/** Whether a push may carry this canonical relayed address: its IP is one of `relayIps` (canonical). */
export function relayAllowed(relayIps: readonly string[], endpoint: string): boolean {
  return relayIps.length > 0 && relayIps.includes(ipOfEndpoint(endpoint));
}

/** The hosts of a turnUrl setting, as written (brackets of an IPv6 literal removed). */
export function turnHosts(turnUrl: string): string[] {
  if (turnUrl === '') return [];
  return turnUrl.split(',').map((u) => {
    const rest = u.trim().slice('turn:'.length);
    return rest.startsWith('[') ? rest.slice(1, rest.indexOf(']')) : rest.split(/[:?]/)[0]!;
  });
}

/**
 * The relay IPs of `config`, canonical, without repeats: relayIps as given, or the IPs
 * of turnUrl's hosts (a literal as it is, a name by one dns.lookup with all: true).
 * A name that does not resolve is warned about and adds nothing: relayed addresses
 * are then refused until relayIps is set (or a restart finds the name).
 */
export async function relayIpsOf(config: Pick<Config, 'relayIps' | 'turnUrl'>, warn: (msg: string) => void = () => {}): Promise<string[]> {
  const ips: string[] = [];
  const add = (ip: string, setting: string): void => {
    const c = canonicalIp(ip);
    if (c === null) throw new ConfigError(`${setting}: ${JSON.stringify(ip)} is not an IP address literal`);
    if (!ips.includes(c)) ips.push(c);
  };
  if (config.relayIps !== '') {
    for (const ip of config.relayIps.split(',')) add(ip.trim(), 'relayIps');
    return ips;
  }
  for (const host of turnHosts(config.turnUrl)) {
    if (canonicalIp(host) !== null) { add(host, 'turnUrl'); continue; }
    try {
      for (const a of await lookup(host, { all: true, verbatim: true })) add(a.address, 'turnUrl');
    } catch (e) {
      warn(`turnUrl: the relay host ${host} does not resolve (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): pushes carrying a relayed address get RELAY_NOT_ALLOWED until relayIps is set or a restart resolves it`);
    }
  }
  return ips;
}
