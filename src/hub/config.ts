import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { HTTP_ENV, httpSettings, type HttpSettings } from '../common/http-config.js';
import { env, readEnv } from '../common/env-config.js';
import type { HostPolicy } from '../common/net-policy.js';
import { WEBHOOK_ENV, webhookSettings, type WebhookSettings } from './services/webhooks/config.js';
import { METRICS_ENV, metricsSettings, type MetricsSettings } from '../common/metrics-config.js';

export interface HubConfig {
  port: number;
  host: string;
  dbUrl: string;
  /** connections of a PostgreSQL store's pool (STK_HUB_DB_POOL) */
  dbPoolMax: number;
  /** 32-byte master key: encrypts DB URLs, derives the API-key pepper */
  secretKey: Buffer;
  /** accepted service tokens for /internal/* (first one is current) */
  serviceTokens: string[];
  sessionTtlSeconds: number;
  auditRetentionDays: number;
  ownerEmail?: string;
  ownerPassword?: string;
  dev: boolean;
  /** STK_DATA_DIR: where the dev stack keeps its generated secrets and store */
  dataDir: string;
  /** how long a revoke waits for every connected Bridge to acknowledge */
  ackTimeoutMs: number;
  /** `--grace auto`: the previous secret unused this long ends the grace period (STK_APIKEY_GRACE_QUIET, 15m) */
  apikeyGraceQuietMs: number;
  /** failed logins allowed per client address / per account in 5 minutes */
  loginMaxFailures: number;
  loginAccountMaxFailures: number;
  /**
   * STK_CONNECTION_ALLOW_HOSTS: hosts/addresses/CIDRs a connection may reach although they are
   * loopback, link-local or metadata addresses (src/common/net-policy.ts)
   */
  connectionAllow: HostPolicy;
  /** the shared HTTP layer: log level, proxies, connection limits (src/common/http-config.ts) */
  http: HttpSettings;
  /** webhook delivery (STK_WEBHOOK_*, src/hub/services/webhooks/config.ts) */
  webhooks: WebhookSettings;
  /** `/metrics` (STK_METRICS_*, src/common/metrics-config.ts): off unless STK_METRICS_PORT is set (absent = off) */
  metrics?: MetricsSettings;
  /** the change feed to Bridges (tests shorten these) */
  sync: {
    /** heartbeat on each stream and presence refresh (STK_SYNC_HEARTBEAT_MS) */
    heartbeatMs: number;
    /** a Bridge row not refreshed for this long no longer counts: its Hub is gone (STK_SYNC_PRESENCE_STALE_MS, default 3 heartbeats) */
    presenceStaleMs: number;
    /** how long a stream waits at a sequence gap for a slower writer (STK_SYNC_GAP_WAIT_MS) */
    gapWaitMs: number;
    /** how often the store is polled for changes other Hubs wrote (STK_SYNC_POLL_MS) */
    pollMs: number;
  };
}

export class ConfigError extends Error {}

/** A standalone Hub's SQLite store when STK_HUB_DB_URL is unset (the dev stack's is .santokit/hub.db). */
export const DEFAULT_HUB_STORE = './.santokit-hub/hub.db';

const SECRET_KEY_RULE = 'must be 32 bytes: 64 hex characters or base64 (generate one with: openssl rand -hex 32)';

function secretKeyBytes(raw: string): Buffer | null {
  const s = raw.trim();
  if (/^[0-9a-fA-F]{64}$/.test(s)) return Buffer.from(s, 'hex');
  const b = Buffer.from(s, 'base64');
  return b.length === 32 ? b : null;
}
const isSecretKey = (raw: string) => secretKeyBytes(raw) !== null;

export function parseSecretKey(raw: string): Buffer {
  const b = secretKeyBytes(raw);
  if (!b) throw new ConfigError(`STK_SECRET_KEY ${SECRET_KEY_RULE}`);
  return b;
}

/** In dev, secrets that were not given are generated once and kept under .santokit/ (mode 0600). */
function devSecret(dir: string, file: string, make: () => string): string {
  const p = resolve(dir, file);
  if (existsSync(p)) return readFileSync(p, 'utf8').trim();
  mkdirSync(dirname(p), { recursive: true });
  const v = make();
  writeFileSync(p, v + '\n', { mode: 0o600 });
  return v;
}

