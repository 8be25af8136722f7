/**
 * The Bridge's settings: every `STK_*` variable it reads, declared once with its default and checked
 * at start (src/common/env-config.ts). A bad value stops the start with a message naming the variable.
 * The shared HTTP layer's variables (STK_LOG_LEVEL, STK_TRUST_PROXY, …) are part of it: HTTP_ENV.
 */
import { hostname } from 'node:os';
import { z } from 'zod';
import { env, readEnv } from '../common/env-config.js';
import { HTTP_ENV, httpSettings, type HttpSettings } from '../common/http-config.js';
import type { HostPolicy } from '../common/net-policy.js';
import { METRICS_ENV, metricsSettings, type MetricsSettings } from '../common/metrics-config.js';

export interface BridgeConfig {
  port: number;
  host: string;
  /** one or more Hub base URLs; the Bridge fails over between them */
  hubUrls: string[];
  serviceToken: string;
  /** stable id reported to the Hub when acknowledging changes */
  bridgeId: string;
  disableAuth: boolean;
  selectMaxRows: number;
  queryTimeoutMs: number;
  maxStaleMs: number;
  rateLimitPerApiKey: number;
  /** invalid-key attempts per address per minute before 429 (STK_INVALID_KEY_LIMIT_PER_MIN) */
  invalidKeyLimitPerMin: number;
  /** global per-key rate limits (src/bridge/credentials/global-limits.ts); no redisUrl → per Bridge */
  rateLimit: {
    /** STK_RATE_LIMIT_REDIS_URL (may hold a password: never logged or quoted back) */
    redisUrl: string | undefined;
    /** STK_RATE_LIMIT_SYNC_MS: how often a Bridge syncs the keys it used */
    syncMs: number;
    /** STK_RATE_LIMIT_WINDOW_SECONDS: the window a per-minute limit applies to (60; shorter for tests) */
    windowMs: number;
    /** STK_RATE_LIMIT_REDIS_TIMEOUT_MS: a sync round slower than this counts as the store being down */
    timeoutMs: number;
  };
  /** how often the summary of refused requests is logged while there are some (STK_REFUSAL_LOG_SECONDS) */
  refusalLogMs: number;
  poolMax: number;
  /** STK_CONNECTION_ALLOW_HOSTS: loopback/link-local/metadata hosts a connection may reach anyway (src/common/net-policy.ts) */
  connectionAllow: HostPolicy;
  /** bytes one `/call` answer may hold (STK_RESPONSE_MAX_BYTES) */
  responseMaxBytes: number;
  /** bytes all answers being built or sent may hold together (STK_RESPONSE_INFLIGHT_MAX_BYTES) */
  responseInflightMaxBytes: number;
  /**
   * STK_BENCH_VERIFY_SAMPLES (benchmark only): a file path; when set, every key check is timed next
   * to a bare HMAC-SHA-256 and SIGUSR2 writes the samples there (src/bridge/credentials/verify-samples.ts)
   */
  benchVerifySamples?: string;
  /** the shared HTTP layer: log level, proxies, connection limits (src/common/http-config.ts) */
  http: HttpSettings;
  /** `/metrics` (STK_METRICS_*, src/common/metrics-config.ts): off unless STK_METRICS_PORT is set (absent = off) */
  metrics?: MetricsSettings;
  /** following the Hub */
  sync: {
    /** the Hub's heartbeat interval (STK_SYNC_HEARTBEAT_MS): no byte for 3× this → reconnect */
    heartbeatMs: number;
    /** reconnect backoff ceiling (STK_SYNC_MAX_BACKOFF_MS) */
    maxBackoffMs: number;
    /** how often usage is reported (STK_USAGE_REPORT_SECONDS, 0.2–60 s) */
    usageIntervalMs: number;
    /** how long `stk bridge start` waits for the first snapshot before listening (STK_BRIDGE_INITIAL_SYNC_TIMEOUT_MS) */
    initialTimeoutMs: number;
  };
}

export const RESPONSE_MAX_BYTES = 10 * 1024 * 1024;
export const RESPONSE_INFLIGHT_MAX_BYTES = 64 * 1024 * 1024;

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost']);

