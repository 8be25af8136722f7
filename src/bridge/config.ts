import { hostname } from 'node:os';
import { parseDuration } from '../common/duration.js';
import { HostPolicy } from '../common/net-policy.js';

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
  poolMax: number;
  /** STK_CONNECTION_ALLOW_HOSTS: loopback/link-local/metadata hosts a connection may reach anyway (src/common/net-policy.ts) */
  connectionAllow: HostPolicy;
  /** bytes one `/call` answer may hold (STK_RESPONSE_MAX_BYTES) */
  responseMaxBytes: number;
  /** bytes all answers being built or sent may hold together (STK_RESPONSE_INFLIGHT_MAX_BYTES) */
  responseInflightMaxBytes: number;
}

export const RESPONSE_MAX_BYTES = 10 * 1024 * 1024;
export const RESPONSE_INFLIGHT_MAX_BYTES = 64 * 1024 * 1024;

/** A positive integer count of bytes from the environment, or the default; anything else is a start-up error. */
function bytes(env: NodeJS.ProcessEnv, name: string, dflt: number): number {
  const v = env[name]?.trim();
  if (v === undefined || v === '') return dflt;
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v)) || Number(v) < 1024) throw new Error(`${name} must be a whole number of bytes, at least 1024 (got '${v.slice(0, 40)}')`);
  return Number(v);
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost']);

export function loadBridgeConfig(env: NodeJS.ProcessEnv = process.env): BridgeConfig {
  const hubUrls = (env.STK_HUB_URL ?? 'http://127.0.0.1:4000').split(',').map((s) => s.trim().replace(/\/+$/, '')).filter(Boolean);
  const serviceToken = (env.STK_SERVICE_TOKEN ?? '').trim();
  const dev = env.STK_DEV === '1' || env.STK_DEV === 'true';
  if (!serviceToken && !dev) throw new Error('STK_SERVICE_TOKEN is required: the Bridge uses it to sync keys and releases from the Hub');
  const port = Number(env.STK_BRIDGE_PORT ?? 3000);
  const host = env.STK_BRIDGE_HOST ?? '127.0.0.1';
  const disableAuth = env.STK_DISABLE_AUTH === 'true' || env.STK_DISABLE_AUTH === '1';
  // without auth every tenant's data is one request away: only ever on this machine's loopback
  if (disableAuth && !LOOPBACK_HOSTS.has(host)) {
    throw new Error(`STK_DISABLE_AUTH=true serves every project's data without a key: it is refused unless STK_BRIDGE_HOST is a loopback address (127.0.0.1, ::1, localhost), not ${JSON.stringify(host)}`);
  }
  return {
    port,
    host,
    hubUrls,
    serviceToken,
    // the host name keeps ids unique across machines and containers (where every pid may be 1)
    bridgeId: env.STK_BRIDGE_ID ?? `bridge-${hostname().replace(/[^A-Za-z0-9.-]/g, '-').slice(0, 63)}-${process.pid}-${port}`,
    disableAuth,
    selectMaxRows: Number(env.STK_SELECT_MAX_ROWS ?? 10000),
    queryTimeoutMs: parseDuration(env.STK_QUERY_TIMEOUT_SECONDS ?? '30') * 1000,
    maxStaleMs: parseDuration(env.STK_RELEASE_CACHE_MAX_STALE_SECONDS ?? '3600') * 1000,
    rateLimitPerApiKey: Number(env.STK_RATE_LIMIT_PER_API_KEY ?? 1000),
    poolMax: Number(env.STK_BRIDGE_POOL_MAX ?? 10),
    connectionAllow: HostPolicy.parse(env.STK_CONNECTION_ALLOW_HOSTS),
    responseMaxBytes: bytes(env, 'STK_RESPONSE_MAX_BYTES', RESPONSE_MAX_BYTES),
    responseInflightMaxBytes: bytes(env, 'STK_RESPONSE_INFLIGHT_MAX_BYTES', RESPONSE_INFLIGHT_MAX_BYTES),
  };
}