/** Every variable the Hub reads. */
export const HUB_ENV = z.object({
  STK_DEV: env.flag(),
  STK_DATA_DIR: env.text('.santokit'),
  STK_SECRET_KEY: env.secret(undefined, {
    check: (s) => {
      if (!isSecretKey(s)) throw new Error(SECRET_KEY_RULE);
    },
  }),
  STK_SERVICE_TOKENS: env.secret(undefined),
  STK_SERVICE_TOKEN: env.secret(undefined),
  STK_HUB_PORT: env.port(4000),
  STK_HUB_HOST: env.text('127.0.0.1'),
  STK_HUB_DB_URL: env.secret(undefined),
  STK_HUB_DB_POOL: env.int(10, 1, 1000),
  STK_SESSION_TTL: env.durationMs('12h', 1000),
  STK_AUDIT_RETENTION_DAYS: env.int(90, 1),
  STK_OWNER_EMAIL: env.text(undefined),
  STK_OWNER_PASSWORD: env.secret(undefined, { trim: false }),
  STK_REVOKE_ACK_TIMEOUT_MS: env.int(2000, 0),
  STK_APIKEY_GRACE_QUIET: env.durationMs('15m', 1000),
  STK_LOGIN_MAX_FAILURES: env.int(10, 1),
  STK_LOGIN_ACCOUNT_MAX_FAILURES: env.int(10, 1),
  STK_CONNECTION_ALLOW_HOSTS: env.hostPolicy(),
  STK_SYNC_HEARTBEAT_MS: env.int(10_000, 1),
  STK_SYNC_PRESENCE_STALE_MS: env.int(0, 1),
  STK_SYNC_GAP_WAIT_MS: env.int(250, 0),
  STK_SYNC_POLL_MS: env.int(2000, 1),
  ...HTTP_ENV,
  ...WEBHOOK_ENV,
  ...METRICS_ENV,
});

export function loadHubConfig(source: NodeJS.ProcessEnv = process.env): HubConfig {
  const e = readEnv(HUB_ENV, source, (m) => new ConfigError(m));
  const dev = e.STK_DEV;
  const dataDir = e.STK_DATA_DIR;
  let secretRaw = e.STK_SECRET_KEY;
  if (!secretRaw) {
    if (!dev)
      throw new ConfigError(
        'STK_SECRET_KEY is required (32 bytes, e.g. `openssl rand -hex 32`); it encrypts DB URLs at rest. Back it up: without it stored connections cannot be decrypted.',
      );
    secretRaw = devSecret(dataDir, 'secret.key', () => randomBytes(32).toString('hex'));
  }
  let serviceTokens = (e.STK_SERVICE_TOKENS ?? e.STK_SERVICE_TOKEN ?? '')
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  if (serviceTokens.length === 0) {
    if (!dev) throw new ConfigError('STK_SERVICE_TOKEN (or STK_SERVICE_TOKENS, comma-separated) is required: Bridges use it to call /internal/*');
    serviceTokens = [devSecret(dataDir, 'service.token', () => randomBytes(32).toString('base64url'))];
  }
  for (const t of serviceTokens) if (t.length < 16) throw new ConfigError('each service token must be at least 16 characters');
  const heartbeatMs = e.STK_SYNC_HEARTBEAT_MS;
  return {
    port: e.STK_HUB_PORT,
    host: e.STK_HUB_HOST,
    // the dev stack's store is under its data dir; a standalone Hub's default is elsewhere, so the two
    // never open each other's store (with each other's keys)
    dbUrl: e.STK_HUB_DB_URL ?? (dev ? `sqlite://${dataDir}/hub.db` : `sqlite://${DEFAULT_HUB_STORE}`),
    dbPoolMax: e.STK_HUB_DB_POOL,
    secretKey: parseSecretKey(secretRaw),
    serviceTokens,
    sessionTtlSeconds: e.STK_SESSION_TTL / 1000,
    auditRetentionDays: e.STK_AUDIT_RETENTION_DAYS,
    ownerEmail: e.STK_OWNER_EMAIL,
    ownerPassword: e.STK_OWNER_PASSWORD,
    dev,
    dataDir,
    ackTimeoutMs: e.STK_REVOKE_ACK_TIMEOUT_MS,
    apikeyGraceQuietMs: e.STK_APIKEY_GRACE_QUIET,
    loginMaxFailures: e.STK_LOGIN_MAX_FAILURES,
    loginAccountMaxFailures: e.STK_LOGIN_ACCOUNT_MAX_FAILURES,
    connectionAllow: e.STK_CONNECTION_ALLOW_HOSTS,
    http: httpSettings(e),
    webhooks: webhookSettings(e),
    metrics: (() => {
      try {
        return metricsSettings(e);
      } catch (err) {
        throw new ConfigError((err as Error).message);
      }
    })(),
    sync: {
      heartbeatMs,
      presenceStaleMs: e.STK_SYNC_PRESENCE_STALE_MS || heartbeatMs * 3,
      gapWaitMs: e.STK_SYNC_GAP_WAIT_MS,
      pollMs: e.STK_SYNC_POLL_MS,
    },
  };
}
