// STUN on the tracker's own port, over real UDP, with requests written byte by byte
// as RFC 8489 lays them out (not through the project's codec), from clients on
// their own loopback IPs; and coturn's turnutils_stunclient, a client we did not write.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { crc32 } from 'node:zlib';
import { EXPECT_MS, TEST_IO, WirePeer, withTracker, wireBytes } from './helpers/wire.js';
import { startTracker } from '../src/tracker.js';
import { TrackerClient, discoverNat } from '../src/client/index.js';
import { freePort, httpGet, sample } from './helpers/ops.js';

const COOKIE = 0x2112a442;

/** A command's stdout and stderr, once it has exited (killed after 60 s: that only bounds a failing test). */
const output = (cmd: string, args: string[]): Promise<string> =>
  new Promise((resolve) => execFile(cmd, args, { timeout: 60_000 }, (_err, stdout, stderr) => resolve(`${stdout}${stderr}`)));

interface Attr { type: number; value: Buffer }

/** A STUN message: header, attributes (padded to 4 bytes), and a FINGERPRINT when asked for. */
function message(type: number, attrs: Attr[] = [], { fingerprint = false, txid = randomBytes(12) } = {}): Buffer {
  const body = Buffer.concat(attrs.map(({ type: t, value }) => {
    const a = Buffer.alloc(4 + value.length + ((4 - (value.length % 4)) % 4));
    a.writeUInt16BE(t, 0); a.writeUInt16BE(value.length, 2); value.copy(a, 4);
    return a;
  }));
  const head = Buffer.alloc(20);
  head.writeUInt16BE(type, 0);
  head.writeUInt16BE(body.length + (fingerprint ? 8 : 0), 2);
  head.writeUInt32BE(COOKIE, 4);
  txid.copy(head, 8);
  const msg = Buffer.concat([head, body]);
  if (!fingerprint) return msg;
  const fp = Buffer.alloc(8);
  fp.writeUInt16BE(0x8028, 0); fp.writeUInt16BE(4, 2);
  fp.writeUInt32BE((crc32(msg) ^ 0x5354554e) >>> 0, 4);
  return Buffer.concat([msg, fp]);
}

const BINDING = 0x0001;

interface Parsed { type: number; txid: Buffer; attrs: Map<number, Buffer>; order: number[]; raw: Buffer }

function parse(raw: Buffer): Parsed {
  assert.ok(raw.length >= 20, 'a STUN header');
  assert.equal(raw.readUInt32BE(4), COOKIE, 'the magic cookie');
  assert.equal(raw.readUInt16BE(2), raw.length - 20, 'the length field covers the attributes');
  const attrs = new Map<number, Buffer>();
  const order: number[] = [];
  for (let o = 20; o < raw.length;) {
    const t = raw.readUInt16BE(o), n = raw.readUInt16BE(o + 2);
    attrs.set(t, raw.subarray(o + 4, o + 4 + n));
    order.push(t);
    o += 4 + n + ((4 - (n % 4)) % 4);
  }
  return { type: raw.readUInt16BE(0), txid: raw.subarray(8, 20), attrs, order, raw };
}

/** XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS when xor is false) as "ip:port". */
function addressOf(v: Buffer, txid: Buffer, xor = true): string {
  const port = v.readUInt16BE(2) ^ (xor ? COOKIE >>> 16 : 0);
  const key = Buffer.concat([Buffer.from([0x21, 0x12, 0xa4, 0x42]), txid]);
  const ip = Buffer.from(v.subarray(4));
  if (xor) for (let i = 0; i < ip.length; i++) ip[i]! ^= key[i]!;
  if (v[1] === 0x01) return `${[...ip].join('.')}:${port}`;
  const groups = Array.from({ length: 8 }, (_, i) => ip.readUInt16BE(2 * i).toString(16));
  return `[${groups.join(':')}]:${port}`;
}

