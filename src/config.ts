// The one configuration schema. Every option is declared once below, with its
// doc beside it; defaults, config file, environment, flags, validation, --help,
// --print-config and the configuration table in docs/operations.md all come from this list.
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { existsSync, readFileSync } from 'node:fs';
import { MAX_DATAGRAM } from './io/datagram-io.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export type AnnounceReply = 'both' | 'documented' | 'legacy';
export type IoChoice = 'auto' | 'native' | 'dgram';

export interface Config {
  host: string;
  port: number;
  shards: number;
  ttl: number;
  announceTtl: number;
  logLevel: LogLevel;
  shareIdLength: number;
  announceReply: AnnounceReply;
  maxDatagram: number;
  maxMultiaddr: number;
  io: IoChoice;
  recvBufferSize: number;
  sendBufferSize: number;
  maxShardQueue: number;
  metricsPort: number;
  metricsHost: string;
  snapshot: string;
  snapshotInterval: number;
  maxSessions: number;
  maxSessionsPerIp: number;
  maxSessionsPerIpv6Prefix: number;
  maxTrackedIps: number;
  ipRate: number;
  ipBurst: number;
  pushRate: number;
  pushBurst: number;
  directory: string;
  directoryPasswordFile: string;
  instanceId: string;
  directoryTimeout: number;
  stunOtherHost: string;
  stunOtherPort: number;
  turnUrl: string;
  relayIps: string;
  turnSecret: string;
  turnSecretFile: string;
  turnTtl: number;
  relayInterval: number;
  relayRate: number;
  relayBurst: number;
  sessionKeyFile: string;
}

interface IntOption { kind: 'int'; min: number; max: number }
interface EnumOption { kind: 'enum'; values: readonly string[] }
/** An IP literal; with `optional`, "" means unset. */
interface HostOption { kind: 'host'; optional?: boolean }
/** A file path; "" means unset. */
interface PathOption { kind: 'path' }
/** A redis:// or rediss:// URL; "" means unset. */
interface RedisUrlOption { kind: 'redis-url' }
/** 1-64 characters of A-Z a-z 0-9 . _ - */
interface NameOption { kind: 'name' }
/** turn:HOST[:PORT] URLs, comma-separated; "" means unset. */
interface TurnUrlsOption { kind: 'turn-urls' }
/** Any text (a secret: never shown, see OptionSpec.show); "" means unset. */
interface TextOption { kind: 'text' }
/** IP literals, comma-separated; "" means unset. */
interface IpListOption { kind: 'ip-list' }
type OptionType = IntOption | EnumOption | HostOption | PathOption | RedisUrlOption | NameOption | TurnUrlsOption | TextOption | IpListOption;

