// IP addresses as the peer table stores them: 16 bytes, IPv4 as IPv4-mapped
// IPv6 (::ffff:a.b.c.d), so one key shape serves both families. Parsing works on
// bytes so a shard can read the address text straight out of a batch frame.

export const ADDR_BYTES = 16;

const groups = new Uint16Array(8);

function parseV4(src: Uint8Array, off: number, end: number, out: Uint8Array, o: number): boolean {
  let octet = 0, digits = 0, dots = 0;
  for (let i = off; i < end; i++) {
    const c = src[i]!;
    if (c === 46 /* . */) {
      if (digits === 0 || dots === 3) return false;
      out[o + dots] = octet;
      dots++; octet = 0; digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 3 || (digits > 0 && octet === 0)) return false; // no leading zeros
      octet = octet * 10 + (c - 48); digits++;
      if (octet > 255) return false;
    } else return false;
  }
  if (digits === 0 || dots !== 3) return false;
  out[o + 3] = octet;
  return true;
}

/**
 * Parses an IPv4 or IPv6 literal (a "%zone" suffix is ignored) into 16 bytes at
 * out[o..o+16]. Returns 4 for IPv4 and IPv4-mapped IPv6, 6 for other IPv6, 0 if invalid.
 */
export function parseIp(src: Uint8Array, off: number, len: number, out: Uint8Array, o: number): 0 | 4 | 6 {
  let end = off + len;
  let colon = false;
  for (let i = off; i < end; i++) {
    const c = src[i]!;
    if (c === 37 /* % */) { end = i; break; }
    if (c === 58) colon = true;
  }
  if (!colon) {
    out.fill(0, o, o + 10);
    out[o + 10] = 0xff; out[o + 11] = 0xff;
    return parseV4(src, off, end, out, o + 12) ? 4 : 0;
  }
  // IPv6: up to 8 hex groups, at most one "::", optionally ending in a dotted quad.
  let n = 0, gap = -1, i = off;
  if (src[i] === 58) {
    if (src[i + 1] !== 58) return 0;
    gap = 0; i += 2;
    if (i === end) { out.fill(0, o, o + 16); return 6; }
  }
  while (i < end) {
    let v = 0, digits = 0, j = i;
    while (j < end && digits <= 4) {
      const c = src[j]!;
      const d = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
      if (d < 0) break;
      v = (v << 4) | d; digits++; j++;
    }
    if (j < end && src[j] === 46) { // embedded IPv4 tail
      if (n > 6) return 0;
      const tmp = o; // parse into the last 4 bytes after we place groups
      if (!parseV4(src, i, end, out, tmp + 12)) return 0;
      groups[n++] = (out[tmp + 12]! << 8) | out[tmp + 13]!;
      groups[n++] = (out[tmp + 14]! << 8) | out[tmp + 15]!;
      i = end;
      break;
    }
    if (digits === 0 || digits > 4 || n === 8) return 0;
    groups[n++] = v;
    i = j;
    if (i === end) break;
    if (src[i] !== 58) return 0;
    i++;
    if (src[i] === 58) {
      if (gap >= 0) return 0;
      gap = n; i++;
      if (i === end) break;
    } else if (i === end) return 0;
  }
  if (gap < 0 ? n !== 8 : n > 7) return 0;
  const zeros = 8 - n;
  for (let g = 0, k = 0; g < 8; g++) {
    const v = gap >= 0 && g >= gap && g < gap + zeros ? 0 : groups[k++]!;
    out[o + 2 * g] = v >>> 8; out[o + 2 * g + 1] = v & 0xff;
  }
  return isV4Mapped(out, o) ? 4 : 6;
}

export function isV4Mapped(b: Uint8Array, o: number): boolean {
  for (let i = 0; i < 10; i++) if (b[o + i] !== 0) return false;
  return b[o + 10] === 0xff && b[o + 11] === 0xff;
}

/** Text form: dotted quad for IPv4 (and IPv4-mapped), RFC 5952 for IPv6. */
export function formatIp(b: Uint8Array, o: number): string {
  if (isV4Mapped(b, o)) return `${b[o + 12]}.${b[o + 13]}.${b[o + 14]}.${b[o + 15]}`;
  let bestAt = -1, bestLen = 1, runAt = -1, runLen = 0;
  for (let g = 0; g < 8; g++) {
    if (b[o + 2 * g] === 0 && b[o + 2 * g + 1] === 0) {
      if (runAt < 0) { runAt = g; runLen = 0; }
      runLen++;
      if (runLen > bestLen) { bestAt = runAt; bestLen = runLen; }
    } else runAt = -1;
  }
  let s = '';
  for (let g = 0; g < 8; g++) {
    if (g === bestAt) { s += g === 0 ? '::' : ':'; g += bestLen - 1; continue; }
    s += ((b[o + 2 * g]! << 8) | b[o + 2 * g + 1]!).toString(16);
    if (g < 7) s += ':';
  }
  return s;
}

/** "1.2.3.4:5" or "[2001:db8::1]:5". */
export function formatPeerAddr(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

const scratch = new Uint8Array(ADDR_BYTES);
const textScratch = new Uint8Array(64);

/** Validates an IP literal given as a string; returns its canonical text or null. */
export function canonicalIp(text: string): string | null {
  if (text.length === 0 || text.length > textScratch.length) return null;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 127) return null;
    textScratch[i] = c;
  }
  return parseIp(textScratch, 0, text.length, scratch, 0) === 0 ? null : formatIp(scratch, 0);
}
