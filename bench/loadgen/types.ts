// Messages and results shared by the load generator's threads.

import { MessageBuilder, messageType, METHOD, CLASS_REQUEST } from '../../src/stun/codec.js';

export type LoadMode = 'closed' | 'open';
/**
 * pulse: `{"action":"pulse"}`; token-pulse: `{"action":"pulse","token":"<the session's token>"}` from
 * sessions announced with `"token":true` (the native generator only); stun: a STUN Binding
 * request (RFC 8489), answered on the tracker's own port.
 */
export type LoadRequest = 'pulse' | 'token-pulse' | 'stun';

/**
 * A 20-byte STUN Binding request, what most STUN clients send. One transaction id
 * for all: the tracker answers each request alike, and the generator matches
 * replies by their magic cookie (STUN_MARKER), as it matches pulse replies by text.
 */
export const STUN_BINDING = new MessageBuilder(messageType(METHOD.BINDING, CLASS_REQUEST), Buffer.from('sobani-bench')).build();
export const STUN_MARKER = Buffer.from([0x21, 0x12, 0xa4, 0x42]);

/** What one generator thread is asked to do (its share of the clients and rate). */
export interface WorkerSpec {
  host: string;
  port: number;
  mode: LoadMode;
  clients: number;
  /** Closed loop: pulses outstanding per client. */
  window: number;
  /** Open loop: pulses per second offered by this thread. */
  rate: number;
  /** Closed loop: a slot with no reply for this long is counted lost and freed. */
  timeoutMs: number;
  /** Global index of this thread's first client: client g binds loopbackIp(g, ipBlock). */
  firstClient: number;
  /** Second octet of the clients' source addresses (127.<block>.X.Y). */
  ipBlock: number;
}

/**
 * A distinct loopback source address per simulated client: 127.<block>.X.Y with
 * X, Y in 1..254 (Linux routes all of 127/8 to lo), so the tracker's per-IP rate
 * limit and reply budget see one IP per client, as they would on the Internet.
 */
export function loopbackIp(index: number, block = 0): string {
  const x = 1 + Math.floor(index / 254);
  if (x > 254) throw new Error(`no more than ${254 * 254} loopback clients per block`);
  return `127.${block}.${x}.${1 + (index % 254)}`;
}

/** The requests every generator sends, in this order, and the load itself. */
// Padded to >= 48 bytes so an unverified new source may get both announce forms.
export const PADDED_ANNOUNCE = '{"action":"announce","pad":"xxxxxxxxxxxxxxxxxx"}';
export const proofPulse = (shareId: string) => `{"action":"pulse","shareId":"${shareId}"}`;
export const PLAIN_PULSE = '{"action":"pulse"}';

/** The shareId in an announce reply, or null (the echo server has none). */
export function shareIdOf(reply: Buffer | string): string | null {
  const m = /"shareId":"([^"]+)"/.exec(reply.toString());
  return m ? m[1]! : null;
}

/** Sent by the orchestrator once every thread has announced: times are epoch ms. */
export interface GoMessage {
  type: 'go';
  startAt: number;
  measureFrom: number;
  measureUntil: number;
  drainMs: number;
}

export interface WorkerCounts {
  announced: number;
  announceFailed: number;
  /** Clients whose proving pulse got no full reply (with the shareId). */
  proofFailed: number;
  /** Pulses sent, and those sent inside the measurement window. */
  sent: number;
  sentInWindow: number;
  /** Open loop: pulses due in the window that never found an idle client. */
  neverSent: number;
  /** Pulse replies received inside the measurement window (throughput). */
  repliesInWindow: number;
  /** Replies matched to a pulse sent inside the window (loss, latency). */
  answeredInWindow: number;
  /** Replies with status "1": the server did not know the session. */
  unknownSession: number;
  /** Closed loop: slots freed by the timeout. */
  timedOut: number;
  /** Datagrams that were neither a pulse reply nor the first announce reply. */
  other: number;
  sendErrors: number;
  /** Open loop: the thread fell behind the offered rate by more than a tick's burst. */
  fellBehind: boolean;
  /** Event-loop utilisation of this generator thread during the window (0..1). */
  busy: number;
}

export type WorkerMessage =
  | { type: 'ready'; announced: number; announceFailed: number; proofFailed: number }
  | { type: 'progress'; replies: number }
  | { type: 'done'; counts: WorkerCounts; histogram: Float64Array };

/** native: the C generator (native.ts), where built; node: worker threads of dgram sockets (worker.ts). */
export type Generator = 'native' | 'node';

export interface LoadOptions {
  port: number;
  mode: LoadMode;
  threads: number;
  clients: number;
  window: number;
  /** Open loop: total pulses per second offered. */
  rate: number;
  warmupMs: number;
  measureMs: number;
  drainMs: number;
  timeoutMs: number;
  /** Second octet of the clients' loopback source addresses (see loopbackIp). */
  ipBlock?: number;
  generator?: Generator;
  /** tracker: each client announces and proves before the load; none: it just sends (an echo server). The Node generator always tries. */
  setup: 'tracker' | 'none';
  /** What each client sends: a pulse (default), or a STUN Binding request (the native generator only). */
  request?: LoadRequest;
  /** Pulse replies received so far, a few times a second. */
  onProgress?: (replies: number) => void;
}

export interface LoadResult {
  mode: LoadMode;
  generator: Generator;
  seconds: number;
  /** The measurement window, epoch ms. */
  window: { startMs: number; endMs: number };
  clients: number;
  announceFailed: number;
  /** Clients whose proving pulse got no full reply (their session stayed unverified). */
  proofFailed: number;
  /** Pulses sent per second during the window (the open loop's real offered rate). */
  offered: number;
  /** Pulse replies received per second during the window. */
  replyRate: number;
  replies: number;
  /** Share of the pulses due during the window that got no reply (or were never sent). */
  loss: number;
  unknownSession: number;
  timedOut: number;
  other: number;
  sendErrors: number;
  fellBehind: boolean;
  /** How busy the generator was: event-loop utilisation of its threads (Node), CPU share of its thread (native); 1 = saturated. */
  generatorBusy: number;
  latencyMs: { p50: number; p99: number; p999: number; max: number; samples: number };
}
