// Sessions that survive a restart. With --snapshot FILE the live sessions are
// written on shutdown (and every --snapshot-interval seconds), and read back on
// start before the first datagram is served.
//
// File layout: concatenated msgpackr values (no shared record structures, so any
// later reader can decode it):
//   1. header: { format: 'sobani-tracker-snapshot', version: 3, writtenAt (ms since
//      the epoch), shareIdLength, sessions (total), parts, sessionKey? (16 bytes: the
//      random session key of a tracker without --session-key-file, so the tokens it
//      issued survive the restart; never a key read from a file) }
//   2. `parts` SessionBlocks (wire/messages.ts), one per shard of the writer, in shard
//      order. Remaining ttls are counted from writtenAt.
// Versions read: 3; 2 and 1 (the releases before), upgraded as they are read (upgrade).
// Version 3 added each session's local candidates (a sparse list beside the overrides)
// and the session key.
// Shards pack their own block (off the main thread); the main thread only writes
// the bytes, to FILE.<pid>.tmp, then renames it over FILE so a reader never sees
// half a file.
//
// A session's shard follows from its shareId (routing.ts), so a snapshot restores
// into any shard count. Anything wrong with the file costs one log line and an
// empty start, never a crash.
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { Packr, Unpackr } from 'msgpackr';
import type { Logger } from 'pino';
import type { ControlOp, ExportedPart, SessionBlock } from '../wire/messages.js';
import { ADDR_BYTES } from '../protocol/address.js';
import { UNKNOWN } from '../protocol/dialect.js';
import { isLocalList } from '../protocol/local-candidates.js';
import { KEPT_ALIVE } from '../shard/peer-table.js';
import { alphabetValue, shardOfBucket } from '../routing.js';

export const SNAPSHOT_FORMAT = 'sobani-tracker-snapshot';
export const SNAPSHOT_VERSION = 3;
/** The oldest format version this release restores. */
const OLDEST_VERSION = 1;
/** How long one shard may take to pack its sessions. */
const EXPORT_TIMEOUT_MS = 30_000;

export interface SnapshotHeader {
  format: string;
  version: number;
  writtenAt: number;
  shareIdLength: number;
  sessions: number;
  parts: number;
  /** version 3: the tracker's random session key (absent when it came from a file) */
  sessionKey?: Uint8Array;
}

/** The part of a ShardLink this module uses. */
export interface ShardControl {
  readonly index: number;
  control(op: ControlOp, arg?: unknown, timeoutMs?: number, transfer?: ArrayBuffer[]): Promise<unknown>;
}

/** Why a snapshot file was not restored; the message is the log line's reason. */
export class SnapshotError extends Error {}

// ------------------------------------------------------------------ writing

export interface WriteResult { sessions: number; bytes: number; ms: number; missingShards: number[] }

/** Asks every shard for its packed sessions and writes them as one file. */
export async function writeSnapshot(file: string, shareIdLength: number, links: readonly ShardControl[], sessionKey: Uint8Array | null = null): Promise<WriteResult> {
  const started = performance.now();
  const writtenAt = Date.now();
  const exported = (await Promise.all(links.map((l) => l.control('export', undefined, EXPORT_TIMEOUT_MS)))) as (ExportedPart | null)[];
  const got = exported.filter((p): p is ExportedPart => p !== null);
  const parts = got.map((p) => p.packed);
  const missingShards = links.filter((_, i) => exported[i] === null).map((l) => l.index);
  const sessions = got.reduce((n, p) => n + p.count, 0);
  const header: SnapshotHeader = { format: SNAPSHOT_FORMAT, version: SNAPSHOT_VERSION, writtenAt, shareIdLength, sessions, parts: parts.length };
  if (sessionKey !== null) header.sessionKey = sessionKey;
  const frames = [Uint8Array.prototype.slice.call(new Packr({ useRecords: false }).pack(header)), ...parts];
  await writeAtomically(file, frames);
  return { sessions, bytes: frames.reduce((n, f) => n + f.length, 0), ms: performance.now() - started, missingShards };
}


async function writeAtomically(file: string, frames: Uint8Array[]): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writev(frames);
      await fh.sync(); // the rename must not land before the bytes do
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

/** Periodic and shutdown writes; never two at once. */
export class SnapshotWriter {
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> | null = null;

