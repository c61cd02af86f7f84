// How often directory pointers are written, and how long Redis keeps them. Pure,
// so that the shards (which pace the writes) and the main thread agree without
// the shards loading the Redis client.

/**
 * A live session's pointer is written again this often: a third of the ttl, but
 * at least every 30 s, so directory writes stay well under 0.1 per second per
 * live session (1/30 s at most, 1/100 s at the default ttl of 300 s).
 */
export function pointerRefreshMs(ttlSeconds: number): number {
  return Math.max(30_000, Math.round((ttlSeconds * 1000) / 3));
}

/** A pointer outlives one missed refresh; a dead instance's pointers vanish after this. */
export function pointerTtlMs(ttlSeconds: number): number {
  return 2 * pointerRefreshMs(ttlSeconds) + 5000;
}