interface RawClient {
  socket: dgram.Socket;
  inbox: Buffer[];
  port: number;
  /** The next datagram, or null after ms (EXPECT_MS by default: it only bounds a failing test). */
  next: (ms?: number) => Promise<Buffer | null>;
  /**
   * Everything that arrived before the tracker answered a Binding sent now to
   * host:port: a barrier for "nothing (more) came", as WirePeer.settle() is (the
   * tracker handles one IP's datagrams in order, and sends each batch's replies in
   * order). The Binding is counted (kind binding, 20 bytes in, its response out).
   */
  settle: (port: number, host: string) => Promise<Buffer[]>;
}

/** A raw UDP client on its own address. */
async function client(address = '127.0.0.1'): Promise<RawClient> {
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  const inbox: Buffer[] = [];
  let wake: (() => void) | null = null;
  socket.on('message', (m) => { inbox.push(m); wake?.(); });
  await new Promise<void>((r) => socket.bind(0, address, () => r()));
  socket.unref();
  /** Waits until found() gives an index in the inbox, or until `until`: the index, or -1. */
  const waitFor = async (found: () => number, until: number): Promise<number> => {
    for (;;) {
      const i = found();
      if (i >= 0 || Date.now() >= until) return i;
      await new Promise<void>((r) => { wake = r; setTimeout(r, until - Date.now()); });
    }
  };
  const next = async (ms = EXPECT_MS): Promise<Buffer | null> =>
    (await waitFor(() => (inbox.length > 0 ? 0 : -1), Date.now() + ms)) < 0 ? null : inbox.shift()!;
  const settle = async (port: number, host: string): Promise<Buffer[]> => {
    const req = message(BINDING);
    const txid = req.subarray(8, 20);
    socket.send(req, port, host);
    const i = await waitFor(() => inbox.findIndex((m) => m.length >= 20 && m.readUInt16BE(0) === 0x0101 && m.subarray(8, 20).equals(txid)), Date.now() + EXPECT_MS);
    if (i < 0) throw new Error(`the tracker did not answer the settle() Binding within ${EXPECT_MS} ms`);
    const before = inbox.splice(0, i);
    inbox.shift();
    return before;
  };
  return { socket, inbox, port: socket.address().port, next, settle };
}

