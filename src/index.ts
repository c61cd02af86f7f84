export { startTracker, type Tracker } from './tracker.js';
export type { TrackerStats } from './ops/stats.js';
export { loadConfig, resolveConfig, defaultConfig, printConfig, OPTIONS, ConfigError, type Config } from './config.js';
export { ERROR_CODES, type ErrorCode } from './protocol/errors.js';
