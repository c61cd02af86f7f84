// STUN requests from a socket the caller owns (the tracker client's, so the
// answers describe the very NAT mapping that holds the session): each request is
// retransmitted until its response arrives, matched by transaction id (RFC 8489
// 6.2.1, with a fixed interval: these servers are one LAN or one internet hop away).
// Used for Binding (nat-discovery.ts) and for TURN (turn-client.ts).
import { randomBytes } from 'node:crypto';
import type { RemoteInfo } from 'node:dgram';
import { decodeMessage, looksLikeStun, type StunMessage } from '../stun/codec.js';

export interface StunExchangeOptions {
  /** Give up after this long. Default 2000 ms. */
  timeoutMs?: number;
  /** Send again after this long without an answer. Default 250 ms. */
  retransmitMs?: number;
  signal?: AbortSignal;
}

/** What came back: the response (success or error class) and where it came from. */
export interface StunReply { message: StunMessage; from: RemoteInfo }

export class StunTimeoutError extends Error {
  constructor(readonly to: string, ms: number) {
    super(`no STUN response from ${to} within ${ms} ms`);
    this.name = 'StunTimeoutError';
  }
}

interface Pending { resolve(r: StunReply): void }

export class StunTransactions {
  readonly #pending = new Map<string, Pending>();

  /** A fresh transaction id. */
  static transactionId(): Buffer {
    return randomBytes(12);
  }

  /**
   * Sends `request` (whose transaction id is bytes 8-20) with `send` until its
   * response arrives; resolves with it, rejects with StunTimeoutError.
   */
  request(request: Buffer, send: (msg: Buffer) => void, to: string, opts: StunExchangeOptions = {}): Promise<StunReply> {
    const timeoutMs = opts.timeoutMs ?? 2000;
    const retransmitMs = opts.retransmitMs ?? 250;
    const key = request.subarray(8, 20).toString('hex');
    return new Promise<StunReply>((resolve, reject) => {
      const done = (): void => {
        clearInterval(again);
        clearTimeout(timer);
        this.#pending.delete(key);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => { done(); reject(opts.signal?.reason instanceof Error ? opts.signal.reason : new Error('aborted')); };
      // A socket closed meanwhile throws from send(): that ends the transaction,
      // rather than a timer's exception ending the process.
      const sendOnce = (): void => {
        try {
          send(request);
        } catch (err) {
          done();
          reject(err);
        }
      };
      const again = setInterval(sendOnce, retransmitMs);
      const timer = setTimeout(() => { done(); reject(new StunTimeoutError(to, timeoutMs)); }, timeoutMs);
      this.#pending.set(key, { resolve: (r) => { done(); resolve(r); } });
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      sendOnce();
    });
  }

  /** Takes a datagram that answers a pending request; false for anything else. */
  receive(msg: Buffer, from: RemoteInfo): boolean {
    if (this.#pending.size === 0 || !looksLikeStun(msg, 0, msg.length)) return false;
    const pending = this.#pending.get(msg.subarray(8, 20).toString('hex'));
    if (pending === undefined) return false;
    const m = decodeMessage(msg);
    if (typeof m === 'string') return true; // ours, but unreadable: keep waiting (it is sent again)
    pending.resolve({ message: m, from });
    return true;
  }
}
