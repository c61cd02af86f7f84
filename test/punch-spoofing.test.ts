// A push spoofed from a third address must not turn a punching client into a
// cannon aimed at that address. The attacker announces and pushes from the
// victim's address (on loopback it can simply send from there; on the internet it
// would spoof it, and never see the replies), claims whatever NAT type makes the
// target spray, and leaves; the victim counts what the target sends it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { punch, TrackerClient } from '../src/client/index.js';
import { UNPROVEN_PROBES } from '../src/client/peer-path.js';
import { EXPECT_MS, TEST_IO, withTracker } from './helpers/wire.js';

const VICTIM = '127.0.97.1';

for (const claimed of ['address-and-port-dependent', 'endpoint-independent'] as const) {
  test(`a push spoofed from a victim's address (claiming ${claimed}) makes the target send it only a handful of probes`, () =>
    withTracker({ io: TEST_IO }, async (_t, tracker) => {
      const target = new TrackerClient({ tracker: { host: tracker.address, port: tracker.port }, socket: { host: '127.0.97.2' } });
      const shareId = await target.announce();
      // the target punches, waiting for whoever pushes to it; it gives up after EXPECT_MS, which
      // must outlast the push's arrival on any machine: the probes it sent by then are counted
      const events: { event: string; strategy?: string; peerVerified?: boolean; probes?: number }[] = [];
      const punching = punch({ client: target, timeoutMs: EXPECT_MS, onEvent: (e) => events.push(e as never) });

      // the attacker, at the victim's address: a session (never proved: it cannot read the replies), then a push.
      // On loopback it is the victim's socket too, open from the start: every datagram the target
      // aims at that address and port is counted, from the first
      const victim = dgram.createSocket('udp4');
      let fromTarget = 0;
      let onMarker: (() => void) | undefined;
      let onTracker: (() => void) | undefined;
      victim.on('message', (m, from) => {
        if (from.address === tracker.address && from.port === tracker.port) onTracker?.();
        if (from.address !== '127.0.97.2') return;
        if (String(m) === 'marker') onMarker?.();
        else fromTarget++;
      });
      await new Promise<void>((r) => victim.bind(0, VICTIM, () => r()));
      const send = (m: unknown) => new Promise<void>((r) => victim.send(JSON.stringify(m), tracker.port, tracker.address, () => r()));
      // the push once the session exists: here the attacker can see the announce's reply
      const answered = new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no reply to the attacker's announce within ${EXPECT_MS} ms`)), EXPECT_MS);
        onTracker = () => { clearTimeout(t); resolve(); };
      });
      await send({ action: 'announce', nat: claimed, pad: 'x'.repeat(18) });
      await answered;
      await send({ action: 'push', shareId });

      const result = await punching;
      // sent after its probes from the same socket, which ended seconds before: once it is in, they all are
      const marked = new Promise<void>((r) => { onMarker = r; });
      await target.send('marker', VICTIM, victim.address().port);
      await marked;
      victim.close();
      await target.close();

      const peer = events.find((e) => e.event === 'peer');
      assert.ok(peer, `the target heard of the push: ${JSON.stringify(events)}`);
      assert.equal(peer.peerVerified, false, 'the tracker says the pusher never proved it receives');
      assert.equal(result.ok, false);
      // every datagram the target aimed at the victim's IP, on any port (a birthday spray picks random ones)
      const failed = events.find((e) => e.event === 'failed');
      assert.ok(failed?.probes !== undefined && failed.probes <= UNPROVEN_PROBES, `the target sent ${failed?.probes} probes (at most ${UNPROVEN_PROBES})`);
      assert.ok(fromTarget <= UNPROVEN_PROBES, `the victim's port got ${fromTarget} datagrams (at most ${UNPROVEN_PROBES})`);
      assert.ok(fromTarget > 0, 'the target did probe it (a real peer may be there)');
    }));
}