interface OptionSpec {
  key: keyof Config;
  type: OptionType;
  default: () => Config[keyof Config];
  /** How the README's table states a default that is not one fixed value. */
  defaultDoc?: string;
  doc: string;
  /** The value as logs and --print-config show it, for a setting that may hold a secret (never shown). */
  show?: (value: string) => string;
  /**
   * The default is worked out at each start (from the host, or at random): --print-config
   * leaves it out unless it was given, so a saved config pins nothing that must differ
   * between hosts or instances.
   */
  perStart?: true;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export const OPTIONS: readonly OptionSpec[] = [
  { key: 'host', type: { kind: 'host' }, default: () => '::',
    doc: 'Address to bind. "::" is every interface, IPv6 and IPv4 (falls back to 0.0.0.0 where IPv6 is off).' },
  { key: 'port', type: { kind: 'int', min: 0, max: 65535 }, default: () => 3000,
    doc: 'UDP port. 0 picks a free port (tests).' },
  { key: 'shards', type: { kind: 'int', min: 1, max: 64 }, default: () => Math.max(1, availableParallelism() - 1), defaultDoc: 'cores − 1 (≥ 1)', perStart: true,
    doc: 'Shard worker threads; each owns a slice of the peer table. Default: CPU cores - 1, at least 1.' },
  { key: 'ttl', type: { kind: 'int', min: 1, max: 86400 }, default: () => 300,
    doc: 'Seconds a session lives without a pulse/alive.' },
  { key: 'announceTtl', type: { kind: 'int', min: 1, max: 86400 }, default: () => 120,
    doc: 'Seconds a new session lives until its first pulse/alive (from then on, ttl). At most ttl: a larger value is taken as ttl. A forged announce makes such a session, so it is short-lived and the first to give way when the table is full.' },
  { key: 'logLevel', type: { kind: 'enum', values: LOG_LEVELS }, default: () => 'info',
    doc: 'pino log level. Nothing is logged per datagram at info.' },
  { key: 'shareIdLength', type: { kind: 'int', min: 8, max: 32 }, default: () => 12,
    doc: 'Characters in a shareId: 2 route to the shard, the rest are random (6 bits each).' },
  { key: 'announceReply', type: { kind: 'enum', values: ['both', 'documented', 'legacy'] }, default: () => 'both',
    doc: 'How announce is answered: both forms (announceReceived + announced), or one.' },
  // at most what fits a 64 KiB shard batch with its record header (io/datagram-io.ts)
  { key: 'maxDatagram', type: { kind: 'int', min: 64, max: MAX_DATAGRAM }, default: () => 1024,
    doc: 'Largest request accepted, in bytes; larger ones get DATAGRAM_TOO_LARGE.' },
  { key: 'maxMultiaddr', type: { kind: 'int', min: 1, max: 1024 }, default: () => 256,
    doc: 'Longest multiaddr a pulse may set, in characters.' },
  { key: 'io', type: { kind: 'enum', values: ['auto', 'native', 'dgram'] }, default: () => 'auto',
    doc: 'How the main thread moves datagrams: native (the sobani_udp addon: recvmmsg/sendmmsg, one JS call per batch), dgram (Node dgram, one JS call per datagram), or auto: native where the addon is built, else dgram with a warning.' },
  { key: 'recvBufferSize', type: { kind: 'int', min: 65536, max: 1 << 30 }, default: () => 4 << 20,
    doc: 'SO_RCVBUF bytes asked for (the kernel caps it at net.core.rmem_max).' },
  { key: 'sendBufferSize', type: { kind: 'int', min: 65536, max: 1 << 30 }, default: () => 4 << 20,
    doc: 'SO_SNDBUF bytes asked for (the kernel caps it at net.core.wmem_max).' },
  { key: 'maxShardQueue', type: { kind: 'int', min: 1, max: 100000 }, default: () => 256,
    doc: 'Full 64 KiB batches in flight to one shard before new datagrams for it are dropped (counted as shard_busy).' },
  { key: 'metricsPort', type: { kind: 'int', min: 0, max: 65535 }, default: () => 0,
    doc: 'TCP port of the HTTP listener serving /metrics (Prometheus) and /healthz. 0 = off.' },
  { key: 'metricsHost', type: { kind: 'host' }, default: () => '127.0.0.1',
    doc: 'Address the metrics listener binds. Loopback by default: the metrics are not for the public.' },
  { key: 'snapshot', type: { kind: 'path' }, default: () => '',
    doc: 'File the live sessions are saved to on SIGTERM/SIGINT and restored from on start. Empty = off.' },
  { key: 'snapshotInterval', type: { kind: 'int', min: 0, max: 86400 }, default: () => 0,
    doc: 'Also save the snapshot every this many seconds (needs --snapshot). 0 = only on shutdown.' },
  // Abuse limits (see the README's "Limits"). The totals are split evenly over the shards.
  { key: 'maxSessions', type: { kind: 'int', min: 1, max: 1 << 30 }, default: () => 5_000_000,
    doc: 'Live sessions in total. A new announce past it ends a session that proved nothing (first one that never sent a keep-alive, oldest first; then the least recently kept alive that never proved it receives at its address or used its token); when every session has proved itself, it gets TRACKER_FULL. About 140–230 bytes of RAM each (one source IP per session; measured: docs/benchmarks.md).' },
  { key: 'maxSessionsPerIp', type: { kind: 'int', min: 1, max: 1 << 30 }, default: () => 4096,
    doc: 'Live sessions per source IPv4 address; an announce past it gets SESSION_LIMIT. Generous: carrier-grade NAT puts many users behind one IP.' },
  { key: 'maxSessionsPerIpv6Prefix', type: { kind: 'int', min: 1, max: 1 << 30 }, default: () => 4096,
    doc: 'Live sessions per IPv6 /64 (one host may hold a whole /64); an announce past it gets SESSION_LIMIT. The request and push rates and the reply credit are per /64 too. A /64 routes to one shard, so the count is exact.' },
  { key: 'maxTrackedIps', type: { kind: 'int', min: 1, max: 1 << 30 }, default: () => 5_000_000,
    doc: 'Source IPs whose rate limits and reply credit are tracked; past it, new IPs are served statelessly (each reply within 3x its request).' },
  { key: 'ipRate', type: { kind: 'int', min: 1, max: 1_000_000 }, default: () => 4096,
    doc: 'Requests per second per source IP (IPv6: per /64) (token bucket); the excess is dropped and counted. Keep it at least maxSessionsPerIp / 2: desktop clients send alive every 2 s.' },
  { key: 'ipBurst', type: { kind: 'int', min: 1, max: 1_000_000 }, default: () => 8192,
    doc: 'Burst size of the per-IP request bucket.' },
  { key: 'pushRate', type: { kind: 'int', min: 1, max: 1_000_000 }, default: () => 256,
    doc: 'Push attempts per second per source IP (a desktop client retries push every second until answered); the excess is dropped and counted.' },
  { key: 'pushBurst', type: { kind: 'int', min: 1, max: 1_000_000 }, default: () => 512,
    doc: 'Burst size of the per-IP push bucket.' },
  // Several instances (see the README's "Running several instances").
  { key: 'directory', type: { kind: 'redis-url' }, default: () => '', show: (url) => redactUrl(url),
    doc: 'Session directory shared by several tracker instances: redis://HOST:PORT (or rediss://, redis://USER:PASSWORD@HOST:PORT). Empty = one instance, no Redis. A password in it is never logged or printed.' },
  { key: 'directoryPasswordFile', type: { kind: 'path' }, default: () => '',
    doc: 'File holding the session directory\'s password (a Docker or Kubernetes secret), instead of putting it in the directory URL. Read at start; one trailing newline is ignored.' },
  { key: 'instanceId', type: { kind: 'name' }, default: () => randomBytes(6).toString('hex'), defaultDoc: 'random per start', perStart: true,
    doc: 'This instance\'s name in the directory (its pub/sub channel). Must differ between instances.' },
  { key: 'directoryTimeout', type: { kind: 'int', min: 50, max: 60_000 }, default: () => 1000,
    doc: 'Milliseconds a push to another instance\'s session may take (lookup and answer) before the requester gets PEER_UNREACHABLE.' },
  // STUN (see the README's "STUN and NAT discovery"). Binding is always answered on the tracker's port.
  { key: 'stunOtherHost', type: { kind: 'host', optional: true }, default: () => '',
    doc: 'A second IP address of this host, for STUN NAT behaviour discovery (RFC 5780): STUN is then also answered on it and on --stun-other-port, and clients learn how their NAT maps. Needs --host set to the primary IP (not a wildcard) and a fixed --port. Empty = no discovery.' },
  { key: 'stunOtherPort', type: { kind: 'int', min: 0, max: 65535 }, default: () => 0, defaultDoc: 'port + 1',
    doc: 'The second UDP port for STUN NAT behaviour discovery (with --stun-other-host). 0 = --port + 1.' },
  // The relay (see the README's "Relay"): the tracker mints credentials, coturn relays.
  { key: 'turnUrl', type: { kind: 'turn-urls' }, default: () => '',
    doc: 'TURN relay(s) the tracker hands out credentials for: turn:HOST:PORT, comma-separated (coturn with use-auth-secret). Empty = no relay: relay requests get RELAY_NOT_CONFIGURED.' },
  { key: 'relayIps', type: { kind: 'ip-list' }, default: () => '', defaultDoc: 'the IPs of turnUrl\'s hosts',
    doc: 'IP addresses a relayed address in a push may be on (comma-separated); a push naming another gets RELAY_NOT_ALLOWED. Empty = the IPs of turnUrl\'s hosts (host names looked up once at start). Set it when the relay relays on other IPs than it listens on (coturn --relay-ip). With neither, every relayed address is refused.' },
  { key: 'turnSecret', type: { kind: 'text' }, default: () => '', show: (v) => (v === '' ? '' : REDACTED),
    doc: 'The secret shared with coturn (its static-auth-secret), to mint credentials with. Never logged or printed; prefer --turn-secret-file.' },
  { key: 'turnSecretFile', type: { kind: 'path' }, default: () => '',
    doc: 'File holding the secret shared with coturn (a Docker or Kubernetes secret), instead of --turn-secret. Read at start; one trailing newline is ignored.' },
  { key: 'turnTtl', type: { kind: 'int', min: 1, max: 86400 }, default: () => 600,
    doc: 'Seconds a minted TURN credential is valid. coturn checks it only when an allocation is made: it bounds when a relay may start, not how long it lasts.' },
  { key: 'relayInterval', type: { kind: 'int', min: 0, max: 86400 }, default: () => 60,
    doc: 'Seconds during which a session that asks for relay credentials again gets the same ones (with less ttl left) instead of new ones. Counted in the whole seconds of the credential\'s expiry, as coturn reads it: a credential minted at second T is reused until second T + this.' },
  { key: 'relayRate', type: { kind: 'int', min: 1, max: 1_000_000 }, default: () => 4,
    doc: 'Relay requests per second per source IP (token bucket); the excess gets RELAY_RATE_LIMITED.' },
  { key: 'relayBurst', type: { kind: 'int', min: 1, max: 1_000_000 }, default: () => 16,
    doc: 'Burst size of the per-IP relay request bucket.' },
  // Session tokens (docs/security.md): the key every token, tag and path challenge is made with.
  { key: 'sessionKeyFile', type: { kind: 'path' }, default: () => '',
    doc: 'File holding the session key (at least 16 characters of secret; a Docker or Kubernetes secret) that session tokens are made with. Several instances on one directory must share it. Empty = a random key, kept in the snapshot (with --snapshot) so tokens survive a restart.' },
];

export class ConfigError extends Error {}

/** Where a secret stood: a URL's password, or a whole secret setting. */
export const REDACTED = '<redacted>';

/** A URL with its password replaced by REDACTED (the user name stays: it is not a secret). */
export function redactUrl(url: string): string {
  if (url === '') return url;
  try {
    const u = new URL(url);
    if (u.password === '') return url;
    u.password = REDACTED;
    return u.toString().replace(encodeURIComponent(REDACTED), REDACTED);
  } catch {
    return REDACTED; // not a URL: show nothing of it
  }
}

/** The effective configuration as logs and --print-config show it: every secret replaced. */
export function displayConfig(c: Config): Record<keyof Config, unknown> {
  const shown = { ...c } as Record<keyof Config, unknown>;
  for (const o of OPTIONS) if (o.show !== undefined) shown[o.key] = o.show(c[o.key] as string);
  return shown;
}

/**
 * The secret in `file` (a setting such as directoryPasswordFile): its text, less one
 * trailing newline, as a Docker or Kubernetes secret file has. Throws a ConfigError
 * naming the setting and the file, never quoting what it holds.
 */
export function readSecretFile(setting: keyof Config, file: string): string {
  let text: string;
  try { text = readFileSync(file, 'utf8'); } catch (e) {
    throw new ConfigError(`${setting}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  text = text.replace(/\r?\n$/, '');
  if (text === '') throw new ConfigError(`${setting}: ${file} is empty`);
  return text;
}

/** Settings that are each valid but work against each other; start-up logs every one. */
export function configWarnings(c: Config): string[] {
  const warnings: string[] = [];
  // A desktop client sends alive every 2 s, so an IP at its session cap needs maxSessionsPerIp / 2 requests/s.
  const keepAlives = Math.ceil(c.maxSessionsPerIp / 2);
  if (c.ipRate < keepAlives) {
    warnings.push(`ipRate (${c.ipRate}/s) cannot keep maxSessionsPerIp (${c.maxSessionsPerIp}) sessions of one IP alive at the desktop client's cadence (alive every 2 s): set ipRate to at least ${keepAlives}`);
  }
  const prefixKeepAlives = Math.ceil(c.maxSessionsPerIpv6Prefix / 2);
  if (c.ipRate < prefixKeepAlives) {
    warnings.push(`ipRate (${c.ipRate}/s) cannot keep maxSessionsPerIpv6Prefix (${c.maxSessionsPerIpv6Prefix}) sessions of one IPv6 /64 alive at the desktop client's cadence (alive every 2 s): set ipRate to at least ${prefixKeepAlives}`);
  }
  if (c.directory !== '' && c.sessionKeyFile === '') {
    warnings.push('directory is set but sessionKeyFile is not: each instance makes its own random session key, so a token one instance issued is refused by the others, and messages between instances are not authenticated (anyone who can publish on the Redis can make an instance send its sessions forged income); give every instance the same --session-key-file');
  }
  return warnings;
}

const WILDCARDS = new Set(['::', '0.0.0.0', '0:0:0:0:0:0:0:0']);

/** The second UDP port of STUN NAT behaviour discovery (config stunOtherPort, or port + 1). */
export function stunOtherPort(c: Config): number {
  return c.stunOtherPort !== 0 ? c.stunOtherPort : c.port + 1;
}

/** Settings that cannot work together: start-up stops with a ConfigError naming them. */
export function checkConfig(c: Config): Config {
  if (c.stunOtherHost !== '') {
    const need = (ok: boolean, why: string): void => { if (!ok) throw new ConfigError(`stunOtherHost (${c.stunOtherHost}): ${why}`); };
    need(!WILDCARDS.has(c.host), `NAT behaviour discovery needs the tracker's primary IP address as host, not the wildcard ${c.host}`);
    need(c.host.includes(':') === c.stunOtherHost.includes(':'), `host (${c.host}) and stunOtherHost must be of the same address family`);
    need(c.host !== c.stunOtherHost, 'it must differ from host');
    need(c.port !== 0, 'NAT behaviour discovery needs a fixed port (port is 0)');
    need(stunOtherPort(c) <= 65535 && stunOtherPort(c) !== c.port, `the other port (${stunOtherPort(c)}) must be a port other than ${c.port}`);
  }
  const secrets = (c.turnSecret !== '' ? 1 : 0) + (c.turnSecretFile !== '' ? 1 : 0);
  if (secrets === 2) throw new ConfigError('turnSecret and turnSecretFile are both set: give the TURN secret in one place');
  if (c.turnUrl !== '' && secrets === 0) throw new ConfigError('turnUrl is set, but no secret to mint its credentials with (turnSecretFile or turnSecret)');
  if (c.turnUrl === '' && secrets > 0) throw new ConfigError('a TURN secret is set, but no relay to use it with (turnUrl)');
  return c;
}

/** --share-id-length <-> shareIdLength <-> SOBANI_SHARE_ID_LENGTH */
export const flagName = (key: string): string => key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
export const envName = (key: string): string => 'SOBANI_' + key.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();

function describeRange(t: OptionType): string {
  if (t.kind === 'int') return `an integer from ${t.min} to ${t.max}`;
  if (t.kind === 'enum') return `one of ${t.values.join(', ')}`;
  if (t.kind === 'path') return 'a file path (empty for none)';
  if (t.kind === 'redis-url') return 'a redis://HOST:PORT or rediss:// URL (empty for none)';
  if (t.kind === 'name') return '1 to 64 characters of A-Z a-z 0-9 . _ -';
  if (t.kind === 'turn-urls') return 'turn:HOST:PORT URLs, comma-separated (empty for none)';
  if (t.kind === 'text') return 'any text (empty for none)';
  if (t.kind === 'ip-list') return 'IPv4 or IPv6 address literals, comma-separated (empty for none)';
  return t.optional ? 'an IPv4 or IPv6 address literal (empty for none)' : 'an IPv4 or IPv6 address literal';
}

function coerce(spec: OptionSpec, raw: unknown, source: string): Config[keyof Config] {
  const fail = (): never => {
    const shown = spec.show !== undefined && typeof raw === 'string' ? spec.show(raw) : raw; // never quote a secret
    throw new ConfigError(`${spec.key} (${source}) is ${JSON.stringify(shown)}: it must be ${describeRange(spec.type)}`);
  };
  const t = spec.type;
  if (t.kind === 'int') {
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\s*\d+\s*$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isInteger(n) || n < t.min || n > t.max) fail();
    return n;
  }
  if (typeof raw !== 'string') return fail();
  if (t.kind === 'enum') {
    if (!t.values.includes(raw)) fail();
    return raw as Config[keyof Config];
  }
  if (t.kind === 'path') {
    if (raw.includes('\0')) fail();
    return raw;
  }
  if (t.kind === 'redis-url') {
    if (raw !== '' && !isRedisUrl(raw)) fail();
    return raw;
  }
  if (t.kind === 'name') {
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(raw)) fail();
    return raw;
  }
  if (t.kind === 'turn-urls') {
    if (raw !== '' && turnUrls(raw).some((u) => u === null)) fail();
    return raw;
  }
  if (t.kind === 'text') return raw;
  if (t.kind === 'ip-list') {
    if (raw !== '' && !raw.split(',').every((ip) => isIpLiteral(ip.trim()))) fail();
    return raw;
  }
  if (!(t.optional && raw === '') && !isIpLiteral(raw)) fail();
  return raw;
}

