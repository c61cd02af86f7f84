/** The typed client of the sobani tracker, and the hole-punch helper built on it. */
export { TrackerClient, TrackerError } from './tracker-client.js';
export type {
  CallOptions,
  IncomeEvent,
  PeerNat,
  PulseResult,
  PushResult,
  TrackerClientEvents,
  TrackerClientOptions,
} from './tracker-client.js';
export { punch, chooseStrategy } from './punch.js';
export type { PunchEvent, PunchOptions, PunchResult, PunchStats, PunchStrategy } from './punch.js';
export { discoverNat, isEasy } from './nat-discovery.js';
export { gatherLocalCandidates } from './local-candidates.js';
export type { GatherOptions } from './local-candidates.js';
export type { NatDiscovery } from './nat-discovery.js';
export type { Peer, PeerPath } from './peer-path.js';
export { MigratingPath, Roaming } from './roaming.js';
export type { MoveReason, RoamingEvent, RoamingOptions, RepunchStrategy } from './roaming.js';
export { TurnClient, TurnError, socketTransport, trackerTransport } from './turn-client.js';
export type { ChannelHold, TurnClientEvents, TurnClientOptions, TurnCounters, TurnFailure, TurnMethod, TurnPeer, TurnTransport } from './turn-client.js';
export { relayPath } from './relay-path.js';
export type { RelayPeer } from './relay-path.js';
export { formatPeerAddr, parseHostPort, parsePeerAddr } from './peer-addr.js';
export type { PeerAddr } from './peer-addr.js';
export type { Dialect, NatType, PulseOptions, TrackerReply } from './messages.js';
export { runClientCommand, CLIENT_COMMANDS, CLIENT_USAGE } from './cli.js';
export type { ClientCommandIo } from './cli.js';