/** Polls until done() holds (a generous deadline bounds a failing test); returns whether it did. */
async function until(done: () => Promise<boolean>, ms = EXPECT_MS): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await done()) return true;
    if (Date.now() >= end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

const stunCounters = async (tracker: { stats(): Promise<{ shards: { counters: { stunRequests: Record<string, number>; drops: Record<string, number> } }[] }> }) => {
  const s = await tracker.stats();
  const sum = (pick: (c: { stunRequests: Record<string, number>; drops: Record<string, number> }) => Record<string, number>) => {
    const out: Record<string, number> = {};
    for (const sh of s.shards) for (const [k, v] of Object.entries(pick(sh.counters))) out[k] = (out[k] ?? 0) + v;
    return out;
  };
  return { requests: sum((c) => c.stunRequests), drops: sum((c) => c.drops) };
};

type Counted = Awaited<ReturnType<typeof stunCounters>>;

/**
 * The counters once every one named in `least` has got at least that far (counts only
 * grow; a generous deadline bounds a failing test), for exact assertions. For datagrams
 * that get no answer to wait for: polled, as a barrier sent after them from the same
 * socket may still overtake them on a loaded machine (the kernel does not promise
 * loopback order across CPUs).
 */
async function countedAtLeast(tracker: Parameters<typeof stunCounters>[0], least: { requests?: Record<string, number>; drops?: Record<string, number> }): Promise<Counted> {
  let counted!: Counted;
  await until(async () => {
    counted = await stunCounters(tracker);
    return (['requests', 'drops'] as const).every((k) => Object.entries(least[k] ?? {}).every(([name, n]) => (counted[k][name] ?? 0) >= n));
  });
  return counted;
}

test('Binding over IPv4: XOR-MAPPED-ADDRESS and MAPPED-ADDRESS are the source, the transaction id is echoed; FINGERPRINT only when asked', () =>
  withTracker({}, async (_t, target) => {
    const c = await client('127.0.60.1');
    const req = message(BINDING);
    c.socket.send(req, target.port, target.address);
    const res = parse((await c.next())!);
    assert.equal(res.type, 0x0101, 'Binding success response');
    assert.deepEqual(res.txid, req.subarray(8, 20));
    assert.equal(addressOf(res.attrs.get(0x0020)!, res.txid), `127.0.60.1:${c.port}`);
    assert.equal(addressOf(res.attrs.get(0x0001)!, res.txid, false), `127.0.60.1:${c.port}`);
    assert.equal(res.attrs.has(0x8028), false, 'no FINGERPRINT unless the request had one');
    assert.equal(res.attrs.has(0x802c), false, 'no OTHER-ADDRESS without a second address');

    const withFp = message(BINDING, [], { fingerprint: true });
    c.socket.send(withFp, target.port, target.address);
    const fp = parse((await c.next())!);
    assert.equal(fp.order.at(-1), 0x8028, 'FINGERPRINT is the last attribute');
    assert.equal(fp.attrs.get(0x8028)!.readUInt32BE(0), (crc32(fp.raw.subarray(0, fp.raw.length - 8)) ^ 0x5354554e) >>> 0);
    c.socket.close();
  }));

test('Binding over IPv6', () =>
  withTracker({ host: '::1' }, async (_t, target) => {
    const c = await client('::1');
    const req = message(BINDING, [], { fingerprint: true });
    c.socket.send(req, target.port, '::1');
    const res = parse((await c.next())!);
    assert.equal(res.type, 0x0101);
    assert.equal(res.attrs.get(0x0020)![1], 0x02, 'family IPv6');
    assert.equal(addressOf(res.attrs.get(0x0020)!, res.txid), `[0:0:0:0:0:0:0:1]:${c.port}`);
    assert.equal(addressOf(res.attrs.get(0x0001)!, res.txid, false), `[0:0:0:0:0:0:0:1]:${c.port}`);
    c.socket.close();
  }));

test('an IPv4 client of a dual-stack tracker gets an IPv4 mapped address', () =>
  withTracker({ host: '::' }, async (_t, target) => {
    const c = await client('127.0.60.2');
    c.socket.send(message(BINDING), target.port, '127.0.0.1');
    const res = parse((await c.next())!);
    assert.equal(res.attrs.get(0x0020)![1], 0x01, 'family IPv4');
    assert.equal(addressOf(res.attrs.get(0x0020)!, res.txid), `127.0.60.2:${c.port}`);
    c.socket.close();
  }));

test('unknown comprehension-required attributes get 420 with UNKNOWN-ATTRIBUTES; unknown optional ones are ignored', () =>
  withTracker({}, async (_t, target) => {
    const c = await client('127.0.60.3');
    const req = message(BINDING, [{ type: 0x7f01, value: Buffer.from('abcd') }, { type: 0x0003, value: Buffer.from([0, 0, 0, 6]) },
      { type: 0xc001, value: Buffer.from('optional') }], { fingerprint: true });
    c.socket.send(req, target.port, target.address);
    const res = parse((await c.next())!);
    assert.equal(res.type, 0x0111, 'Binding error response');
    const ec = res.attrs.get(0x0009)!;
    assert.equal(ec[2]! * 100 + ec[3]!, 420);
    const unknown = res.attrs.get(0x000a)!;
    // 0x7f01, and CHANGE-REQUEST (0x0003): this tracker has no second address to change to
    assert.deepEqual([unknown.readUInt16BE(0), unknown.readUInt16BE(2)], [0x7f01, 0x0003]);
    assert.equal(res.order.at(-1), 0x8028);

    c.socket.send(message(BINDING, [{ type: 0xc001, value: Buffer.from('optional') }, { type: 0x8022, value: Buffer.from('their client 1.0') }]), target.port, target.address);
    assert.equal(parse((await c.next())!).type, 0x0101, 'comprehension-optional attributes do not stop a Binding');
    c.socket.close();
  }));

test('a request with a valid header but broken attributes gets 400; other methods get 400; indications and responses get nothing', () =>
  withTracker({}, async (tracker, target) => {
    const c = await client('127.0.60.4');
    // an attribute whose length runs past the message
    const broken = message(BINDING, [{ type: 0x8022, value: Buffer.from('abcdefgh') }]);
    broken.writeUInt16BE(200, 22);
    c.socket.send(broken, target.port, target.address);
    let res = parse((await c.next())!);
    assert.equal(res.type, 0x0111);
    const code = (b: Buffer) => b[2]! * 100 + b[3]!;
    assert.equal(code(res.attrs.get(0x0009)!), 400);
    assert.match(res.attrs.get(0x0009)!.subarray(4).toString(), /^Bad Request/);
    // a TURN Allocate is not served here
    c.socket.send(message(0x0003), target.port, target.address);
    res = parse((await c.next())!);
    assert.equal(res.type, 0x0113, 'Allocate error response');
    assert.equal(code(res.attrs.get(0x0009)!), 400);
    // a Binding indication (a keep-alive) and a stray success response: no answer
    c.socket.send(message(0x0011), target.port, target.address);
    c.socket.send(message(0x0101), target.port, target.address);
    const counted = await countedAtLeast(tracker, { requests: { indication: 1, 'not-a-request': 1, 'bad-request': 2 } });
    assert.deepEqual(await c.settle(target.port, target.address), [], 'nothing answers them'); // a Binding: not a kind counted here
    assert.equal(counted.requests.indication, 1);
    assert.equal(counted.requests['not-a-request'], 1);
    assert.equal(counted.requests['bad-request'], 2);
    c.socket.close();
  }));

test('truncated and malformed headers, and a wrong FINGERPRINT, are dropped and counted, and nothing else is disturbed', () =>
  withTracker({}, async (tracker, target) => {
    const c = await client('127.0.60.5');
    const good = message(BINDING);
    const wrongLength = Buffer.from(good); wrongLength.writeUInt16BE(4, 2); // says 4 bytes follow, none do
    const notMultipleOf4 = Buffer.concat([message(BINDING), Buffer.from([1, 2])]); notMultipleOf4.writeUInt16BE(2, 2);
    const badFp = message(BINDING, [], { fingerprint: true }); badFp[badFp.length - 1]! ^= 0xff;
    for (const m of [wrongLength, notMultipleOf4, badFp]) c.socket.send(m, target.port, target.address);
    const counted = await countedAtLeast(tracker, { drops: { stun_malformed: 2, stun_bad_fingerprint: 1 } });
    assert.deepEqual(await c.settle(target.port, target.address), [], 'no response to any of them');
    assert.equal(counted.drops.stun_malformed, 2);
    assert.equal(counted.drops.stun_bad_fingerprint, 1);
    // 19 bytes are too short for a STUN header: they go the JSON way, and get NOT_JSON
    c.socket.send(good.subarray(0, 19), target.port, target.address);
    assert.match((await c.next())!.toString(), /"code":"NOT_JSON"/);
    c.socket.send(good, target.port, target.address);
    assert.equal(parse((await c.next())!).type, 0x0101, 'the source is still served');
    c.socket.close();
  }));

test('STUN and JSON interleave from one socket: a session and its Bindings, each answered in its own protocol', () =>
  withTracker({}, async (_t, target) => {
    const p = await WirePeer.open(target, '127.0.60.6');
    const shareId = await p.announce();
    const stunReplies: Buffer[] = [];
    const seen = new Set<string>();
    p.socket.on('message', (m) => { if ((m[0]! & 0xc0) === 0 && m.length >= 20) stunReplies.push(m); });
    for (let i = 0; i < 5; i++) {
      const req = message(BINDING);
      seen.add(req.subarray(8, 20).toString('hex'));
      p.socket.send(req, target.port, target.address);
      const pulse = await p.request({ action: 'pulse' }, 'pulseReceived');
      assert.equal(pulse.data!.shareId, shareId);
    }
    // each Binding's response left before the reply to the pulse sent after it (on a loaded
    // machine the kernel may still deliver the last after it)
    await until(async () => stunReplies.length >= 5);
    assert.equal(stunReplies.length, 5);
    for (const r of stunReplies) {
      const res = parse(r);
      assert.ok(seen.has(res.txid.toString('hex')));
      assert.equal(addressOf(res.attrs.get(0x0020)!, res.txid), `127.0.60.6:${p.port}`);
    }
    p.close();
  }));

test('an unverified source gets STUN responses within 3x the wire bytes it sent, PADDING included', () =>
  withTracker({}, async (tracker, target) => {
    // PADDING of 200 bytes asks for a response as big (RFC 5780): it comes, and the totals stay within 3x
    const c = await client('127.0.60.7');
    const padded = message(BINDING, [{ type: 0x0026, value: Buffer.alloc(200) }]);
    let sent = 0, got = 0;
    for (let i = 0; i < 20; i++) {
      c.socket.send(padded, target.port, target.address); sent += wireBytes(padded);
      const r = await c.next();
      assert.ok(r !== null && r.length >= 200, 'the padded response');
      got += wireBytes(r);
    }
    assert.ok(got <= 3 * sent, `sent ${sent}, got ${got} wire bytes`);
    // a bare 20-byte Binding (48 wire bytes, 144 of credit) still fits its 80-byte response, in a burst too
    const bare = await client('127.0.60.8');
    for (let i = 0; i < 50; i++) bare.socket.send(message(BINDING), target.port, target.address);
    await until(async () => bare.inbox.length >= 50);
    // and no more: the 51st Binding (it brings its own credit) is answered after any
    const answers = [...bare.inbox.splice(0), ...(await bare.settle(target.port, target.address))];
    assert.equal(answers.length, 50);
    assert.ok(answers.reduce((n, b) => n + wireBytes(b), 0) <= 3 * 50 * wireBytes(message(BINDING)));
    // a reply that would not fit is cut first: a 1-byte datagram (29 wire bytes: 87 of credit) gets its
    // NOT_JSON error with its message shortened or left out, never the full one (122 wire bytes)
    const spent = await client('127.0.60.9');
    spent.socket.send('x', target.port, target.address);
    const e = await spent.next();
    assert.ok(e !== null, 'an error reply');
    assert.equal((JSON.parse(e.toString()) as { data: { code: string } }).data.code, 'NOT_JSON');
    assert.ok(wireBytes(e) <= 3 * wireBytes(Buffer.from('x')), `${wireBytes(e)} wire bytes`);
    spent.socket.send(message(BINDING, [{ type: 0x0026, value: Buffer.alloc(8) }]), target.port, target.address);
    const r = await spent.next();
    assert.ok(r !== null && parse(r).type === 0x0101, 'the Binding is answered after it');
    for (const x of [c, bare, spent]) x.socket.close();
  }));

test('coturn\'s turnutils_stunclient gets its reflexive address from the tracker', { skip: spawnSync('turnutils_stunclient', ['-h']).error ? 'turnutils_stunclient is not installed (apt-get install coturn; .ci/run does it)' : false }, () =>
  withTracker({ host: '127.0.0.1' }, async (_t, target) => {
    // not spawnSync: the tracker answers from this very process
    const text = await output('turnutils_stunclient', ['-p', String(target.port), '-L', '127.0.60.20', '127.0.0.1']);
    assert.match(text, /UDP reflexive addr: 127\.0\.60\.20:\d+/, text);
  }));

test('/metrics counts STUN requests by kind, responses by result, errors by code', async () => {
  const metricsPort = await freePort();
  await withTracker({ metricsPort }, async (_t, target) => {
    const c = await client('127.0.60.11');
    const send = (m: Buffer) => c.socket.send(m, target.port, target.address);
    send(message(BINDING)); await c.next();
    send(message(BINDING, [], { fingerprint: true })); await c.next();
    send(message(BINDING, [{ type: 0x7f01, value: Buffer.alloc(4) }])); await c.next(); // 420
    send(message(0x0003)); await c.next(); // an Allocate: 400
    send(message(0x0011)); // an indication: nothing
    const bad = message(BINDING); bad.writeUInt16BE(8, 2); send(bad); // malformed: nothing
    const expected: [string, Record<string, string>, number][] = [
      ['sobani_stun_requests_total', { kind: 'binding' }, 2],
      ['sobani_stun_requests_total', { kind: 'unknown-attributes' }, 1],
      ['sobani_stun_requests_total', { kind: 'bad-request' }, 1],
      ['sobani_stun_requests_total', { kind: 'indication' }, 1],
      ['sobani_stun_requests_total', { kind: 'malformed' }, 1],
      ['sobani_stun_responses_total', { result: 'success' }, 2],
      ['sobani_stun_responses_total', { result: 'error' }, 2],
      ['sobani_stun_errors_total', { code: '420' }, 1],
      ['sobani_stun_errors_total', { code: '400' }, 1],
      ['sobani_datagrams_in_total', { action: 'stun' }, 6],
      ['sobani_datagrams_out_total', { action: 'stun' }, 4],
      ['sobani_drops_total', { reason: 'stun_malformed' }, 1],
    ];
    // the last two get no answer to wait for: scrape until every count has got as far
    // as it should (counts only grow), then every one must be exactly that
    let m = '';
    await until(async () => {
      m = (await httpGet(metricsPort, '/metrics')).body;
      return expected.every(([name, labels, n]) => (sample(m, name, labels) ?? 0) >= n);
    });
    for (const [name, labels, n] of expected) assert.equal(sample(m, name, labels), n, `${name} ${JSON.stringify(labels)}`);
    c.socket.close();
  });
});

// ---- RFC 5780 NAT behaviour discovery: the tracker on 127.0.0.1 and 127.0.0.2, ports P and P + 1

/** A port P such that P and P + 1 are free for UDP on both addresses (a moment ago). */
async function freePortPair(hosts: string[]): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const p = 20_000 + Math.floor(Math.random() * 40_000);
    const sockets: dgram.Socket[] = [];
    const ok = await (async () => {
      for (const host of hosts) for (const port of [p, p + 1]) {
        const s = dgram.createSocket('udp4');
        sockets.push(s);
        const bound = await new Promise<boolean>((r) => { s.once('error', () => r(false)); s.bind(port, host, () => r(true)); });
        if (!bound) return false;
      }
      return true;
    })();
    await Promise.all(sockets.map((s) => new Promise<void>((r) => { try { s.close(() => r()); } catch { r(); } })));
    if (ok) return p;
  }
  throw new Error('no free port pair');
}

