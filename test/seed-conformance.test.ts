// A client written from the seed README (../shared/seed/sobani-tracker-README.md)
// alone: it sends raw datagrams exactly as such a client would (no padding, no
// proof of receipt), one datagram per request, then waits for the reply the seed
// documents (up to EXPECT_MS: a bound on a failing test, not a speed the tracker must
// have). Replies are checked field by field against the seed's tables.
// Every client has its own loopback IP, except where clients share one on purpose.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { EXPECT_MS, withTracker } from './helpers/wire.js';

interface Datagram { json: Record<string, unknown> | null; raw: string; from: string }

class SeedClient {
  private readonly inbox: Datagram[] = [];
  private wake: (() => void) | null = null;

  private constructor(private readonly socket: dgram.Socket, private readonly tracker: { address: string; port: number }) {
    socket.on('message', (msg, rinfo) => {
      const raw = msg.toString('utf8');
      let json: Record<string, unknown> | null = null;
      try { json = JSON.parse(raw) as Record<string, unknown>; } catch { /* kept as raw */ }
      this.inbox.push({ json, raw, from: `${rinfo.address}:${rinfo.port}` });
      this.wake?.();
    });
  }

  static async open(tracker: { address: string; port: number }, ip: string): Promise<SeedClient> {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, ip, () => { socket.off('error', reject); resolve(); });
    });
    socket.on('error', () => {});
    socket.unref();
    return new SeedClient(socket, tracker);
  }

  get address(): string {
    const a = this.socket.address();
    return `${a.address}:${a.port}`;
  }

  /** Sends one datagram and waits for a datagram whose action is `action`. */
  async ask(request: string, action: string): Promise<Record<string, unknown>> {
    this.socket.send(request, this.tracker.port, this.tracker.address);
    return this.waitFor(action);
  }

  async waitFor(action: string, ms = EXPECT_MS): Promise<Record<string, unknown>> {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.inbox.findIndex((d) => d.json?.action === action);
      if (i >= 0) return this.inbox.splice(i, 1)[0]!.json!;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`no "${action}" within ${ms} ms; got: ${this.inbox.map((d) => d.raw).join(' | ') || 'nothing'}`);
      }
      await new Promise<void>((r) => { const t = setTimeout(r, left); this.wake = () => { clearTimeout(t); r(); }; });
      this.wake = null;
    }
  }

  close(): void { this.socket.close(); }
}

// ---- the seed README's types, table by table

function checkAnnounceReceived(m: Record<string, unknown>): string {
  assert.equal(m.action, 'announceReceived');
  const data = m.data as Record<string, unknown>;
  assert.equal(typeof data, 'object', 'data: dict, required');
  assert.equal(typeof data.shareId, 'string', 'data.shareId: string, required');
  assert.ok((data.shareId as string).length > 0);
  return data.shareId as string;
}

function checkPulseReceived(m: Record<string, unknown>, overriden: 'true' | 'false'): Record<string, unknown> {
  assert.equal(m.action, 'pulseReceived');
  const data = m.data as Record<string, unknown>;
  assert.equal(typeof data, 'object', 'data: dict, required');
  assert.equal(data.status, '0', 'data.status: string, required, "0" if the pulse was sent successfully');
  assert.equal(data.overriden, overriden, 'data.overriden: string, required');
  return data;
}

function checkPushReceived(m: Record<string, unknown>, peeraddr: string): Record<string, unknown> {
  assert.equal(m.action, 'pushReceived');
  const data = m.data as Record<string, unknown>;
  assert.equal(typeof data, 'object', 'data: dict, required');
  assert.equal(data.peeraddr, peeraddr, 'data.peeraddr: string, required, IP:Port');
  return data;
}

const ANNOUNCE = '{"action":"announce"}';
const PULSE = '{"action":"pulse"}';
const push = (shareId: string): string => `{"action":"push","shareId":"${shareId}"}`;

test('announce: the first datagram gets announceReceived with a shareId', () =>
  withTracker({}, async (_t, target) => {
    const c = await SeedClient.open(target, '127.0.90.1');
    checkAnnounceReceived(await c.ask(ANNOUNCE, 'announceReceived'));
    c.close();
  }));

test('pulse: pulseReceived with status "0" and overriden "false"; before any announce, status is not "0"', () =>
  withTracker({}, async (_t, target) => {
    const stranger = await SeedClient.open(target, '127.0.90.2');
    const r = await stranger.ask(PULSE, 'pulseReceived');
    assert.notEqual((r.data as Record<string, unknown>).status, '0', 'no session: the pulse did not succeed');
    assert.equal(typeof (r.data as Record<string, unknown>).overriden, 'string', 'overriden is required in every pulseReceived');
    stranger.close();
    const c = await SeedClient.open(target, '127.0.90.3');
    await c.ask(ANNOUNCE, 'announceReceived');
    for (let i = 0; i < 5; i++) checkPulseReceived(await c.ask(PULSE, 'pulseReceived'), 'false');
    c.close();
  }));

test('push: pushReceived names the target\'s ip:port; the target is told the requester\'s (income)', () =>
  withTracker({}, async (_t, target) => {
    const a = await SeedClient.open(target, '127.0.90.4');
    const b = await SeedClient.open(target, '127.0.90.5');
    const idA = checkAnnounceReceived(await a.ask(ANNOUNCE, 'announceReceived'));
    checkAnnounceReceived(await b.ask(ANNOUNCE, 'announceReceived'));
    checkPushReceived(await b.ask(push(idA), 'pushReceived'), a.address);
    const income = await a.waitFor('income');
    assert.equal((income.data as Record<string, unknown>).peeraddr, b.address);
    a.close(); b.close();
  }));

