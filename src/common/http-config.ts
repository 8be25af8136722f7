/**
 * The settings of the HTTP layer Hub and Bridge share (src/common/http.ts): part of each process's
 * environment schema (HUB_ENV, BRIDGE_ENV), so they are read and checked at start with the rest, and
 * handed to `createBaseApp` — which reads no environment itself.
 */
import { z } from 'zod';
import { env, readEnv } from './env-config.js';
import { parseTrustProxy, type TrustProxy } from './trust-proxy.js';
import { BODY_INFLIGHT_MAX_BYTES } from './body-gauge.js';

/**
 * Open connections: at most STK_MAX_CONNECTIONS in all (keep it below the process's open-file limit,
 * so database connections can always be opened) and STK_MAX_CONNECTIONS_PER_ADDRESS from one client
 * address (your proxies named in STK_TRUST_PROXY are exempt: many clients share them). Over either, a
 * new connection gets 503 with Retry-After and is closed: one client holding idle sockets cannot take
 * a server's connections from everyone else.
 */
export const MAX_CONNECTIONS = 8192;
export const MAX_CONNECTIONS_PER_ADDRESS = 256;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The variables of the HTTP layer, spread into each process's schema. */
export const HTTP_ENV = {
  STK_LOG_LEVEL: env.choice('info', LOG_LEVELS),
  STK_TRUST_PROXY: env.parsed<TrustProxy>(false, (s) => parseTrustProxy(s)),
  STK_MAX_CONNECTIONS: env.int(MAX_CONNECTIONS, 1),
  STK_MAX_CONNECTIONS_PER_ADDRESS: env.int(MAX_CONNECTIONS_PER_ADDRESS, 1),
  STK_BODY_INFLIGHT_MAX_BYTES: env.int(BODY_INFLIGHT_MAX_BYTES, 1024),
};

export interface HttpSettings {
  /** STK_LOG_LEVEL: pino's level for every line but the access lines' own (info) */
  logLevel: LogLevel;
  /** STK_TRUST_PROXY (src/common/trust-proxy.ts) */
  trustProxy: TrustProxy;
  maxConnections: number;
  maxConnectionsPerAddress: number;
  /** STK_BODY_INFLIGHT_MAX_BYTES: request bodies held in memory at once (a quarter per client address) */
  bodyInflightMaxBytes: number;
}

type HttpEnv = z.output<z.ZodObject<typeof HTTP_ENV>>;

export function httpSettings(e: HttpEnv): HttpSettings {
  return {
    logLevel: e.STK_LOG_LEVEL,
    trustProxy: e.STK_TRUST_PROXY,
    maxConnections: e.STK_MAX_CONNECTIONS,
    maxConnectionsPerAddress: e.STK_MAX_CONNECTIONS_PER_ADDRESS,
    bodyInflightMaxBytes: e.STK_BODY_INFLIGHT_MAX_BYTES,
  };
}

/** Every variable unset: the defaults above (tests, and apps built without a process's config). */
export const DEFAULT_HTTP: HttpSettings = httpSettings(readEnv(z.object(HTTP_ENV), {}, (m) => new Error(m)));
