// One load-generator thread: a set of simulated clients, each a UDP socket bound
// to its own loopback source IP (127.0.X.Y, see loopbackIp), so the tracker's
// per-IP rate limit and reply budget see one IP per client. Each client sends a
// padded announce (room for both announce forms), proves it receives with one
// pulse carrying its shareId (so its session is verified and gets full replies),
// then pulses with plain {"action":"pulse"}, either keeping
// `window` pulses outstanding (closed loop) or at a fixed share of the offered
// rate (open loop). Replies are told apart by their bytes, not parsed, so the
// generator spends as little CPU as it can: it shares the machine with the server.
//
// The protocol has no request id, so a reply is matched to its request by
// order. In the closed loop that is only used for counting. In the open loop,
// where latency is reported, each client has at most one pulse in flight (a
// lost datagram would otherwise shift every later match on that client), the
// next pulse goes to any idle client, and latency is taken from the pulse's
// scheduled send time, so a server stall is not hidden by the generator
// waiting for it (no coordinated omission).
import dgram from 'node:dgram';
import { parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { Histogram } from '../histogram.js';
import { loopbackIp, PADDED_ANNOUNCE, PLAIN_PULSE, proofPulse, shareIdOf, type GoMessage, type WorkerCounts, type WorkerMessage, type WorkerSpec } from './types.js';

const spec = workerData as WorkerSpec;
const port = parentPort!;
const post = (m: WorkerMessage, transfer?: ArrayBuffer[]) => port.postMessage(m, transfer);

const PULSE = Buffer.from(PLAIN_PULSE);
const ANNOUNCE = Buffer.from(PADDED_ANNOUNCE);
// What a server without shareIds (the echo) is "proved" with: same length as the tracker's ids.
const NO_ID = 'x'.repeat(12);
// A pulse reply from any server here contains this: the tracker's and the naive
// tracker's "pulseReceived", and the echo's copy of the request itself.
const PULSE_REPLY = Buffer.from('"pulse');
const UNKNOWN_SESSION = Buffer.from('"status":"1"');
// A full reply to the proving pulse carries the shareId (the echo's copy of the proof does too).
const SHARE_ID = Buffer.from('"shareId"');
// Room for every pulse a client can have in flight: its window, or one.
const RING = 1 << Math.max(2, Math.ceil(Math.log2((spec.mode === 'closed' ? spec.window : 1) + 1)));
const MASK = RING - 1;

const epochNow = () => performance.timeOrigin + performance.now();

interface Client {
  socket: dgram.Socket;
  announced: boolean;
  /** 0: announcing, 1: proving (shareId known), 2: verified, pulsing. */
  stage: 0 | 1 | 2;
  shareId: string;
  outstanding: number;
  lastProgress: number;
  // Send times of unanswered pulses, oldest at tail: the server answers a
  // client's pulses in order, so a reply always belongs to the oldest one.
  ring: Float64Array;
  head: number;
  tail: number;
}

const counts: WorkerCounts = {
  announced: 0,
  announceFailed: 0,
  proofFailed: 0,
  sent: 0,
  sentInWindow: 0,
  neverSent: 0,
  repliesInWindow: 0,
  answeredInWindow: 0,
  unknownSession: 0,
  timedOut: 0,
  other: 0,
  sendErrors: 0,
  fellBehind: false,
  busy: 0,
};
const histogram = new Histogram();
let totalReplies = 0;
let unsentInWindow = () => 0; // open loop: pulses scheduled in the window but never sent
let sending = false;
// Measurement window in this thread's performance.now() time base.
let measureFrom = Infinity;
let measureUntil = -Infinity;

function send(c: Client, scheduledAt = performance.now()): void {
  const now = scheduledAt;
  if (c.head - c.tail >= RING) c.tail++; // should not happen: the oldest is forgotten
  c.ring[c.head & MASK] = now;
  c.head++;
  c.outstanding++;
  counts.sent++;
  if (now >= measureFrom && now < measureUntil) counts.sentInWindow++;
  c.socket.send(PULSE);
}

function refill(c: Client): void {
  while (sending && c.outstanding < spec.window) send(c);
}

/** Before the load: the announce reply gives the shareId, the proof's full reply ends the handshake. */
function onSetupMessage(c: Client, msg: Buffer): void {
  const isPulse = msg.indexOf(PULSE_REPLY) !== -1;
  if (c.stage === 0 && !isPulse) {
    c.shareId = shareIdOf(msg) ?? NO_ID;
    c.stage = 1;
    c.announced = true;
    counts.announced++;
  } else if (c.stage === 1 && isPulse && msg.indexOf(SHARE_ID) !== -1 && msg.indexOf(UNKNOWN_SESSION) === -1) {
    c.stage = 2; // a full reply (or the echo's copy of the proof): verified
  }
}

function onMessage(c: Client, msg: Buffer): void {
  if (c.stage !== 2) return onSetupMessage(c, msg);
  const now = performance.now();
  if (msg.indexOf(PULSE_REPLY) === -1) {
    counts.other++; // e.g. the second announce form, arriving late
    return;
  }
  totalReplies++;
  if (msg.indexOf(UNKNOWN_SESSION) !== -1) counts.unknownSession++;
  if (now >= measureFrom && now < measureUntil) counts.repliesInWindow++;
  if (c.head !== c.tail) {
    const sentAt = c.ring[c.tail & MASK]!;
    c.tail++;
    if (sentAt >= measureFrom && sentAt < measureUntil) {
      counts.answeredInWindow++;
      histogram.record((now - sentAt) * 1e6); // nanoseconds
    }
  }
  c.lastProgress = now;
  if (c.outstanding > 0) {
    c.outstanding--;
    if (spec.mode === 'open' && c.outstanding === 0) idle.push(c);
  }
  if (spec.mode === 'closed') refill(c);
}

/** Open loop: clients with no pulse in flight. */
const idle: Client[] = [];

async function openClients(): Promise<Client[]> {
  const clients: Client[] = [];
  for (let i = 0; i < spec.clients; i++) {
    const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: 1 << 20, sendBufferSize: 1 << 20 });
    const c: Client = { socket, announced: false, stage: 0, shareId: '', outstanding: 0, lastProgress: 0, ring: new Float64Array(RING), head: 0, tail: 0 };
    socket.on('error', () => counts.sendErrors++);
    socket.on('message', (msg) => onMessage(c, msg));
    await new Promise<void>((resolve) => socket.bind(0, loopbackIp(spec.firstClient + i, spec.ipBlock), resolve));
    await new Promise<void>((resolve) => socket.connect(spec.port, spec.host, resolve));
    clients.push(c);
  }
  return clients;
}

