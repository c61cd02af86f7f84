// Short-lived TURN credentials in coturn's `use-auth-secret` scheme (the "TURN
// REST API" draft, draft-uberti-behave-turn-rest): the tracker and coturn share a
// secret, so the tracker mints a credential per session and coturn checks it with
// no database and no call back to the tracker.
//
//   username   = `${expiry unix seconds}:${id}`   coturn reads the digits before the
//                                                 first ':' as the expiry, refuses
//                                                 the username after it (401)
//   credential = base64(HMAC-SHA1(secret, username))
//
// The TURN client uses the credential as its long-term password (RFC 8489 9.2).
// coturn (4.6.1, tested in test/turn-client.test.ts) checks the expiry only when an
// allocation is made: an allocation made in time is refreshed, and gets
// permissions and channels, after its credential has expired. So the ttl bounds
// when a relay may start, not how long it lasts; it can be short. The id names
// who the credential was minted for (the shareId), which shows in coturn's logs.
import { createHmac } from 'node:crypto';

export interface TurnCredential {
  username: string;
  /** The password, for the TURN client's long-term credential. */
  credential: string;
  /** Seconds until coturn refuses it (the ttl it was minted with). */
  ttl: number;
}

/** A credential for `id` that coturn started with `--use-auth-secret --static-auth-secret secret` accepts until nowMs + ttlSeconds. */
export function mintTurnCredential(secret: string, id: string, ttlSeconds: number, nowMs: number = Date.now()): TurnCredential {
  if (!(Number.isInteger(ttlSeconds) && ttlSeconds > 0)) throw new RangeError(`a credential's ttl is a positive whole number of seconds, not ${ttlSeconds}`);
  return turnCredentialFor(secret, id, Math.floor(nowMs / 1000) + ttlSeconds, nowMs);
}

/**
 * The credential whose expiry is `expiry` (unix seconds), with the ttl left at
 * nowMs: what the tracker hands a session again within relayInterval.
 */
export function turnCredentialFor(secret: string, id: string, expiry: number, nowMs: number = Date.now()): TurnCredential {
  const username = `${expiry}:${id}`;
  return { username, credential: createHmac('sha1', secret).update(username).digest('base64'), ttl: Math.max(0, expiry - Math.floor(nowMs / 1000)) };
}
