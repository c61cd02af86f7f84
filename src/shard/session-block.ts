// A shard's sessions as columns (wire/messages.ts SessionBlock), for snapshots
// (ops/snapshot.ts writes and reads the file): every live session with its
// remaining ttl out, and restored sessions in through the same table and wheel
// code as announce.
import { ADDR_BYTES } from '../protocol/address.js';
import { shardOfBucket } from '../routing.js';
import type { SessionBlock } from '../wire/messages.js';
import type { ShardContext } from './context.js';

export function exportSessions(s: ShardContext): SessionBlock {
  const { table: t, wheel } = s.sessions;
  const n = t.size, idLen = t.idLength;
  const block: SessionBlock = {
    count: n, addr: new Uint8Array(n * ADDR_BYTES), port: new Uint8Array(n * 2), dialect: new Uint8Array(n),
    flags: new Uint8Array(n), nat: new Uint8Array(n), relayExpiry: new Uint8Array(n * 4), ids: new Uint8Array(n * idLen), ttlMs: new Uint8Array(n * 4), overrides: [], local: [],
  };
  const ports = new DataView(block.port.buffer), ttls = new DataView(block.ttlMs.buffer), relays = new DataView(block.relayExpiry.buffer);
  s.readTime();
  const now = s.sessions.tick();
  let i = 0;
  // Every live slot is on the wheel (and only live slots are), so the wheel says which slots to visit.
  for (let slot = 0; slot < t.capacity && i < n; slot++) {
    if (!wheel.isScheduled(slot)) continue;
    const due = wheel.dueTick(slot);
    // byte loops, not subarray()+set(): no object per session (a shard may hold millions)
    for (let k = 0; k < ADDR_BYTES; k++) block.addr[i * ADDR_BYTES + k] = t.addr[slot * ADDR_BYTES + k]!;
    ports.setUint16(i * 2, t.port[slot]!);
    block.dialect[i] = t.dialect[slot]!;
    block.flags[i] = t.flags[slot]!;
    block.nat[i] = t.nat[slot]!;
    relays.setUint32(i * 4, t.relayExpiry[slot]!);
    for (let k = 0; k < idLen; k++) block.ids[i * idLen + k] = t.ids[slot * idLen + k]!;
    ttls.setUint32(i * 4, Math.max(0, (due - now) * s.sessions.tickMs));
    const o = t.overrides.get(slot);
    if (o !== undefined) block.overrides.push([i, o.ip, o.port, o.multiaddr]);
    const local = t.local.get(slot);
    if (local !== undefined) block.local.push([i, [...local]]);
    i++;
  }
  return block;
}

/**
 * Adds restored sessions. Sessions that do not route to this shard, or whose
 * address or shareId is already live, are skipped. Returns how many were added.
 */
export function importSessions(s: ShardContext, b: SessionBlock): number {
  const sessions = s.sessions, t = sessions.table, idLen = t.idLength;
  const key = s.requester.key;
  const ports = new DataView(b.port.buffer, b.port.byteOffset, b.port.byteLength);
  const ttls = new DataView(b.ttlMs.buffer, b.ttlMs.byteOffset, b.ttlMs.byteLength);
  const relays = new DataView(b.relayExpiry.buffer, b.relayExpiry.byteOffset, b.relayExpiry.byteLength);
  const slots = new Int32Array(b.count).fill(-1);
  s.readTime();
  let added = 0;
  for (let i = 0; i < b.count; i++) {
    const id = String.fromCharCode.apply(null, b.ids.subarray(i * idLen, (i + 1) * idLen) as unknown as number[]);
    const bucket = sessions.minter.bucketOf(id);
    if (bucket < 0 || shardOfBucket(bucket, s.opts.shards) !== s.opts.index) continue;
    key.set(b.addr.subarray(i * ADDR_BYTES, (i + 1) * ADDR_BYTES));
    const port = ports.getUint16(i * 2);
    if (sessions.at(key, port) >= 0 || t.findByShareId(id) >= 0) continue;
    const slot = t.insert(key, 0, port, 0, id);
    sessions.countForIp(key);
    t.dialect[slot] = b.dialect[i]!;
    t.flags[slot] = b.flags[i]!; // a verified client stays verified
    t.nat[slot] = b.nat[i]!;
    t.relayExpiry[slot] = relays.getUint32(i * 4);
    sessions.restore(slot, ttls.getUint32(i * 4));
    slots[i] = slot;
    added++;
  }
  for (const [i, ip, port, multiaddr] of b.overrides) {
    const slot = slots[i] ?? -1;
    if (slot >= 0) t.overrides.set(slot, { ip, port, multiaddr });
  }
  for (const [i, local] of b.local) {
    const slot = slots[i] ?? -1;
    if (slot >= 0) sessions.setLocal(slot, local);
  }
  if (added > 0) s.pointers.reregister(); // restored sessions point at this instance now
  s.counters.restored += added;
  return added;
}