const PRIMARY = '127.0.0.1', OTHER = '127.0.0.2';
const withDiscovery = async (fn: (port: number, tracker: Awaited<ReturnType<typeof startTracker>>) => Promise<void>): Promise<void> => {
  const port = await freePortPair([PRIMARY, OTHER]);
  const tracker = await startTracker({ host: PRIMARY, port, stunOtherHost: OTHER, shards: 2, logLevel: 'silent', io: TEST_IO });
  try {
    assert.deepEqual(tracker.addresses.map((a) => `${a.address}:${a.port}`),
      [`${PRIMARY}:${port}`, `${PRIMARY}:${port + 1}`, `${OTHER}:${port}`, `${OTHER}:${port + 1}`]);
    await fn(port, tracker);
  } finally {
    await tracker.close();
  }
};

/** A Binding with CHANGE-REQUEST (flags 4: change IP, 2: change port) and where its response came from. */
async function changeRequest(c: Awaited<ReturnType<typeof client>>, to: string, port: number, flags: number): Promise<{ res: Parsed; from: string }> {
  const from = new Promise<string>((resolve) => c.socket.once('message', (_m, r) => resolve(`${r.address}:${r.port}`)));
  c.socket.send(message(BINDING, flags === 0 ? [] : [{ type: 0x0003, value: Buffer.from([0, 0, 0, flags]) }], { fingerprint: true }), port, to);
  const res = parse((await c.next())!);
  return { res, from: await from };
}

