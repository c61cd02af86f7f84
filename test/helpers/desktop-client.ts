// The sobani desktop client's tracker and peer traffic, as ../shared/PROTOCOL-NOTES.md
// describes it: the exact bytes it sends and the timers it sends them on. It cannot
// change, so tests replay it instead of using the project's client library.
//
//   start        every 1 s (first send 1 s after start): announce, until `announced`
//   `announced`  from then on, every 2 s (first 2 s later): alive, forever
//   connect(id)  every 1 s (first 1 s after the click): push, until `pushed`
//   `pushed`     one knock to the peer, never retried
//   `income`     a knock to the peer every 1 s (first 1 s later) until the peer has knocked or answered
// It accepts a knock only from the ip:port it learned through `pushed` or `income`,
// and logs and ignores every action it does not know.
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';

/** v0.1.2, the only tagged release, sends an 8-hex "id" in its announce and alive (not in push); later builds do not. */
export type Release = 'v0.1.2' | 'later';

export interface Received { action: string; raw: string; from: string; at: number }

export class DesktopClient {
  readonly received: Received[] = [];
  shareId: string | null = null;
  announcedAt = 0;
  /** ip:port learned through pushed or income */
  peer: string | null = null;
  connectedAt = 0;
  firstPushAt = 0;
  firstAliveAt = 0;
  /** Datagrams sent to the tracker, and their bytes on the wire (payload + IPv4 and UDP headers). */
  sent = { announce: 0, alive: 0, push: 0, wireBytes: 0 };
  /** Pushes sent before `pushed` arrived (0 until it does). */
  pushesBeforePushed = 0;
  pushedAt = 0;
  incomeAt = 0;
  private readonly id = randomBytes(4).toString('hex');
  private readonly timers: NodeJS.Timeout[] = [];
  private announceTimer: NodeJS.Timeout | null = null;
  private pushTimer: NodeJS.Timeout | null = null;
  private knockTimer: NodeJS.Timeout | null = null;
  private announceWaiters: (() => void)[] = [];

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly tracker: { address: string; port: number },
    readonly release: Release,
  ) {
    socket.on('message', (msg, rinfo) => this.onMessage(msg.toString('utf8'), `${rinfo.address}:${rinfo.port}`));
  }

  static async open(tracker: { address: string; port: number }, bindAddress: string, release: Release = 'later'): Promise<DesktopClient> {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, bindAddress, () => { socket.off('error', reject); resolve(); });
    });
    socket.on('error', () => {});
    socket.unref(); // a failed test must not keep its file's process alive
    return new DesktopClient(socket, tracker, release);
  }

  get address(): string {
    const a = this.socket.address();
    return `${a.address}:${a.port}`;
  }

  /**
   * The exact bytes of a tracker message: v0.1.2 puts its id first in announce and
   * alive (never in push); push puts the shareId before the action.
   */
  message(action: 'announce' | 'alive' | 'push', shareId?: string): string {
    const id = this.release === 'v0.1.2' ? `"id":"${this.id}",` : '';
    return action === 'push' ? `{"shareId":"${shareId}","action":"push"}` : `{${id}"action":"${action}"}`;
  }

  private toTracker(action: 'announce' | 'alive' | 'push', shareId?: string): void {
    const message = this.message(action, shareId);
    if (action === 'alive' && this.sent.alive === 0) this.firstAliveAt = Date.now();
    this.sent[action]++;
    this.sent.wireBytes += 28 + Buffer.byteLength(message);
    this.socket.send(message, this.tracker.port, this.tracker.address);
  }

  private every(ms: number, fn: () => void): NodeJS.Timeout {
    const t = setInterval(fn, ms);
    this.timers.push(t);
    return t;
  }

  /** The app starts: announce on a 1 s timer until `announced`. */
  start(): void {
    this.announceTimer = this.every(1000, () => this.toTracker('announce'));
  }

  /** Resolves with the shareId once `announced` has arrived. */
  announced(): Promise<string> {
    if (this.shareId !== null) return Promise.resolve(this.shareId);
    return new Promise((resolve) => this.announceWaiters.push(() => resolve(this.shareId!)));
  }

  /** The user clicks Connect with a friend's shareId: push on a 1 s timer until `pushed`. */
  connect(shareId: string): void {
    this.pushTimer = this.every(1000, () => {
      if (this.firstPushAt === 0) this.firstPushAt = Date.now();
      this.toTracker('push', shareId);
    });
  }

  private knock(): void {
    const [ip, port] = this.peer!.split(':'); // as the client parses peeraddr
    this.socket.send('{"action":"knock"}', Number(port), ip!);
  }

  private onMessage(raw: string, from: string): void {
    const at = Date.now();
    let action = '<not json>';
    let data: Record<string, string> = {};
    try {
      const m = JSON.parse(raw) as { action: string; data?: Record<string, string> };
      action = m.action; data = m.data ?? {};
    } catch { /* logged and ignored */ }
    this.received.push({ action, raw, from, at });
    const fromTracker = from === `${this.tracker.address}:${this.tracker.port}`;
    if (fromTracker && action === 'announced' && this.shareId === null) {
      this.shareId = data.shareId!;
      this.announcedAt = at;
      clearInterval(this.announceTimer!);
      this.every(2000, () => this.toTracker('alive'));
      for (const w of this.announceWaiters.splice(0)) w();
    } else if (fromTracker && action === 'pushed' && this.pushedAt === 0) {
      this.pushedAt = at;
      this.pushesBeforePushed = this.sent.push;
      clearInterval(this.pushTimer!);
      this.peer = data.peeraddr!;
      this.knock();
    } else if (fromTracker && action === 'income') {
      if (this.incomeAt === 0) this.incomeAt = at;
      this.peer = data.peeraddr!;
      if (this.knockTimer === null && this.connectedAt === 0) this.knockTimer = this.every(1000, () => this.knock());
    } else if (!fromTracker && from === this.peer && (action === 'knock' || action === 'answer')) {
      if (action === 'knock') this.socket.send('{"action":"answer"}', Number(from.split(':')[1]), from.split(':')[0]!);
      if (this.connectedAt === 0) this.connectedAt = at;
      if (this.knockTimer !== null) { clearInterval(this.knockTimer); this.knockTimer = null; }
    }
    // anything else (announceReceived, pushReceived, error, expired, a stranger's knock): ignored
  }

  /** Bytes on the wire of every datagram received from the tracker (payload + IPv4 and UDP headers). */
  trackerWireBytes(): number {
    const tracker = `${this.tracker.address}:${this.tracker.port}`;
    return this.received.filter((r) => r.from === tracker).reduce((n, r) => n + 28 + Buffer.byteLength(r.raw), 0);
  }

  /** Actions received from the tracker, in order. */
  trackerActions(): string[] {
    const tracker = `${this.tracker.address}:${this.tracker.port}`;
    return this.received.filter((r) => r.from === tracker).map((r) => r.action);
  }

  /** How many datagrams with this action came from the tracker. */
  count(action: string): number {
    return this.trackerActions().filter((a) => a === action).length;
  }

  /**
   * The tracker's answer to each push this client sent, in the order it sent them:
   * 'pushReceived', 'pushReceived+pushed' or 'pushed'. Which push a reply answers is
   * read from the order of the replies, not from when they came: the tracker answers
   * one address's requests in order. A push from a session whose dialect is not known
   * yet always gets pushReceived (a 70-byte push earns 210 bytes of credit, more than
   * it costs), then at once pushed if that fits too; a legacy session's push gets
   * pushed alone; and a session only turns legacy by an alive, whose alived falls in
   * between. So a pushed right after a pushReceived answers the same push.
   */
  pushAnswers(): string[] {
    const answers: string[] = [];
    let previous = '';
    for (const action of this.trackerActions()) {
      if (action === 'pushed' && previous === 'pushReceived') answers[answers.length - 1] += '+pushed';
      else if (action === 'pushReceived' || action === 'pushed') answers.push(action);
      previous = action;
    }
    return answers;
  }

  close(): void {
    for (const t of this.timers) clearInterval(t);
    this.socket.close();
  }
}