/**
 * The TURN URLs of a turnUrl setting (RFC 7065: turn:HOST[:PORT][?transport=udp]),
 * each as written, or null where one is not such a URL. The relay is UDP: a
 * transport other than udp, or turns:, is refused.
 */
export function turnUrls(list: string): (string | null)[] {
  return list.split(',').map((u) => u.trim()).map((u) =>
    /^turn:(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?(\?transport=udp)?$/.test(u) && Number(/:(\d{1,5})(\?|$)/.exec(u.slice(5))?.[1] ?? 3478) <= 65535 ? u : null);
}

function isRedisUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === 'redis:' || u.protocol === 'rediss:') && u.hostname !== '';
  } catch {
    return false;
  }
}

function isIpLiteral(s: string): boolean {
  // net.isIP would do, but importing node:net here keeps config light enough for --help.
  return /^(\d{1,3}\.){3}\d{1,3}$/.test(s) || (s.includes(':') && /^[0-9a-fA-F:.]+$/.test(s));
}

export function defaultConfig(): Config {
  const c = {} as Record<string, unknown>;
  for (const o of OPTIONS) c[o.key] = o.default();
  return c as unknown as Config;
}

/** Validates a partial config (e.g. from code or tests) and fills in defaults. */
export function resolveConfig(partial: Partial<Config> = {}): Config {
  const c = defaultConfig() as unknown as Record<string, unknown>;
  for (const [k, v] of Object.entries(partial)) {
    const spec = OPTIONS.find((o) => o.key === k);
    if (!spec) throw new ConfigError(`unknown setting "${k}"`);
    if (v !== undefined) c[k] = coerce(spec, v, 'option');
  }
  return checkConfig(c as unknown as Config);
}