test('RFC 5780: every CHANGE-REQUEST combination leaves from the right socket; RESPONSE-ORIGIN says which, OTHER-ADDRESS names the other IP and port', () =>
  withDiscovery(async (port) => {
    const c = await client('127.0.64.1');
    const cases = [
      { flags: 0, from: `${PRIMARY}:${port}` },
      { flags: 2, from: `${PRIMARY}:${port + 1}` },
      { flags: 4, from: `${OTHER}:${port}` },
      { flags: 6, from: `${OTHER}:${port + 1}` },
    ];
    for (const { flags, from } of cases) {
      const { res, from: got } = await changeRequest(c, PRIMARY, port, flags);
      assert.equal(res.type, 0x0101, `flags ${flags}`);
      assert.equal(got, from, `CHANGE-REQUEST ${flags}: the response left from ${got}`);
      assert.equal(addressOf(res.attrs.get(0x802b)!, res.txid, false), from, 'RESPONSE-ORIGIN');
      assert.equal(addressOf(res.attrs.get(0x802c)!, res.txid, false), `${OTHER}:${port + 1}`, 'OTHER-ADDRESS: the other IP and port');
      assert.equal(addressOf(res.attrs.get(0x0020)!, res.txid), `127.0.64.1:${c.port}`);
      assert.equal(res.order.at(-1), 0x8028, 'FINGERPRINT, as the request had one');
    }
    // asked at the other address and port, the other address is the primary one
    const { res, from } = await changeRequest(c, OTHER, port + 1, 6);
    assert.equal(from, `${PRIMARY}:${port}`);
    assert.equal(addressOf(res.attrs.get(0x802c)!, res.txid, false), `${PRIMARY}:${port}`);
    c.socket.close();
  }));