  constructor(
    private readonly file: string,
    private readonly shareIdLength: number,
    private readonly links: readonly ShardControl[],
    private readonly log: Logger,
    private readonly sessionKey: Uint8Array | null = null,
  ) {}

  /** Writes every intervalS seconds (0 = never) until stop(). */
  start(intervalS: number): void {
    if (intervalS <= 0) return;
    this.timer = setInterval(() => { if (this.writing === null) void this.write('interval'); }, intervalS * 1000);
    this.timer.unref();
  }

  /** Stops the timer, waits for a write in progress, then writes once more. */
  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.writing;
    await this.write('shutdown');
  }

  write(reason: 'interval' | 'shutdown'): Promise<void> {
    const run = (async () => {
      try {
        const r = await writeSnapshot(this.file, this.shareIdLength, this.links, this.sessionKey);
        const fields = { file: this.file, reason, sessions: r.sessions, bytes: r.bytes, ms: Math.round(r.ms) };
        if (r.missingShards.length > 0) {
          this.log.warn({ ...fields, missingShards: r.missingShards }, 'snapshot written WITHOUT the sessions of shards that did not answer');
        } else if (reason === 'shutdown') this.log.info(fields, 'snapshot written');
        else this.log.debug(fields, 'snapshot written');
      } catch (err) {
        this.log.error({ file: this.file, reason, err }, 'snapshot could not be written');
      } finally {
        this.writing = null;
      }
    })();
    this.writing = run;
    return run;
  }
}

// ------------------------------------------------------------------ reading

/** Decodes and checks a whole snapshot file. Throws SnapshotError with the reason. */
export function decodeSnapshot(buf: Uint8Array, shareIdLength: number): { header: SnapshotHeader; blocks: SessionBlock[] } {
  if (buf.length === 0) throw new SnapshotError('the file is empty');
  let header: SnapshotHeader | null = null;
  const blocks: SessionBlock[] = [];
  try {
    new Unpackr({ useRecords: false }).unpackMultiple(buf, (value: unknown) => {
      // The header is checked before the rest is read: a future version may lay it out differently.
      if (header === null) header = checkHeader(value, shareIdLength);
      else blocks.push(upgrade(checkBlock(value, shareIdLength, blocks.length, header.version), header.version));
    });
  } catch (err) {
    if (err instanceof SnapshotError) throw err;
    const e = err as Error & { incomplete?: boolean };
    throw new SnapshotError(header === null
      ? `not a ${SNAPSHOT_FORMAT} file (${e.message})`
      : e.incomplete ? `the file is truncated (${e.message})` : `the file is corrupt (${e.message})`);
  }
  const h = header as SnapshotHeader | null;
  if (h === null) throw new SnapshotError('the file is empty');
  if (blocks.length !== h.parts) throw new SnapshotError(`the file is truncated: ${blocks.length} of ${h.parts} parts`);
  const total = blocks.reduce((n, b) => n + b.count, 0);
  if (total !== h.sessions) throw new SnapshotError(`the file is corrupt: it holds ${total} sessions, its header says ${h.sessions}`);
  return { header: h, blocks };
}

function checkHeader(v: unknown, shareIdLength: number): SnapshotHeader {
  const h = v as Partial<SnapshotHeader> | null;
  if (h === null || typeof h !== 'object' || h.format !== SNAPSHOT_FORMAT) throw new SnapshotError(`not a ${SNAPSHOT_FORMAT} file`);
  if (typeof h.version !== 'number' || h.version > SNAPSHOT_VERSION) {
    throw new SnapshotError(`it is format version ${String(h.version)}, written by a newer sobani-tracker; this one reads version ${SNAPSHOT_VERSION}`);
  }
  if (h.version < OLDEST_VERSION) throw new SnapshotError(`format version ${h.version} is not supported`);
  if (h.shareIdLength !== shareIdLength) {
    throw new SnapshotError(`its shareIds are ${String(h.shareIdLength)} characters, this tracker's are ${shareIdLength} (--share-id-length)`);
  }
  if (!isCount(h.sessions) || !isCount(h.parts) || typeof h.writtenAt !== 'number' || !Number.isFinite(h.writtenAt) ||
    (h.sessionKey !== undefined && !(h.sessionKey instanceof Uint8Array && h.sessionKey.length === 16))) {
    throw new SnapshotError('the header is corrupt');
  }
  return h as SnapshotHeader;
}