/** A Hub base URL; never quoted back (a mistyped one may hold a credential). */
function hubUrl(u: string): void {
  let url: URL | null = null;
  try {
    url = new URL(u);
  } catch {
    // reported below
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw new Error('each entry must be an http(s) URL such as http://hub.internal:4000');
  if (url.username || url.password) throw new Error('a Hub URL must not hold credentials (the Bridge authenticates with STK_SERVICE_TOKEN)');
}

/** A Redis URL; never quoted back (it may hold a password). */
function redisUrl(u: string): void {
  let url: URL | null = null;
  try {
    url = new URL(u);
  } catch {
    // reported below
  }
  if (!url || (url.protocol !== 'redis:' && url.protocol !== 'rediss:') || !url.hostname) {
    throw new Error('must be a redis:// or rediss:// URL such as redis://redis.internal:6379');
  }
}

/** Every variable the Bridge reads. */
export const BRIDGE_ENV = z.object({
  STK_DEV: env.flag(),
  STK_BRIDGE_PORT: env.port(3000),
  STK_BRIDGE_HOST: env.text('127.0.0.1'),
  STK_HUB_URL: env.list(['http://127.0.0.1:4000'], hubUrl),
  STK_SERVICE_TOKEN: env.secret(''),
  STK_BRIDGE_ID: env.text(undefined),
  STK_DISABLE_AUTH: env.flag(),
  STK_SELECT_MAX_ROWS: env.int(10_000, 1),
  STK_QUERY_TIMEOUT_SECONDS: env.durationMs('30', 1),
  STK_RELEASE_CACHE_MAX_STALE_SECONDS: env.durationMs('3600'),
  STK_RATE_LIMIT_PER_API_KEY: env.int(1000, 1),
  STK_INVALID_KEY_LIMIT_PER_MIN: env.int(100, 0),
  STK_RATE_LIMIT_REDIS_URL: env.secret(undefined, { check: redisUrl }),
  STK_RATE_LIMIT_SYNC_MS: env.int(100, 5, 1000),
  STK_RATE_LIMIT_WINDOW_SECONDS: env.int(60, 1, 3600),
  STK_RATE_LIMIT_REDIS_TIMEOUT_MS: env.int(2000, 10, 60_000),
  STK_REFUSAL_LOG_SECONDS: env.durationMs('10', 1000),
  STK_BRIDGE_POOL_MAX: env.int(10, 1, 1000),
  STK_CONNECTION_ALLOW_HOSTS: env.hostPolicy(),
  STK_RESPONSE_MAX_BYTES: env.int(RESPONSE_MAX_BYTES, 1024),
  STK_RESPONSE_INFLIGHT_MAX_BYTES: env.int(RESPONSE_INFLIGHT_MAX_BYTES, 1024),
  STK_SYNC_HEARTBEAT_MS: env.int(10_000, 1),
  STK_SYNC_MAX_BACKOFF_MS: env.int(5000, 1),
  STK_USAGE_REPORT_SECONDS: env.durationMs('60'),
  STK_BRIDGE_INITIAL_SYNC_TIMEOUT_MS: env.int(10_000, 0),
  STK_BENCH_VERIFY_SAMPLES: env.text(undefined),
  ...HTTP_ENV,
  ...METRICS_ENV,
});

export function loadBridgeConfig(source: NodeJS.ProcessEnv = process.env): BridgeConfig {
  const e = readEnv(BRIDGE_ENV, source, (m) => new Error(m));
  if (!e.STK_SERVICE_TOKEN && !e.STK_DEV) throw new Error('STK_SERVICE_TOKEN is required: the Bridge uses it to sync keys and releases from the Hub');
  const host = e.STK_BRIDGE_HOST;
  // without auth every tenant's data is one request away: only ever on this machine's loopback
  if (e.STK_DISABLE_AUTH && !LOOPBACK_HOSTS.has(host)) {
    throw new Error(
      `STK_DISABLE_AUTH=true serves every project's data without a key: it is refused unless STK_BRIDGE_HOST is a loopback address (127.0.0.1, ::1, localhost), not ${JSON.stringify(host)}`,
    );
  }
  const port = e.STK_BRIDGE_PORT;
  return {
    port,
    host,
    hubUrls: e.STK_HUB_URL.map((u) => u.replace(/\/+$/, '')),
    serviceToken: e.STK_SERVICE_TOKEN,
    // the host name keeps ids unique across machines and containers (where every pid may be 1)
    bridgeId:
      e.STK_BRIDGE_ID ??
      `bridge-${hostname()
        .replace(/[^A-Za-z0-9.-]/g, '-')
        .slice(0, 63)}-${process.pid}-${port}`,
    disableAuth: e.STK_DISABLE_AUTH,
    selectMaxRows: e.STK_SELECT_MAX_ROWS,
    queryTimeoutMs: e.STK_QUERY_TIMEOUT_SECONDS,
    maxStaleMs: e.STK_RELEASE_CACHE_MAX_STALE_SECONDS,
    rateLimitPerApiKey: e.STK_RATE_LIMIT_PER_API_KEY,
    invalidKeyLimitPerMin: e.STK_INVALID_KEY_LIMIT_PER_MIN,
    rateLimit: {
      redisUrl: e.STK_RATE_LIMIT_REDIS_URL || undefined,
      syncMs: e.STK_RATE_LIMIT_SYNC_MS,
      windowMs: e.STK_RATE_LIMIT_WINDOW_SECONDS * 1000,
      timeoutMs: e.STK_RATE_LIMIT_REDIS_TIMEOUT_MS,
    },
    refusalLogMs: e.STK_REFUSAL_LOG_SECONDS,
    poolMax: e.STK_BRIDGE_POOL_MAX,
    connectionAllow: e.STK_CONNECTION_ALLOW_HOSTS,
    responseMaxBytes: e.STK_RESPONSE_MAX_BYTES,
    responseInflightMaxBytes: e.STK_RESPONSE_INFLIGHT_MAX_BYTES,
    ...(e.STK_BENCH_VERIFY_SAMPLES ? { benchVerifySamples: e.STK_BENCH_VERIFY_SAMPLES } : {}),
    http: httpSettings(e),
    metrics: metricsSettings(e),
    sync: {
      heartbeatMs: e.STK_SYNC_HEARTBEAT_MS,
      maxBackoffMs: e.STK_SYNC_MAX_BACKOFF_MS,
      usageIntervalMs: Math.min(60_000, Math.max(200, e.STK_USAGE_REPORT_SECONDS)),
      initialTimeoutMs: e.STK_BRIDGE_INITIAL_SYNC_TIMEOUT_MS,
    },
  };
}