export interface CliArgs {
  config: Config;
  configFile: string | null;
  /** The settings given by a flag, the environment or the config file (the rest are defaults). */
  given: ReadonlySet<keyof Config>;
  help: boolean;
  /** --print-config: the commented form; --print-config=json: plain JSON. */
  printConfig: false | 'commented' | 'json';
  /** About the environment: a SOBANI_* variable that is no setting (a typo is otherwise silently ignored). */
  warnings: string[];
}

/**
 * SOBANI_* variables that are no setting's but are the project's own: the config file's
 * name, and test/helpers/fault-shim.c's SOBANI_FAULT_*. (SOBANI_IO, the test passes'
 * switch, is the `io` setting itself: it sends every tracker the tests start down that path.)
 */
const OTHER_ENV = /^SOBANI_(CONFIG|FAULT_[A-Z0-9_]+)$/;

/** A warning for each SOBANI_* variable in env that nothing reads, with the setting it may be a typo of. */
export function unknownEnvWarnings(env: NodeJS.ProcessEnv): string[] {
  const known = OPTIONS.map((o) => envName(o.key));
  return Object.keys(env).filter((k) => k.startsWith('SOBANI_') && !known.includes(k) && !OTHER_ENV.test(k)).sort().map((k) => {
    const near = known.filter((n) => editDistance(k, n) <= 2);
    return `${k} is set, but no setting is named so: it is ignored${near.length > 0 ? ` (did you mean ${near.join(' or ')}?)` : ''}`;
  });
}