test('override: pulse with override sets what push reports; overriden is "true"', () =>
  withTracker({}, async (_t, target) => {
    const a = await SeedClient.open(target, '127.0.90.6');
    const b = await SeedClient.open(target, '127.0.90.7');
    const idA = checkAnnounceReceived(await a.ask(ANNOUNCE, 'announceReceived'));
    checkAnnounceReceived(await b.ask(ANNOUNCE, 'announceReceived'));
    // the seed types port as a string
    checkPulseReceived(await a.ask('{"action":"pulse","override":true,"ip":"198.51.100.7","port":"40000"}', 'pulseReceived'), 'true');
    checkPushReceived(await b.ask(push(idA), 'pushReceived'), '198.51.100.7:40000');
    // income still goes to where a really is, whatever it claims
    assert.equal(((await a.waitFor('income')).data as Record<string, unknown>).peeraddr, b.address);
    // override without data clears it
    checkPulseReceived(await a.ask('{"action":"pulse","override":true}', 'pulseReceived'), 'false');
    checkPushReceived(await b.ask(push(idA), 'pushReceived'), a.address);
    a.close(); b.close();
  }));

test('push to a peer with a multiaddr: answered with the seed\'s fields, for short and for the longest multiaddr', () =>
  withTracker({}, async (tracker, target) => {
    const a = await SeedClient.open(target, '127.0.90.8');
    const b = await SeedClient.open(target, '127.0.90.9');
    const idA = checkAnnounceReceived(await a.ask(ANNOUNCE, 'announceReceived'));
    checkAnnounceReceived(await b.ask(ANNOUNCE, 'announceReceived'));
    for (const multiaddr of ['/ip4/198.51.100.7/udp/4001/quic-v1', '/dns4/' + 'x'.repeat(tracker.config.maxMultiaddr - 15) + '/udp/4001']) {
      checkPulseReceived(await a.ask(JSON.stringify({ action: 'pulse', override: true, multiaddr }), 'pulseReceived'), 'true');
      checkPushReceived(await b.ask(push(idA), 'pushReceived'), a.address);
      await a.waitFor('income');
    }
    a.close(); b.close();
  }));

test('shareId regeneration: pulse with shareId true gives a new shareId; the old one stops resolving', () =>
  withTracker({}, async (_t, target) => {
    const a = await SeedClient.open(target, '127.0.90.10');
    const b = await SeedClient.open(target, '127.0.90.11');
    const oldId = checkAnnounceReceived(await a.ask(ANNOUNCE, 'announceReceived'));
    checkAnnounceReceived(await b.ask(ANNOUNCE, 'announceReceived'));
    const data = checkPulseReceived(await a.ask('{"action":"pulse","shareId":true}', 'pulseReceived'), 'false');
    const newId = data.shareId as string;
    assert.equal(typeof newId, 'string', 'the new shareId is in data.shareId');
    assert.notEqual(newId, oldId);
    checkPushReceived(await b.ask(push(newId), 'pushReceived'), a.address);
    const err = await b.ask(push(oldId), 'error');
    assert.equal((err.data as Record<string, unknown>).code, 'UNKNOWN_SHARE_ID');
    a.close(); b.close();
  }));

test('errors: bad requests get a clear error reply', () =>
  withTracker({}, async (_t, target) => {
    const c = await SeedClient.open(target, '127.0.90.12');
    await c.ask(ANNOUNCE, 'announceReceived');
    const cases: [string, string][] = [
      [push('AAAAAAAAAAAA'), 'UNKNOWN_SHARE_ID'],
      ['{"action":"push"}', 'INVALID_FIELD'],
      ['{"action":"Announce"}', 'UNKNOWN_ACTION'],
      ['{"shareId":"AAAAAAAAAAAA"}', 'MISSING_ACTION'],
      ['{"action":"pulse","override":true,"port":"0"}', 'INVALID_PORT'],
      ['{"action":"pulse","override":true,"ip":"not an ip"}', 'INVALID_IP'],
    ];
    for (const [request, code] of cases) {
      const err = await c.ask(request, 'error');
      const data = err.data as Record<string, unknown>;
      assert.equal(data.code, code, request);
      assert.equal(typeof data.message, 'string');
    }
    c.close();
  }));

test('300 clients behind one IP address: each announces and pulses, and a push to each of them is answered', () =>
  withTracker({}, async (_t, target) => {
    const clients = await Promise.all(Array.from({ length: 300 }, () => SeedClient.open(target, '127.0.91.1')));
    const ids = await Promise.all(clients.map(async (c) => checkAnnounceReceived(await c.ask(ANNOUNCE, 'announceReceived'))));
    await Promise.all(clients.map(async (c) => checkPulseReceived(await c.ask(PULSE, 'pulseReceived'), 'false')));
    const friend = await SeedClient.open(target, '127.0.91.2');
    checkAnnounceReceived(await friend.ask(ANNOUNCE, 'announceReceived'));
    for (let i = 0; i < clients.length; i++) {
      checkPushReceived(await friend.ask(push(ids[i]!), 'pushReceived'), clients[i]!.address);
      assert.equal(((await clients[i]!.waitFor('income')).data as Record<string, unknown>).peeraddr, friend.address, `income to client ${i}`);
    }
    for (const c of [...clients, friend]) c.close();
  }));
