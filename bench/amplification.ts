// The amplification table (issues 6, 10): for each request kind, N requests from an
// unverified source and from a verified one, and the bytes the server sent back,
// counted on the wire (payload + 28 bytes of IPv4 and UDP headers per datagram), as
// the tracker's reply budget counts them.
// Every row uses its own loopback source IPs (127.2.X.Y), so one row's reply
// credit never pays for another's. What a row needs first (a session, a push
// target) is set up before its counters start: only the N requests are counted.
import dgram from 'node:dgram';
import { loopbackIp, PADDED_ANNOUNCE, PLAIN_PULSE, proofPulse, shareIdOf, STUN_BINDING } from './loadgen/types.js';
import { ATTR, MessageBuilder } from '../src/stun/codec.js';
import { dropDelta, dropTotals } from './child-ipc.js';
import { ServerHandle, serverName, trackerIo, type ServerKind } from './servers.js';

export type Source = 'unverified' | 'verified';

/** IPv4 (20) + UDP (8) header bytes of every datagram. */
const HEADERS = 28;

/** All byte counts are on the wire: payloads plus HEADERS per datagram. */
export interface AmpCell {
  requests: number;
  bytesIn: number;
  /** Bytes the server sent to the requesting source. */
  bytesOut: number;
  datagramsOut: number;
  /** bytesOut / bytesIn. */
  ratio: number;
  /** Bytes sent to someone else because of these requests (income to a push target). */
  toOthers: number;
}

export interface AmpRow {
  kind: string;
  request: string;
  /** null: the combination does not exist (a push with no session has no verified session). */
  cells: Record<string, { unverified: AmpCell | null; verified: AmpCell | null }>;
}