async function announceAll(clients: Client[]): Promise<void> {
  const deadline = performance.now() + 5000;
  while (performance.now() < deadline) {
    const waiting = clients.filter((c) => c.stage !== 2);
    if (waiting.length === 0) break;
    // In small bursts: a thousand at once would overflow a default receive buffer.
    for (let i = 0; i < waiting.length; i += 64) {
      for (const c of waiting.slice(i, i + 64)) {
        if (c.stage === 0) c.socket.send(ANNOUNCE);
        else if (c.stage === 1) c.socket.send(proofPulse(c.shareId));
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    // Most wait out one round trip: a client that just got its shareId proves at once.
    await new Promise((r) => setTimeout(r, 20));
    for (const c of clients) if (c.stage === 1) c.socket.send(proofPulse(c.shareId));
    await new Promise((r) => setTimeout(r, 230));
  }
  counts.announceFailed = clients.filter((c) => c.stage === 0).length;
  counts.proofFailed = clients.filter((c) => c.stage === 1).length;
}

/** Frees the slots of pulses (or replies) lost on the way. */
function sweepLost(clients: Client[], timeoutMs: number, onFreed: (c: Client) => void): void {
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const c of clients) {
      if (c.outstanding > 0 && now - c.lastProgress > timeoutMs) {
        counts.timedOut += c.outstanding;
        c.outstanding = 0;
        c.tail = c.head;
        c.lastProgress = now;
        onFreed(c);
      }
    }
    if (!sending) clearInterval(sweep);
  }, Math.max(5, timeoutMs / 4));
}

function runClosed(clients: Client[]): void {
  for (const c of clients) {
    c.lastProgress = performance.now();
    refill(c);
  }
  sweepLost(clients, spec.timeoutMs, refill);
}

function runOpen(clients: Client[], startedAt: number): void {
  const perMs = spec.rate / 1000;
  const burstCap = Math.max(64, Math.ceil(perMs * 20)); // more than 20 ms behind: say so
  idle.push(...clients);
  sweepLost(clients, 1000, (c) => idle.push(c));
  let scheduled = 0; // pulses sent so far, in schedule order
  let duePrev = 0; // pulses that were already due at the previous tick
  const tick = () => {
    if (!sending) return;
    const due = Math.floor((performance.now() - startedAt) * perMs);
    if (due - scheduled > burstCap) counts.fellBehind = true;
    // A pulse that already waited a whole tick for an idle client is timed from
    // its scheduled send time; the others from now, so the timer's own ~1 ms
    // granularity is not charged to the server.
    while (scheduled < due && idle.length > 0) {
      send(idle.pop()!, scheduled < duePrev ? startedAt + scheduled / perMs : performance.now());
      scheduled++;
    }
    duePrev = due;
    setTimeout(tick, 1);
  };
  // Pulses that were due at the last tick but found no idle client.
  unsentInWindow = () => {
    const firstInWindow = Math.max(0, Math.ceil((measureFrom - startedAt) * perMs));
    return Math.max(0, duePrev - Math.max(scheduled, firstInWindow));
  };
  tick();
}

const clients = await openClients();
await announceAll(clients);
post({ type: 'ready', announced: counts.announced, announceFailed: counts.announceFailed, proofFailed: counts.proofFailed });

port.once('message', (go: GoMessage) => {
  const toLocal = (epoch: number) => epoch - performance.timeOrigin;
  measureFrom = toLocal(go.measureFrom);
  measureUntil = toLocal(go.measureUntil);
  const progress = setInterval(() => post({ type: 'progress', replies: totalReplies }), 250);
  let elu0 = performance.eventLoopUtilization();

  setTimeout(() => {
    sending = true;
    if (spec.mode === 'closed') runClosed(clients);
    else runOpen(clients, performance.now());
  }, Math.max(0, go.startAt - epochNow()));
  setTimeout(() => (elu0 = performance.eventLoopUtilization()), Math.max(0, go.measureFrom - epochNow()));
  setTimeout(() => {
    sending = false;
    counts.neverSent = unsentInWindow();
    counts.busy = performance.eventLoopUtilization(elu0).utilization;
  }, Math.max(0, go.measureUntil - epochNow()));
  setTimeout(() => {
    clearInterval(progress);
    for (const c of clients) c.socket.close();
    const buf = histogram.counts;
    post({ type: 'done', counts, histogram: buf }, [buf.buffer as ArrayBuffer]);
  }, Math.max(0, go.measureUntil + go.drainMs - epochNow()));
});