test('RFC 5780: RESPONSE-PORT sends the response to another port of the same IP, and nowhere else', () =>
  withDiscovery(async (port) => {
    const asker = await client('127.0.64.2');
    const listener = await client('127.0.64.2');
    asker.socket.send(message(BINDING, [{ type: 0x0027, value: Buffer.from([listener.port >> 8, listener.port & 0xff, 0, 0]) }]), port, PRIMARY);
    const res = parse((await listener.next())!);
    assert.equal(res.type, 0x0101);
    assert.equal(addressOf(res.attrs.get(0x0020)!, res.txid), `127.0.64.2:${asker.port}`, 'the mapped address is still the asker\'s');
    assert.deepEqual(await asker.settle(port, PRIMARY), [], 'nothing went to the asker itself');
    asker.socket.close(); listener.socket.close();
  }));

test('the other addresses answer STUN alone: JSON sent there is dropped and counted; responses from them obey the budget', () =>
  withDiscovery(async (port, tracker) => {
    const c = await client('127.0.64.3');
    for (const [host, p] of [[PRIMARY, port + 1], [OTHER, port], [OTHER, port + 1]] as const) c.socket.send('{"action":"announce"}', p, host);
    // three sockets, read apart: first see all three handled (dropped and counted), then that
    // nothing was sent back before the barrier (counted only once: never more than 3)
    await until(async () => ((await stunCounters(tracker)).drops.not_stun ?? 0) >= 3);
    assert.equal((await stunCounters(tracker)).drops.not_stun, 3);
    assert.deepEqual(await c.settle(port, PRIMARY), [], 'no answer to JSON on the STUN-only addresses');
    // CHANGE-REQUEST responses from other sockets are charged to the asker's IP like any other
    let sent = 0, got = 0;
    for (let i = 0; i < 30; i++) {
      const req = message(BINDING, [{ type: 0x0003, value: Buffer.from([0, 0, 0, 6]) }]);
      c.socket.send(req, port, PRIMARY); sent += wireBytes(req);
      const r = await c.next(); // each fits its own request's credit; one over budget would only cost this wait
      if (r !== null) got += wireBytes(r);
    }
    assert.ok(got > 0 && got <= 3 * sent, `sent ${sent}, got ${got} wire bytes`);
    c.socket.close();
  }));

test('NAT discovery from the client library, with no NAT in between: endpoint-independent', () =>
  withDiscovery(async (port) => {
    const c = new TrackerClient({ tracker: { host: PRIMARY, port }, socket: { host: '127.0.64.4' } });
    try {
      const found = await discoverNat(c, { timeoutMs: EXPECT_MS }); // an answer after 2 s must not read as "unknown"
      assert.equal(found.nat, 'endpoint-independent');
      assert.equal(found.mapped, `127.0.64.4:${(await c.ready()).port}`);
    } finally {
      await c.close();
    }
  }));
