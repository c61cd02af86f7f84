// Request and reply batches in the wire layout the main thread and the shards
// exchange (src/wire/frame.ts), for tests that drive a Shard directly.

export interface RequestRecord { ip: string; port: number; payload: Uint8Array | string; bucket?: number }

/** A request batch, as the main thread writes it. */
export function requestBatch(records: readonly RequestRecord[]): Buffer {
  const parts: Buffer[] = [];
  for (const r of records) {
    const payload = Buffer.from(r.payload);
    const h = Buffer.alloc(6);
    h[0] = 0; h.writeUInt16BE(r.port, 1); h.writeUInt16BE(r.bucket ?? 0, 3); h[5] = r.ip.length;
    const len = Buffer.alloc(2); len.writeUInt16BE(payload.length);
    parts.push(h, Buffer.from(r.ip, 'latin1'), len, payload);
  }
  return Buffer.concat(parts);
}

/** A reply: to request #index of the batch, or (index -1) to an explicit address. */
export interface ReplyRecord { index: number; address: string; port: number; payload: string; bytes: Buffer }

/** The replies in a reply batch, as the main thread reads them. */
export function readReplies(out: Uint8Array | null): ReplyRecord[] {
  if (out === null) return [];
  const b = Buffer.from(out.buffer, out.byteOffset, out.byteLength);
  const replies: ReplyRecord[] = [];
  for (let o = 0; o < b.length;) {
    let reply: Omit<ReplyRecord, 'payload' | 'bytes'>, at: number;
    if (b[o] === 0) {
      reply = { index: b.readUInt16BE(o + 1), address: '', port: 0 };
      at = o + 3;
    } else {
      const alen = b[o + 4]!;
      reply = { index: -1, address: b.toString('latin1', o + 5, o + 5 + alen), port: b.readUInt16BE(o + 2) };
      at = o + 5 + alen;
    }
    const len = b.readUInt16BE(at);
    replies.push({ ...reply, payload: b.toString('utf8', at + 2, at + 2 + len), bytes: Buffer.from(b.subarray(at + 2, at + 2 + len)) });
    o = at + 2 + len;
  }
  return replies;
}

/** The sockets of a tracker bound to one IPv4 address, as shardOptions() takes them. */
export const ONE_UDP4_SOCKET = { socketTypes: ['udp4'], addresses: [{ address: '127.0.0.1', port: 3000 }] } as const;
