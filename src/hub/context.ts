import { EventEmitter } from 'node:events';
import type { FastifyBaseLogger } from 'fastify';
import type { HubConfig } from './config.js';
import type { Store, HubDb } from './store/store.js';
import { Crypto } from './services/crypto.js';
import { AuditBudget, LOGIN_FAILURE_AUDIT_PER_MINUTE, LoginThrottle } from './services/login-throttle.js';
import { HubStats } from './stats.js';

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
  /** failed-login limits per address and per account (services/login-throttle.ts) */
  loginThrottle: LoginThrottle;
  /** bounds the failed-login rows in the audit log */
  loginAudit: AuditBudget;
  /** logins by result, change-ack waits (read by /metrics: src/hub/metrics.ts) */
  stats: HubStats;
}

export function createContext(config: HubConfig, store: Store, log: FastifyBaseLogger): HubContext {
  const events = new EventEmitter();
  events.setMaxListeners(0);
  return {
    config,
    store,
    db: store.db,
    crypto: new Crypto(config.secretKey),
    log,
    events,
    onClose: [],
    loginThrottle: new LoginThrottle({ perAddress: config.loginMaxFailures, perAccount: config.loginAccountMaxFailures }),
    loginAudit: new AuditBudget(LOGIN_FAILURE_AUDIT_PER_MINUTE),
    stats: new HubStats(),
  };
}