const isCount = (n: unknown): n is number => Number.isInteger(n) && (n as number) >= 0;
const isOptString = (s: unknown): s is string | null => s === null || typeof s === 'string';

function checkBlock(v: unknown, idLen: number, part: number, version: number): SessionBlock {
  const b = v as Partial<SessionBlock> | null;
  const column = (c: unknown, width: number): boolean => c instanceof Uint8Array && c.length === (b!.count as number) * width;
  const ok = b !== null && typeof b === 'object' && isCount(b.count) &&
    column(b.addr, ADDR_BYTES) && column(b.port, 2) && column(b.dialect, 1) && column(b.flags, 1) && column(b.ids, idLen) && column(b.ttlMs, 4) &&
    (version === 1 || (column(b.nat, 1) && column(b.relayExpiry, 4))) &&
    Array.isArray(b.overrides) && b.overrides.every((o) => Array.isArray(o) && Number.isInteger(o[0]) && o[0] >= 0 &&
      o[0] < b.count! && isOptString(o[1]) && Number.isInteger(o[2]) && o[2] >= 0 && o[2] <= 65535 && isOptString(o[3])) &&
    (version < 3 || (Array.isArray(b.local) && b.local.every((l) => Array.isArray(l) && Number.isInteger(l[0]) && l[0] >= 0 && l[0] < b.count! && isLocalList(l[1]))));
  if (!ok) throw new SnapshotError(`the file is corrupt: part ${part} is not a session block`);
  return b as SessionBlock;
}

/**
 * A block as this release's shards import it, from any version read. Version 1
 * had no KEPT_ALIVE flag (a session's dialect was only ever learned from its
 * keep-alive then, so a known dialect means it had sent one) and no `nat` column
 * (no client had reported one). Versions 1 and 2 had no local candidates.
 */
function upgrade(b: SessionBlock, version: number): SessionBlock {
  if (version < 3) b.local = [];
  if (version !== 1) return b;
  for (let i = 0; i < b.count; i++) if (b.dialect[i] !== UNKNOWN) b.flags[i]! |= KEPT_ALIVE;
  b.nat = new Uint8Array(b.count);
  b.relayExpiry = new Uint8Array(b.count * 4);
  return b;
}

/**
 * Splits sessions by the shard they belong to in a tracker of `shards` shards,
 * dropping those whose ttl ran out `elapsedMs` ago or before.
 */
export function routeSessions(blocks: readonly SessionBlock[], shards: number, idLen: number, elapsedMs: number):
  { perShard: SessionBlock[]; expired: number; invalid: number } {
  let expired = 0, invalid = 0;
  const plans = blocks.map((b) => {
    const target = new Int32Array(b.count);
    const ttl = new DataView(b.ttlMs.buffer, b.ttlMs.byteOffset, b.ttlMs.byteLength);
    for (let i = 0; i < b.count; i++) {
      const hi = alphabetValue(b.ids[i * idLen]!), lo = alphabetValue(b.ids[i * idLen + 1]!);
      if (hi < 0 || lo < 0) { target[i] = -1; invalid++; continue; }
      if (ttl.getUint32(i * 4) <= elapsedMs) { target[i] = -1; expired++; continue; }
      target[i] = shardOfBucket((hi << 6) | lo, shards);
    }
    return target;
  });
  const counts = new Array<number>(shards).fill(0);
  for (const t of plans) for (let i = 0; i < t.length; i++) if (t[i]! >= 0) counts[t[i]!]!++;
  const perShard = counts.map((n): SessionBlock => ({
    count: 0, addr: new Uint8Array(n * ADDR_BYTES), port: new Uint8Array(n * 2), dialect: new Uint8Array(n),
    flags: new Uint8Array(n), nat: new Uint8Array(n), relayExpiry: new Uint8Array(n * 4), ids: new Uint8Array(n * idLen), ttlMs: new Uint8Array(n * 4), overrides: [], local: [],
  }));
  const ttlViews = perShard.map((b) => new DataView(b.ttlMs.buffer));
  blocks.forEach((b, k) => copySessions(b, plans[k]!, perShard, ttlViews, idLen, elapsedMs));
  return { perShard, expired, invalid };
}

