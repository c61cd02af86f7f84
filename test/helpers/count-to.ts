// Counts every datagram the host sends to one IP, on any port, with an nftables
// counter on the output hook (root): what a spray would deliver to a victim there,
// whichever ports and sockets it came from.
import { execFileSync } from 'node:child_process';

let tables = 0;

export interface SentCounter {
  /** Packets sent to the IP since the counter was made. */
  read(): number;
  close(): void;
}

export function countSentTo(ip: string): SentCounter {
  const table = `sobani_count_${process.pid}_${tables++}`;
  const nft = (...args: string[]): string => execFileSync('nft', args, { encoding: 'utf8' });
  nft('add', 'table', 'ip', table);
  nft('add', 'chain', 'ip', table, 'out', '{ type filter hook output priority 0 ; policy accept ; }');
  nft('add', 'rule', 'ip', table, 'out', 'ip', 'daddr', ip, 'counter');
  return {
    read() {
      const m = /counter packets (\d+)/.exec(nft('list', 'chain', 'ip', table, 'out'));
      if (m === null) throw new Error(`no counter in table ${table}`);
      return Number(m[1]);
    },
    close() { nft('delete', 'table', 'ip', table); },
  };
}