/** Levenshtein distance: a typo's distance from the name meant. */
function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length]!;
}

/**
 * Precedence: flags > environment > config file > defaults.
 * The file is --config FILE, else $SOBANI_CONFIG, else ./config.json when it exists.
 */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, cwdConfig = 'config.json'): CliArgs {
  const flags = new Map<string, string>();
  let configFile: string | null = env.SOBANI_CONFIG || null; // empty is unset, as for every SOBANI_* variable
  let help = false;
  let printConfig: CliArgs['printConfig'] = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') { help = true; continue; }
    if (arg === '--print-config') { printConfig = 'commented'; continue; }
    if (arg.startsWith('--print-config=')) {
      if (arg !== '--print-config=json') throw new ConfigError(`${arg}: --print-config takes no value, or =json`);
      printConfig = 'json';
      continue;
    }
    if (!arg.startsWith('--')) throw new ConfigError(`unexpected argument "${arg}" (see --help)`);
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    if (name !== 'config' && !OPTIONS.some((o) => flagName(o.key) === name)) throw new ConfigError(`unknown flag --${name} (see --help)`);
    const value = eq > 0 ? arg.slice(eq + 1) : argv[i + 1];
    // `--port --ttl 5`: a word beginning with "-" is the next flag, not --port's value (such a value is written --port=VALUE)
    if (value === undefined || (eq < 0 && value.startsWith('-'))) {
      throw new ConfigError(`--${name} needs a value${value === undefined ? '' : `, not the flag ${value} (a value beginning with "-" is written --${name}=VALUE)`}`);
    }
    if (eq < 0) i++;
    if (name === 'config') { configFile = value; continue; }
    flags.set(name, value);
  }
  if (configFile === null && existsSync(cwdConfig)) configFile = cwdConfig;

  let file: Record<string, unknown> = {};
  if (configFile !== null) {
    let text: string;
    try { text = readFileSync(configFile, 'utf8'); } catch (e) {
      throw new ConfigError(`cannot read config file ${configFile}: ${(e as Error).message}`);
    }
    // Whole-line // comments, as --print-config writes them, are blanked (not removed: JSON.parse's positions stay true).
    text = text.replace(/^[ \t]*\/\/.*$/gm, (line) => ' '.repeat(line.length));
    try { file = JSON.parse(text) as Record<string, unknown>; } catch (e) {
      throw new ConfigError(`config file ${configFile} is not valid JSON (whole-line // comments aside): ${(e as Error).message}`);
    }
    if (file === null || typeof file !== 'object' || Array.isArray(file)) {
      throw new ConfigError(`config file ${configFile} must hold a JSON object`);
    }
    for (const k of Object.keys(file)) {
      if (!OPTIONS.some((o) => o.key === k)) throw new ConfigError(`config file ${configFile}: unknown setting "${k}"`);
    }
  }

  const config = {} as Record<string, unknown>;
  const given = new Set<keyof Config>();
  for (const spec of OPTIONS) {
    const flag = flags.get(flagName(spec.key));
    const fromEnv = env[envName(spec.key)];
    if (flag !== undefined) config[spec.key] = coerce(spec, flag, `--${flagName(spec.key)}`);
    else if (fromEnv !== undefined && fromEnv !== '') config[spec.key] = coerce(spec, fromEnv, envName(spec.key));
    else if (spec.key in file) config[spec.key] = coerce(spec, file[spec.key], configFile!);
    else { config[spec.key] = spec.default(); continue; }
    given.add(spec.key);
  }
  return { config: checkConfig(config as unknown as Config), configFile, given, help, printConfig, warnings: unknownEnvWarnings(env) };
}

