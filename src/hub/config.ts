import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { parseDuration } from '../common/duration.js';
import { HostPolicy } from '../common/net-policy.js';

export interface HubConfig {
  port: number;
  host: string;
  dbUrl: string;
  /** 32-byte master key: encrypts DB URLs, derives the API-key pepper */
  secretKey: Buffer;
  /** accepted service tokens for /internal/* (first one is current) */
  serviceTokens: string[];
  sessionTtlSeconds: number;
  auditRetentionDays: number;
  ownerEmail?: string;
  ownerPassword?: string;
  dev: boolean;
  /** how long a revoke waits for every connected Bridge to acknowledge */
  ackTimeoutMs: number;
  /** failed logins allowed per client address / per account in 5 minutes */
  loginMaxFailures: number;
  loginAccountMaxFailures: number;
  /**
   * STK_CONNECTION_ALLOW_HOSTS: hosts/addresses/CIDRs a connection may reach although they are
   * loopback, link-local or metadata addresses (src/common/net-policy.ts)
   */
  connectionAllow: HostPolicy;
}

export class ConfigError extends Error {}

/** A standalone Hub's SQLite store when STK_HUB_DB_URL is unset (the dev stack's is .santokit/hub.db). */
export const DEFAULT_HUB_STORE = './.santokit-hub/hub.db';

export function parseSecretKey(raw: string): Buffer {
  const s = raw.trim();
  if (/^[0-9a-fA-F]{64}$/.test(s)) return Buffer.from(s, 'hex');
  const b = Buffer.from(s, 'base64');
  if (b.length === 32) return b;
  throw new ConfigError('STK_SECRET_KEY must be 32 bytes: 64 hex characters or base64 (generate one with: openssl rand -hex 32)');
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

function positiveInt(env: NodeJS.ProcessEnv, name: string, dflt: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new ConfigError(`${name} must be a whole number ≥ 1 (got ${JSON.stringify(raw.slice(0, 40))})`);
  return n;
}

export function loadHubConfig(env: NodeJS.ProcessEnv = process.env): HubConfig {
  const dev = env.STK_DEV === '1' || env.STK_DEV === 'true';
  const dataDir = env.STK_DATA_DIR ?? '.santokit';
  let secretRaw = env.STK_SECRET_KEY;
  if (!secretRaw) {
    if (!dev) throw new ConfigError('STK_SECRET_KEY is required (32 bytes, e.g. `openssl rand -hex 32`); it encrypts DB URLs at rest. Back it up: without it stored connections cannot be decrypted.');
    secretRaw = devSecret(dataDir, 'secret.key', () => randomBytes(32).toString('hex'));
  }
  const tokensRaw = env.STK_SERVICE_TOKENS ?? env.STK_SERVICE_TOKEN;
  let serviceTokens = (tokensRaw ?? '').split(',').map((t) => t.trim()).filter(Boolean);
  if (serviceTokens.length === 0) {
    if (!dev) throw new ConfigError('STK_SERVICE_TOKEN (or STK_SERVICE_TOKENS, comma-separated) is required: Bridges use it to call /internal/*');
    serviceTokens = [devSecret(dataDir, 'service.token', () => randomBytes(32).toString('base64url'))];
  }
  for (const t of serviceTokens) if (t.length < 16) throw new ConfigError('each service token must be at least 16 characters');
  const port = Number(env.STK_HUB_PORT ?? 4000);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError('STK_HUB_PORT must be a port number');
  let connectionAllow: HostPolicy;
  try {
    connectionAllow = HostPolicy.parse(env.STK_CONNECTION_ALLOW_HOSTS);
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  return {
    port,
    host: env.STK_HUB_HOST ?? '127.0.0.1',
    // the dev stack's store is under its data dir; a standalone Hub's default is elsewhere, so the two
    // never open each other's store (with each other's keys)
    dbUrl: env.STK_HUB_DB_URL || (dev ? `sqlite://${dataDir}/hub.db` : `sqlite://${DEFAULT_HUB_STORE}`),
    secretKey: parseSecretKey(secretRaw),
    serviceTokens,
    sessionTtlSeconds: parseDuration(env.STK_SESSION_TTL ?? '12h'),
    auditRetentionDays: Number(env.STK_AUDIT_RETENTION_DAYS ?? 90),
    ownerEmail: env.STK_OWNER_EMAIL || undefined,
    ownerPassword: env.STK_OWNER_PASSWORD || undefined,
    dev,
    ackTimeoutMs: Number(env.STK_REVOKE_ACK_TIMEOUT_MS ?? 2000),
    loginMaxFailures: positiveInt(env, 'STK_LOGIN_MAX_FAILURES', 10),
    loginAccountMaxFailures: positiveInt(env, 'STK_LOGIN_ACCOUNT_MAX_FAILURES', 10),
    connectionAllow,
  };
}
