import { EventEmitter } from 'node:events';
import type { FastifyBaseLogger } from 'fastify';
import type { HubConfig } from './config.js';
import type { Store, HubDb } from './store/store.js';
import { Crypto } from './services/crypto.js';

/** Everything a Hub route or service needs, built once at start and passed explicitly. */
export interface HubContext {
  config: HubConfig;
  store: Store;
  db: HubDb;
  crypto: Crypto;
  log: FastifyBaseLogger;
  /** emits 'changed' after a change_events row was committed (see services/events.ts) */
  events: EventEmitter;
  /** cleanup callbacks run on close (streams, listeners, timers) */
  onClose: Array<() => Promise<void> | void>;
}

export function createContext(config: HubConfig, store: Store, log: FastifyBaseLogger): HubContext {
  const events = new EventEmitter();
  events.setMaxListeners(0);
  return { config, store, db: store.db, crypto: new Crypto(config.secretKey), log, events, onClose: [] };
}