/**
 * What --print-config writes: every setting's value, less those it must not pin.
 * Left out (in the commented form, as a comment saying why): a default worked out at
 * each start (perStart), and a secret, which is never printed. What is left, saved as a
 * file, is a --config that gives the same configuration.
 */
function printedSettings(config: Config, given: ReadonlySet<keyof Config>): { o: OptionSpec; value: unknown; leftOut: string | null }[] {
  const shown = displayConfig(config);
  return OPTIONS.map((o) => {
    const value = shown[o.key];
    const leftOut = o.perStart && !given.has(o.key) ? `not pinned: the default (${o.defaultDoc}) is worked out at each start`
      : value !== config[o.key] ? 'a secret is never printed: give it again' : null;
    return { o, value, leftOut };
  });
}

/**
 * The effective configuration as --config reads it back: JSON, each setting after
 * `//` lines of its doc (`json`: plain JSON, no comments).
 */
export function printConfig(config: Config, given: ReadonlySet<keyof Config> = new Set(), form: 'commented' | 'json' = 'commented'): string {
  const settings = printedSettings(config, given);
  if (form === 'json') return JSON.stringify(Object.fromEntries(settings.filter((s) => s.leftOut === null).map((s) => [s.o.key, s.value])), null, 2);
  const last = settings.filter((s) => s.leftOut === null).at(-1);
  const lines = ['{'];
  for (const s of settings) {
    lines.push(`  // ${s.o.doc}`);
    lines.push(`  // ${describeRange(s.o.type)}; flag --${flagName(s.o.key)}, env ${envName(s.o.key)}`);
    const entry = `${JSON.stringify(s.o.key)}: ${JSON.stringify(s.value)}`;
    lines.push(s.leftOut === null ? `  ${entry}${s === last ? '' : ','}` : `  // ${entry}   (${s.leftOut})`);
  }
  lines.push('}');
  return lines.join('\n');
}

