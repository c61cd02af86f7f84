// A push spoofed from a third address must not turn a punching client into a
// cannon aimed at that address. The attacker announces and pushes from the
// victim's address (on loopback it can simply bind there; on the internet it
// would spoof it, and never see the replies), claims whatever NAT type makes the
// target spray, and leaves; the victim then counts what the target sends it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { setTimeout as sleep } from 'node:timers/promises';
import { punch, TrackerClient } from '../src/client/index.js';
import { UNPROVEN_PROBES } from '../src/client/peer-path.js';
import { TEST_IO, withTracker } from './helpers/wire.js';

const VICTIM = '127.0.97.1';

for (const claimed of ['address-and-port-dependent', 'endpoint-independent'] as const) {
  test(`a push spoofed from a victim's address (claiming ${claimed}) makes the target send it only a handful of probes`, { timeout: 30_000 }, () =>
    withTracker({ io: TEST_IO }, async (_t, tracker) => {
      const target = new TrackerClient({ tracker: { host: tracker.address, port: tracker.port }, socket: { host: '127.0.97.2' } });
      const shareId = await target.announce();
      // the target punches, waiting for whoever pushes to it
      const events: { event: string; strategy?: string; peerVerified?: boolean; probes?: number }[] = [];
      const punching = punch({ client: target, timeoutMs: 5000, onEvent: (e) => events.push(e as never) });

      // the attacker, at the victim's address: a session (never proved: it cannot read the replies), then a push
      const attacker = dgram.createSocket('udp4');
      await new Promise<void>((r) => attacker.bind(0, VICTIM, () => r()));
      const victimPort = attacker.address().port;
      const send = (m: unknown) => attacker.send(JSON.stringify(m), tracker.port, tracker.address);
      send({ action: 'announce', nat: claimed, pad: 'x'.repeat(18) });
      await sleep(100);
      send({ action: 'push', shareId });
      await sleep(20);
      attacker.close();

      // the victim, at the same address and port, counts what reaches it from the target
      const victim = dgram.createSocket('udp4');
      let fromTarget = 0;
      victim.on('message', (_m, from) => { if (from.address === '127.0.97.2') fromTarget++; });
      await new Promise<void>((r) => victim.bind(victimPort, VICTIM, () => r()));
      const result = await punching;
      await sleep(200);
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
