// The optional `nat` field of the documented dialect: how a client's NAT maps
// (RFC 4787 / RFC 5780 terms, learned from the tracker's STUN). A session keeps it
// in one byte, and each side of a push is told the other's, so both pick the same
// punching strategy (src/client/punch.ts).

/** The values a client may report, as it writes them. */
export const NAT_TYPES = ['unknown', 'endpoint-independent', 'address-dependent', 'address-and-port-dependent'] as const;
export type NatType = (typeof NAT_TYPES)[number];

/** The session's byte when its client never reported one; otherwise 1 + the index in NAT_TYPES. */
export const NAT_NOT_REPORTED = 0;

/** The byte for a reported value, or -1 if it is not one of NAT_TYPES. */
export function natCode(value: unknown): number {
  const i = NAT_TYPES.indexOf(value as NatType);
  return i < 0 ? -1 : i + 1;
}

/** The reported value of a session's byte, or null if it never reported one. */
export function natName(code: number): NatType | null {
  return code > 0 && code <= NAT_TYPES.length ? NAT_TYPES[code - 1]! : null;
}

export const NAT_FIELD_ERROR = `"nat" must be one of ${NAT_TYPES.join(', ')}`;