function copySessions(from: SessionBlock, target: Int32Array, to: SessionBlock[], toTtl: DataView[], idLen: number, elapsedMs: number): void {
  const ttl = new DataView(from.ttlMs.buffer, from.ttlMs.byteOffset, from.ttlMs.byteLength);
  const newIndex = new Int32Array(from.count);
  for (let i = 0; i < from.count; i++) {
    const s = target[i]!;
    if (s < 0) continue;
    const b = to[s]!, j = b.count++;
    newIndex[i] = j;
    b.addr.set(from.addr.subarray(i * ADDR_BYTES, (i + 1) * ADDR_BYTES), j * ADDR_BYTES);
    b.port[j * 2] = from.port[i * 2]!; b.port[j * 2 + 1] = from.port[i * 2 + 1]!;
    b.dialect[j] = from.dialect[i]!;
    b.flags[j] = from.flags[i]!;
    b.nat[j] = from.nat[i]!;
    b.relayExpiry.set(from.relayExpiry.subarray(i * 4, i * 4 + 4), j * 4);
    b.ids.set(from.ids.subarray(i * idLen, (i + 1) * idLen), j * idLen);
    toTtl[s]!.setUint32(j * 4, ttl.getUint32(i * 4) - elapsedMs);
  }
  for (const [i, ip, port, multiaddr] of from.overrides) {
    if (target[i]! >= 0) to[target[i]!]!.overrides.push([newIndex[i]!, ip, port, multiaddr]);
  }
  for (const [i, local] of from.local) {
    if (target[i]! >= 0) to[target[i]!]!.local.push([newIndex[i]!, local]);
  }
}

/**
 * A snapshot file's bytes, read once at start (a named pipe can be read only once):
 * the session key comes from its header before the shards start, the sessions
 * after. What could not be read is an Error (restoreSnapshot says what, once).
 */
export async function readSnapshotFile(file: string): Promise<Buffer | Error> {
  try {
    return await readFile(file);
  } catch (err) {
    return err as Error;
  }
}

/**
 * The random session key a snapshot keeps (version 3), or null: no file, an older
 * version, a key from a file, or anything wrong with it (restoreSnapshot says what).
 */
export function snapshotSessionKey(bytes: Buffer | Error, shareIdLength: number): Uint8Array | null {
  if (bytes instanceof Error) return null;
  try {
    let header: SnapshotHeader | null = null;
    // the header alone: the sessions are decoded once, by restoreSnapshot
    new Unpackr({ useRecords: false }).unpackMultiple(bytes, (value: unknown) => {
      header = checkHeader(value, shareIdLength);
      return false;
    });
    return (header as SnapshotHeader | null)?.sessionKey ?? null;
  } catch {
    return null;
  }
}

/**
 * Restores FILE into the shards (`bytes`: what readSnapshotFile read of it, or it is
 * read now). Logs exactly one line: what was restored, or why nothing was. Never throws.
 */
export async function restoreSnapshot(file: string, shareIdLength: number, links: readonly ShardControl[], log: Logger, bytes?: Buffer | Error): Promise<number> {
  const started = performance.now();
  const buf = bytes ?? await readSnapshotFile(file);
  if (buf instanceof Error) {
    const code = (buf as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') log.info({ file }, 'no snapshot to restore yet; starting with no sessions');
    else log.warn({ file, err: buf }, `snapshot skipped: it cannot be read (${code ?? buf.message}); starting with no sessions`);
    return 0;
  }
  try {
    const { header, blocks } = decodeSnapshot(buf, shareIdLength);
    const elapsedMs = Math.max(0, Date.now() - header.writtenAt);
    const { perShard, expired, invalid } = routeSessions(blocks, links.length, shareIdLength, elapsedMs);
    const added = await Promise.all(links.map((l, s) => {
      const b = perShard[s]!;
      return l.control('import', b, 0, [b.addr.buffer, b.port.buffer, b.dialect.buffer, b.flags.buffer, b.nat.buffer, b.relayExpiry.buffer, b.ids.buffer, b.ttlMs.buffer] as ArrayBuffer[]);
    }));
    const restored = added.reduce<number>((n, a) => n + (typeof a === 'number' ? a : 0), 0);
    log.info({ file, restored, expired, skipped: header.sessions - restored - expired, invalid,
      writtenAt: new Date(header.writtenAt).toISOString(), ms: Math.round(performance.now() - started) }, 'snapshot restored');
    return restored;
  } catch (err) {
    const reason = err instanceof SnapshotError ? err.message : `restoring failed (${(err as Error).message})`;
    log.warn({ file }, `snapshot skipped: ${reason}; starting with no sessions`);
    return 0;
  }
}