/** Column where every flag's description starts in --help, and the width it wraps at. */
export const HELP_COLUMN = 40;
export const HELP_WIDTH = 100;

/**
 * One --help entry: the flag, then its description from HELP_COLUMN on, wrapped at
 * HELP_WIDTH. A flag too long for its column gets its description on the next line.
 */
function helpRow(flag: string, doc: string): string[] {
  const indent = ' '.repeat(HELP_COLUMN);
  const lines: string[] = [];
  let line = flag.length < HELP_COLUMN - 1 ? flag.padEnd(HELP_COLUMN) : (lines.push(flag), indent);
  let empty = true;
  for (const word of doc.split(' ')) {
    if (!empty && line.length + 1 + word.length > HELP_WIDTH) { lines.push(line); line = indent; empty = true; }
    line += (empty ? '' : ' ') + word;
    empty = false;
  }
  lines.push(line);
  return lines;
}

/** A command besides running the tracker, as --help lists it: how it is called, and what it does. */
export interface CommandHelp { usage: string; doc: string }

export function helpText(commands: readonly CommandHelp[] = []): string {
  const arg = (t: OptionType): string =>
    t.kind === 'enum' ? t.values.join('|') : t.kind === 'int' ? 'N' : t.kind === 'path' ? 'FILE' : t.kind === 'redis-url' || t.kind === 'turn-urls' ? 'URL'
      : t.kind === 'name' ? 'NAME' : t.kind === 'text' ? 'TEXT' : t.kind === 'ip-list' ? 'ADDRS' : 'ADDR';
  return [
    'Usage: sobani-tracker [--config FILE] [--host ADDR] [--port N] [--shards N] [--ttl SECONDS] [--log-level LEVEL] [...]',
    '       sobani-tracker --print-config[=json] | --help',
    ...(commands.length > 0 ? [
      '       sobani-tracker COMMAND [...]        (sobani-tracker COMMAND --help: its options)',
      '',
      'Commands:',
      ...commands.flatMap((c) => helpRow(`  ${c.usage}`, c.doc)),
    ] : []),
    '',
    'Options (flags override SOBANI_* environment variables, which override the config file):',
    ...helpRow('  --config FILE', 'JSON file of settings, whole-line // comments allowed (default ./config.json if present; env SOBANI_CONFIG)'),
    ...OPTIONS.flatMap((o) => helpRow(`  --${flagName(o.key)} <${arg(o.type)}>`, o.doc)),
    ...helpRow('  --print-config[=json]', `Print the effective configuration, then exit: as a config file with every setting's doc in // comments (--config reads it back), or as plain JSON. Left out: secrets, and ${OPTIONS.filter((o) => o.perStart).map((o) => o.key).join(' and ')} unless given`),
    ...helpRow('  --help', 'This text'),
  ].join('\n');
}
