/** The typed client of the sobani tracker, and the hole-punch helper built on it. */
export { TrackerClient, TrackerError } from './tracker-client.js';
export type {
  CallOptions,
  IncomeEvent,
  PulseResult,
  PushResult,
  TrackerClientEvents,
  TrackerClientOptions,
} from './tracker-client.js';
export { punch } from './punch.js';
export type { PunchEvent, PunchOptions, PunchResult } from './punch.js';
export { formatPeerAddr, parseHostPort, parsePeerAddr } from './peer-addr.js';
export type { PeerAddr } from './peer-addr.js';
export type { Dialect, PulseOptions, TrackerReply } from './messages.js';
export { runClientCommand, CLIENT_COMMANDS, CLIENT_USAGE } from './cli.js';
export type { ClientCommandIo } from './cli.js';
