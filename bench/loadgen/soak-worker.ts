// The soak's load: a steady open-loop population of clients with churn. Each
// client has its own loopback IP (127.<3+>.X.Y). Documented clients send the
// padded announce, prove with one pulse carrying their shareId, then pulse;
// legacy clients (a tenth) announce unpadded and send `alive`. Every 100 ms a
// share of the active clients goes silent (its session is left to expire) and
// as many new clients arrive. Some clients push to other live clients.
import dgram from 'node:dgram';
import { parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { loopbackIp, PADDED_ANNOUNCE, PLAIN_PULSE, proofPulse, shareIdOf } from './types.js';

export interface SoakSpec {
  port: number;
  /** Keep-alives per second, all clients together. */
  rate: number;
  population: number;
  /** Clients going silent (and as many arriving) per second. */
  churn: number;
  /** Pushes per second, all clients together. */
  pushRate: number;
}

export interface SoakCounts {
  sent: number;
  replies: number;
  keepAliveReplies: number;
  /** Keep-alive replies in the seed README's form, without the shareId (the full one did not fit the budget). */
  seedForm: number;
  incomes: number;
  errors: number;
  arrived: number;
  silenced: number;
  active: number;
  pending: number;
}

const spec = workerData as SoakSpec;
const port = parentPort!;
const PULSE = Buffer.from(PLAIN_PULSE);
const ALIVE = Buffer.from('{"action":"alive"}');
const ANNOUNCE = Buffer.from('{"action":"announce"}');

interface Client {
  socket: dgram.Socket;
  legacy: boolean;
  id: string;
  stage: 0 | 1 | 2; // announcing, proving, active
  lastTry: number;
  pos: number; // index in `active` while stage 2
  connected: boolean;
}

const counts: SoakCounts = { sent: 0, replies: 0, keepAliveReplies: 0, seedForm: 0, incomes: 0, errors: 0, arrived: 0, silenced: 0, active: 0, pending: 0 };
const active: Client[] = [];
const pending = new Set<Client>();
let nextIp = 0;
let running = true;

function activate(c: Client): void {
  pending.delete(c);
  c.stage = 2;
  c.pos = active.length;
  active.push(c);
}

function handshake(c: Client): void {
  c.lastTry = performance.now();
  if (c.stage === 0) c.socket.send(c.legacy ? ANNOUNCE : Buffer.from(PADDED_ANNOUNCE));
  else if (c.stage === 1) c.socket.send(proofPulse(c.id));
  counts.sent++;
}

function onMessage(c: Client, m: Buffer): void {
  counts.replies++;
  if (m.includes('"income')) counts.incomes++;
  else if (m.includes('"error')) counts.errors++;
  if (c.stage === 0) {
    const id = shareIdOf(m);
    if (!id) return;
    c.id = id;
    if (c.legacy) activate(c);
    else {
      c.stage = 1;
      handshake(c);
    }
  } else if (c.stage === 1) {
    if (m.includes('"pulse') && m.includes('"shareId"')) activate(c);
  } else if (m.includes('"pulse') || m.includes('"alived')) {
    counts.keepAliveReplies++;
    if (m.includes('"pulseReceived"') && !m.includes('"shareId"')) counts.seedForm++;
  }
}

function arrive(): void {
  const ipIndex = nextIp++;
  const ip = loopbackIp(ipIndex % (254 * 254), 3 + Math.floor(ipIndex / (254 * 254)));
  const socket = dgram.createSocket('udp4');
  const c: Client = { socket, legacy: Math.random() < 0.1, id: '', stage: 0, lastTry: performance.now(), pos: -1, connected: false };
  socket.on('error', () => {});
  socket.on('message', (m) => onMessage(c, m));
  pending.add(c);
  counts.arrived++;
  socket.bind(0, ip, () => socket.connect(spec.port, '127.0.0.1', () => {
    c.connected = true;
    if (running) handshake(c);
  }));
}

function silence(): void {
  if (active.length === 0) return;
  const i = Math.floor(Math.random() * active.length);
  const c = active[i]!;
  const last = active.pop()!;
  if (last !== c) {
    active[i] = last;
    last.pos = i;
  }
  c.socket.close(); // goes silent: its session is left to expire
  counts.silenced++;
}

for (let i = 0; i < spec.population; i++) arrive();

const t0 = performance.now();
let keepAlives = 0;
let pushes = 0;
let churned = 0;
let rr = 0;
const tick = setInterval(() => {
  const now = performance.now();
  const elapsed = (now - t0) / 1000;
  // Churn: silence some and let as many new clients arrive.
  for (const due = Math.floor(elapsed * spec.churn); churned < due; churned++) {
    silence();
    arrive();
  }
  for (const c of pending) if (c.connected && now - c.lastTry > 1000) handshake(c);
  for (const due = Math.floor(elapsed * spec.rate); keepAlives < due && active.length > 0; keepAlives++) {
    const c = active[rr++ % active.length]!;
    c.socket.send(c.legacy ? ALIVE : PULSE);
    counts.sent++;
  }
  for (const due = Math.floor(elapsed * spec.pushRate); pushes < due && active.length > 1; pushes++) {
    const from = active[Math.floor(Math.random() * active.length)]!;
    const to = active[Math.floor(Math.random() * active.length)]!;
    if (from === to) continue;
    from.socket.send(`{"action":"push","shareId":"${to.id}"}`);
    counts.sent++;
  }
  keepAlives = Math.max(keepAlives, Math.floor(elapsed * spec.rate) - spec.rate); // never more than 1 s of backlog
}, 10);

const report = setInterval(() => {
  counts.active = active.length;
  counts.pending = pending.size;
  port.postMessage({ type: 'counts', counts });
}, 1000);

port.on('message', (m: { type: string }) => {
  if (m.type !== 'stop') return;
  running = false;
  clearInterval(tick);
  clearInterval(report);
  counts.active = active.length;
  counts.pending = pending.size;
  for (const c of active) c.socket.close();
  for (const c of pending) c.socket.close();
  port.postMessage({ type: 'done', counts });
});
