export { startTracker, type Tracker, type TrackerStats } from './tracker.js';
export { loadConfig, resolveConfig, defaultConfig, printConfig, OPTIONS, ConfigError, type Config } from './config.js';
export { ERROR_CODES, type ErrorCode } from './protocol/errors.js';
