// Messages and results shared by the load generator's threads.

export type LoadMode = 'closed' | 'open';

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
  | { type: 'ready'; announced: number; announceFailed: number }
  | { type: 'progress'; replies: number }
  | { type: 'done'; counts: WorkerCounts; histogram: Float64Array };
