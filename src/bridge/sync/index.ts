export { HubSync, type ReleaseSink, type HubSyncOptions, type HubSyncDeps } from './hub-sync.js';