export interface AmpResult {
  perKind: number;
  servers: string[];
  rows: AmpRow[];
  /** Drops the tracker counted during the phase (amplification drops are expected here). */
  drops: Record<string, Record<string, number>>;
  errors: Record<string, string>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class Probe {
  /** Wire bytes received. */
  bytes = 0;
  datagrams = 0;
  private waiters: { pred: (m: Buffer) => boolean; resolve: (m: Buffer | null) => void }[] = [];
  private constructor(readonly socket: dgram.Socket) {}

  static async open(ip: string, port: number): Promise<Probe> {
    const socket = dgram.createSocket('udp4');
    const p = new Probe(socket);
    socket.on('error', () => {});
    socket.on('message', (m) => {
      p.bytes += m.length + HEADERS;
      p.datagrams++;
      p.waiters = p.waiters.filter((w) => (w.pred(m) ? (w.resolve(m), false) : true));
    });
    await new Promise<void>((r) => socket.bind(0, ip, r));
    await new Promise<void>((r) => socket.connect(port, '127.0.0.1', r));
    return p;
  }

  send(data: string | Buffer): void {
    this.socket.send(data);
  }

  /** Sends `data` (up to 3 tries) until a reply matching pred arrives. */
  async ask(data: string, pred: (m: Buffer) => boolean): Promise<Buffer | null> {
    for (let i = 0; i < 3; i++) {
      const got = new Promise<Buffer | null>((resolve) => {
        const w = { pred, resolve };
        this.waiters.push(w);
        setTimeout(() => ((this.waiters = this.waiters.filter((x) => x !== w)), resolve(null)), 300);
      });
      this.send(data);
      const m = await got;
      if (m) return m;
    }
    return null;
  }

  reset(): void {
    this.bytes = 0;
    this.datagrams = 0;
  }

  close(): void {
    this.socket.close();
  }
}

const hasId = (m: Buffer) => shareIdOf(m) !== null;
const isPulseReply = (m: Buffer) => m.includes('"pulse');

/** A session: a bare announce, then a proving pulse (verified) or a plain one (not). Returns its shareId. */
async function session(p: Probe, verified: boolean): Promise<string> {
  const reply = await p.ask('{"action":"announce"}', hasId);
  const id = reply ? shareIdOf(reply)! : 'x'.repeat(12);
  await p.ask(verified ? proofPulse(id) : PLAIN_PULSE, isPulseReply);
  return id;
}

interface Kind {
  kind: string;
  request: string;
  /** The requester has a session first (unverified: padded announce + plain pulse). */
  session: boolean;
  /** Needs a live push target (its shareId is passed to make()). */
  target?: boolean;
  /** No verified variant. */
  unverifiedOnly?: boolean;
  make: (ownId: string, targetId: string) => string | Buffer;
}

const OVERSIZED = Buffer.from(`{"action":"pulse","pad":"${'x'.repeat(1100 - 28)}"}`);

export const KINDS: Kind[] = [
  { kind: 'announce', request: '{"action":"announce"} (21 B)', session: false, make: () => '{"action":"announce"}' },
  { kind: 'announce, v0.1.2', request: '{"id":"<8 hex>","action":"announce"} (37 B)', session: false, make: () => '{"id":"0123abcd","action":"announce"}' },
  { kind: 'announce, padded', request: 'announce padded to 48 B', session: false, make: () => PADDED_ANNOUNCE },
  { kind: 'pulse', request: '{"action":"pulse"} (18 B)', session: true, make: () => PLAIN_PULSE },
  { kind: 'alive', request: '{"action":"alive"} (18 B)', session: true, make: () => '{"action":"alive"}' },
  { kind: 'push → live id', request: 'push, live target', session: true, target: true, make: (_, t) => `{"action":"push","shareId":"${t}"}` },
  { kind: 'push → live id, desktop', request: '{"shareId":"<id>","action":"push"}', session: true, target: true, make: (_, t) => `{"shareId":"${t}","action":"push"}` },
  { kind: 'push → unknown id', request: 'push, unknown shareId', session: true, make: (own) => `{"action":"push","shareId":"${own.slice(1) + own[0]}"}` },
  { kind: 'push, no session', request: 'push from an address with no session', session: false, target: true, unverifiedOnly: true, make: (_, t) => `{"action":"push","shareId":"${t}"}` },
  { kind: 'STUN Binding', request: 'STUN Binding request (20 B)', session: false, make: () => STUN_BINDING },
  { kind: 'STUN Binding, PADDING', request: 'Binding asking for 200 B of PADDING (224 B)', session: false,
    make: () => new MessageBuilder(STUN_BINDING.readUInt16BE(0), Buffer.from('sobani-bench')).add(ATTR.PADDING, Buffer.alloc(200)).build() },
  { kind: 'STUN Binding, CHANGE-REQUEST', request: 'Binding with CHANGE-REQUEST (28 B; no second address here: 420)', session: false,
    make: () => new MessageBuilder(STUN_BINDING.readUInt16BE(0), Buffer.from('sobani-bench')).addUint32(ATTR.CHANGE_REQUEST, 6).build() },
  { kind: 'relay', request: '{"action":"relay"} (18 B)', session: true, make: () => '{"action":"relay"}' },
  { kind: 'junk (not JSON)', request: '`hello tracker` (13 B)', session: false, make: () => 'hello tracker' },
  { kind: 'oversized', request: `${OVERSIZED.length} B datagram`, session: false, make: () => OVERSIZED },
];

async function cell(port: number, kind: Kind, source: Source, n: number, ipAt: () => string): Promise<AmpCell> {
  const me = await Probe.open(ipAt(), port);
  const target = kind.target ? await Probe.open(ipAt(), port) : null;
  try {
    // A verified source is always a session that proved itself: its junk and
    // oversized datagrams come from that session's address.
    let ownId = 'x'.repeat(12);
    if (kind.session || source === 'verified') ownId = await session(me, source === 'verified');
    const targetId = target ? await session(target, true) : '';
    await sleep(60); // the second announce form and any retry's replies
    me.reset();
    target?.reset();
    const req = kind.make(ownId, targetId);
    const size = (typeof req === 'string' ? Buffer.byteLength(req) : req.length) + HEADERS;
    for (let i = 0; i < n; i++) {
      me.send(req);
      await sleep(5);
    }
    await sleep(250);
    return { requests: n, bytesIn: n * size, bytesOut: me.bytes, datagramsOut: me.datagrams, ratio: me.bytes / (n * size), toOthers: target?.bytes ?? 0 };
  } finally {
    me.close();
    target?.close();
  }
}

export async function runAmplification(perKind: number, onStep?: (what: string) => void): Promise<AmpResult> {
  const kinds: ServerKind[] = [{ kind: 'tracker', io: trackerIo(), shards: 'default' }, { kind: 'naive' }];
  const result: AmpResult = { perKind, servers: kinds.map(serverName), rows: KINDS.map((k) => ({ kind: k.kind, request: k.request, cells: {} })), drops: {}, errors: {} };
  let block = 0;
  for (const sk of kinds) {
    const name = serverName(sk);
    onStep?.(name);
    let server: ServerHandle | undefined;
    try {
      server = await ServerHandle.start(sk);
      const before = dropTotals(await server.stats());
      let next = block++ * 1000; // fresh source IPs for every probe
      const ipAt = () => loopbackIp(next++, 2);
      const port = server.port;
      // All rows at once: each has its own IPs, so they cannot share credit.
      await Promise.all(
        KINDS.map(async (k, i) => {
          const [unverified, verified] = await Promise.all([
            cell(port, k, 'unverified', perKind, ipAt),
            k.unverifiedOnly ? Promise.resolve(null) : cell(port, k, 'verified', perKind, ipAt),
          ]);
          result.rows[i]!.cells[name] = { unverified, verified };
        }),
      );
      const d = dropDelta(before, dropTotals(await server.stats()));
      result.drops[name] = d;
    } catch (err) {
      result.errors[name] = (err as Error).message;
    } finally {
      await server?.close();
    }
  }
  return result;
}

function row(cells: string[]): string {
  return `| ${cells.join(' | ')} |`;
}

export function renderAmplification(a: AmpResult): string {
  const [tracker, naive] = a.servers as [string, string];
  const out = (c: AmpCell | null | undefined) => (c ? `${c.bytesOut}${c.toOthers ? ` (+${c.toOthers} to target)` : ''}` : '—');
  const ratio = (c: AmpCell | null | undefined) => (c ? `${c.ratio.toFixed(2)}` : '—');
  const lines = [
    `Amplification: ${a.perKind} requests of each kind per source, and the bytes the server sent back, all counted on the wire (payload + 28 bytes of IPv4 and UDP headers per datagram). A row's setup (its session, a push target) is not counted. unverified: a new source IP (for pulse/alive/push, a session that announced bare and pulsed without proof); verified: a session that proved it receives. The tracker's limit for unverified sources: ratio ≤ 3. income to a push target is charged to nobody (see docs/protocol.md), and shown apart.`,
    '',
    row(['request', 'wire bytes in', 'tracker, unverified: out', 'ratio', 'tracker, verified: out', 'ratio', 'naive: out', 'ratio']),
    row(['---', '---:', '---:', '---:', '---:', '---:', '---:', '---:']),
  ];
  for (const r of a.rows) {
    const t = r.cells[tracker];
    const n = r.cells[naive];
    const bytesIn = t?.unverified?.bytesIn ?? n?.unverified?.bytesIn ?? NaN;
    lines.push(row([`${r.kind}: ${r.request}`, String(bytesIn), out(t?.unverified), ratio(t?.unverified), out(t?.verified), ratio(t?.verified), out(n?.unverified), ratio(n?.unverified)]));
  }
  const drops = a.drops[tracker];
  if (drops) lines.push('', `tracker drops during this phase: ${Object.keys(drops).length ? Object.entries(drops).map(([k, v]) => `${k} ${v}`).join(', ') : 'none'}.`);
  for (const [s, e] of Object.entries(a.errors)) lines.push('', `amplification phase, ${s}: ${e.split('\n')[0]}`);
  return lines.join('\n');
}
