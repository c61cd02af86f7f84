// A call that survives a network change (issue 24), on the client's side, over
// real UDP on loopback: the exchange's end is an event, not a clock; discovery's
// wait is an option; a client notices it moved; a path migrates without a close.
// The namespace-lab scenarios (a NAT switching its public IP mid-exchange) are in
// test/nat-roaming.test.ts.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import type { RemoteInfo, Socket } from 'node:dgram';
import { after, describe, test } from 'node:test';
import { ATTR, CLASS_REQUEST, CLASS_SUCCESS, METHOD, MessageBuilder, decodeMessage, messageType } from '../src/stun/codec.js';
import { dataEndSent, dataSeq, exchange, socketPath, type PeerPath } from '../src/client/peer-path.js';
import { punch, type PunchEvent } from '../src/client/punch.js';
import { TrackerClient } from '../src/client/tracker-client.js';
import { EXPECT_MS, onceInNativePass } from './helpers/wire.js';

// None of this exercises the tracker's datagram I/O path.
const skip = onceInNativePass('client-side only: no tracker I/O');

const sockets: Socket[] = [];
async function bound(): Promise<Socket> {
  const s = dgram.createSocket('udp4');
  s.on('error', () => undefined);
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  sockets.push(s);
  return s;
}
after(() => { for (const s of sockets) s.close(); });

/** A path from `s` to `to`, counting what it sends. */
function pathOver(s: Socket, to: Socket, onSend?: (msg: Buffer) => void): PeerPath {
  const subscribe = (fn: (msg: Buffer, from: RemoteInfo) => void): (() => void) => { s.on('message', fn); return () => s.off('message', fn); };
  return socketPath('direct', (msg, address, port) => { onSend?.(msg); s.send(msg, port, address); }, { address: '127.0.0.1', port: to.address().port }, subscribe);
}

describe('the exchange ends on the peer\'s end marker, not on a clock', { skip }, () => {
  test('a peer that starts only after we sent our last datagram is still counted in full, and both sides end (no fixed tail)', async () => {
    const [sa, sb] = await Promise.all([bound(), bound()]);
    let aSentData = 0;
    let aDone!: () => void;
    const aFinishedSending = new Promise<void>((r) => { aDone = r; });
    const pa = pathOver(sa, sb, (msg) => { if (dataSeq(msg) >= 0 && ++aSentData === 10) aDone(); });
    const pb = pathOver(sb, sa);
    // B's side listens from the start (as punch's early set does) and starts its exchange only once A sent everything
    const early = new Set<number>();
    const earlyListener = (msg: Buffer): void => { const seq = dataSeq(msg); if (seq >= 0) early.add(seq); };
    sb.on('message', earlyListener);
    // a bound no test waits out: only the peer's marker can end A's wait
    const a = exchange(pa, 0.2, new Set(), { endWaitMs: 600_000 });
    await aFinishedSending;
    sb.off('message', earlyListener);
    const b = exchange(pb, 0.2, early, { endWaitMs: 600_000 });
    const [ra, rb] = await Promise.all([a, b]);
    assert.deepEqual(ra, { sent: 10, received: 10 });
    assert.deepEqual(rb, { sent: 10, received: 10 });
  });

  test('the end marker carries the count', () => {
    assert.equal(dataEndSent(Buffer.from('{"action":"data-end","sent":42}')), 42);
    assert.equal(dataEndSent(Buffer.from('{"action":"data","seq":42}')), -1);
  });
});

/** A STUN server that answers a Binding only on its `answerOn`-th retransmission (no OTHER-ADDRESS: the NAT type is then "unknown" for a known reason). */
async function slowStun(answerOn: number): Promise<{ socket: Socket; seen: () => number }> {
  const s = await bound();
  let seen = 0;
  s.on('message', (msg, from) => {
    const m = decodeMessage(msg);
    if (typeof m === 'string' || m.cls !== CLASS_REQUEST) return; // an announce (JSON): never answered here
    if (++seen < answerOn) return;
    const reply = new MessageBuilder(messageType(METHOD.BINDING, CLASS_SUCCESS), m.transactionId)
      .addAddress(ATTR.XOR_MAPPED_ADDRESS, from.address, from.port).build({ withFingerprint: true });
    s.send(reply, from.port, from.address);
  });
  return { socket: s, seen: () => seen };
}

describe('NAT discovery waits as long as it is told', { skip }, () => {
  test('a Binding answered only after 8 sends (250 ms apart) still counts with discoverTimeoutMs: the wait is an option, not 1000 ms', async () => {
    const stun = await slowStun(8);
    const c = new TrackerClient({ tracker: { host: '127.0.0.1', port: stun.socket.address().port }, retryIntervalMs: 100 });
    const stop = new AbortController();
    const events: PunchEvent[] = [];
    let natSeen!: () => void;
    const sawNat = new Promise<void>((resolve) => { natSeen = resolve; });
    const run = punch({ client: c, discoverTimeoutMs: EXPECT_MS, timeoutMs: 10 * EXPECT_MS, signal: stop.signal,
      onEvent: (e) => { events.push(e); if (e.event === 'nat') natSeen(); } });
    await sawNat;
    stop.abort();
    assert.equal((await run).ok, false);
    await c.close();
    assert.equal(stun.seen() >= 8, true);
    const nat = events.find((e) => e.event === 'nat') as Extract<PunchEvent, { event: 'nat' }>;
    // answered: the reason is the missing second address, not "the tracker did not answer STUN"
    assert.equal(nat.reason, 'the tracker has no second address (no OTHER-ADDRESS)');
    assert.match(String(nat.mapped), /^127\.0\.0\.1:\d+$/);
  });
});
