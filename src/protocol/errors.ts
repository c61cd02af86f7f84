// Every error code a client can receive, with the plain-words message sent with it.
// The error table in docs/protocol.md is this list (test/docs.test.ts checks it). Codes are stable: clients may switch on them.

export const ERROR_CODES = {
  DATAGRAM_TOO_LARGE: 'the datagram is larger than the tracker accepts',
  NOT_JSON: 'the datagram is not valid UTF-8 JSON',
  NOT_AN_OBJECT: 'the message must be a JSON object such as {"action":"pulse"}',
  MISSING_ACTION: 'the message has no "action" field',
  UNKNOWN_ACTION: '"action" must be one of announce, pulse, alive, push, relay',
  INVALID_FIELD: 'a field has the wrong type',
  FIELD_TOO_LONG: 'a field is longer than allowed',
  INVALID_IP: '"ip" must be an IPv4 or IPv6 address literal',
  INVALID_PORT: '"port" must be an integer from 1 to 65535, as a number or a string',
  NO_SESSION: 'this address has no live session: announce first',
  UNKNOWN_SHARE_ID: 'no live session has that shareId',
  SELF_PUSH: 'that shareId is your own',
  SESSION_LIMIT: 'this IP address has as many live sessions as the tracker allows one address',
  TRACKER_FULL: 'the tracker holds as many live sessions as it allows; try again later',
  PEER_ADDRESS_UNSUPPORTED: 'the peer has only an IPv6 address, which this (legacy) client cannot read',
  PEER_UNREACHABLE: 'that shareId belongs to another tracker instance, which did not answer: it may have stopped',
  DIRECTORY_UNAVAILABLE: 'the session directory shared by the tracker instances cannot be reached right now; try again soon',
  RELAY_NOT_CONFIGURED: 'this tracker has no relay (TURN server) to hand out credentials for',
  PROOF_REQUIRED: 'prove that you receive at your address first: pulse with your own shareId',
  RELAY_RATE_LIMITED: 'too many relay requests from this IP address; try again in a second',
  RELAY_NOT_ALLOWED: 'that relay address is not on a relay this tracker hands out',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export function errorJson(code: ErrorCode, message: string = ERROR_CODES[code]): string {
  return JSON.stringify({ action: 'error', data: { code, message } });
}
