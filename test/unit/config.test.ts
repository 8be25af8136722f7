/**
 * The Hub's and the Bridge's settings (src/hub/config.ts, src/bridge/config.ts over
 * src/common/env-config.ts): defaults, every bad value an error naming its variable (never NaN or a
 * silent default), all bad variables in one message, secrets never quoted back.
 */
import { describe, expect, it } from 'vitest';
import { loadBridgeConfig } from '../../src/bridge/config.js';
import { ConfigError, loadHubConfig } from '../../src/hub/config.js';
import { DEFAULT_HTTP } from '../../src/common/http-config.js';

const BRIDGE = { STK_SERVICE_TOKEN: 'bridge-token-xxxxxxxx' };
const HUB = { STK_SECRET_KEY: 'ab'.repeat(32), STK_SERVICE_TOKEN: 'hub-token-xxxxxxxxxxxx' };

describe('Bridge settings', () => {
  it('defaults', () => {
    const c = loadBridgeConfig(BRIDGE);
    expect(c).toMatchObject({
      port: 3000,
      host: '127.0.0.1',
      hubUrls: ['http://127.0.0.1:4000'],
      disableAuth: false,
      selectMaxRows: 10_000,
      queryTimeoutMs: 30_000,
      maxStaleMs: 3_600_000,
      rateLimitPerApiKey: 1000,
      invalidKeyLimitPerMin: 100,
      refusalLogMs: 10_000,
      poolMax: 10,
      responseMaxBytes: 10 * 1024 * 1024,
      sync: { heartbeatMs: 10_000, maxBackoffMs: 5000, usageIntervalMs: 60_000, initialTimeoutMs: 10_000 },
    });
    expect(c.connectionAllow.empty).toBe(true);
  });

  it('values as written: durations with units, lists, flags, an empty value is the default', () => {
    const c = loadBridgeConfig({
      ...BRIDGE,
      STK_BRIDGE_PORT: ' 0 ',
      STK_QUERY_TIMEOUT_SECONDS: '2m',
      STK_RELEASE_CACHE_MAX_STALE_SECONDS: '90',
      STK_HUB_URL: 'http://a:4000/, https://b.internal ,',
      STK_DISABLE_AUTH: 'yes',
      STK_SELECT_MAX_ROWS: '',
      STK_USAGE_REPORT_SECONDS: '0',
      STK_CONNECTION_ALLOW_HOSTS: '127.0.0.1,db.local:5432',
    });
    expect(c).toMatchObject({
      port: 0,
      queryTimeoutMs: 120_000,
      maxStaleMs: 90_000,
      hubUrls: ['http://a:4000', 'https://b.internal'],
      disableAuth: true,
      selectMaxRows: 10_000,
    });
    expect(c.sync.usageIntervalMs).toBe(200);
    expect(c.connectionAllow.allowsName('db.local', 5432)).toBe(true);
  });

  it.each([
    ['STK_BRIDGE_PORT', 'abc', /STK_BRIDGE_PORT: must be a port number from 0 to 65535 \(got "abc"\)/],
    ['STK_BRIDGE_PORT', '70000', /STK_BRIDGE_PORT: must be a port number/],
    ['STK_BRIDGE_PORT', '-1', /STK_BRIDGE_PORT: must be a port number/],
    ['STK_BRIDGE_PORT', '3000.5', /STK_BRIDGE_PORT: must be a port number/],
    ['STK_SELECT_MAX_ROWS', 'many', /STK_SELECT_MAX_ROWS: must be a whole number ≥ 1 \(got "many"\)/],
    ['STK_SELECT_MAX_ROWS', '0', /STK_SELECT_MAX_ROWS: must be a whole number ≥ 1/],
    ['STK_RATE_LIMIT_PER_API_KEY', '1e3', /STK_RATE_LIMIT_PER_API_KEY: must be a whole number/],
    ['STK_BRIDGE_POOL_MAX', '5000', /STK_BRIDGE_POOL_MAX: must be a whole number from 1 to 1000/],
    ['STK_QUERY_TIMEOUT_SECONDS', 'soon', /STK_QUERY_TIMEOUT_SECONDS: must be a duration such as 30s/],
    ['STK_QUERY_TIMEOUT_SECONDS', '0', /STK_QUERY_TIMEOUT_SECONDS: must be at least/],
    ['STK_DISABLE_AUTH', 'maybe', /STK_DISABLE_AUTH: must be true or false/],
    ['STK_RESPONSE_MAX_BYTES', '10MB', /STK_RESPONSE_MAX_BYTES: must be a whole number ≥ 1024/],
    ['STK_HUB_URL', 'ftp://hub', /STK_HUB_URL: each entry must be an http\(s\) URL/],
    ['STK_CONNECTION_ALLOW_HOSTS', '/var/run/postgresql', /STK_CONNECTION_ALLOW_HOSTS: "\/var\/run\/postgresql" is not a host name/],
  ])('%s=%s is refused, naming the variable', (name, value, message) => {
    expect(() => loadBridgeConfig({ ...BRIDGE, [name]: value })).toThrow(message);
  });

  it('STK_RATE_LIMIT_REDIS_URL: unset → per-Bridge limits; a redis(s):// URL → global; anything else refused without quoting it (it may hold a password)', () => {
    expect(loadBridgeConfig(BRIDGE).rateLimit).toEqual({ redisUrl: undefined, syncMs: 100, windowMs: 60_000, timeoutMs: 2000 });
    const url = 'rediss://:s3cret-pw@redis.internal:6380/2';
    expect(loadBridgeConfig({ ...BRIDGE, STK_RATE_LIMIT_REDIS_URL: url, STK_RATE_LIMIT_SYNC_MS: '50' }).rateLimit).toMatchObject({ redisUrl: url, syncMs: 50 });
    for (const bad of ['http://:s3cret-pw@redis:6379', 'redis:s3cret-pw', 's3cret-pw']) {
      let msg = '';
      try {
        loadBridgeConfig({ ...BRIDGE, STK_RATE_LIMIT_REDIS_URL: bad });
      } catch (e) {
        msg = (e as Error).message;
      }
      expect(msg).toMatch(/STK_RATE_LIMIT_REDIS_URL: must be a redis:\/\/ or rediss:\/\/ URL/);
      expect(msg).not.toContain('s3cret-pw');
    }
    expect(() => loadBridgeConfig({ ...BRIDGE, STK_RATE_LIMIT_SYNC_MS: '0' })).toThrow(/STK_RATE_LIMIT_SYNC_MS: must be a whole number from 5 to 1000/);
  });

  it('every bad variable in one message; a URL with a credential is not quoted back', () => {
    let msg = '';
    try {
      loadBridgeConfig({ ...BRIDGE, STK_BRIDGE_PORT: 'x', STK_SYNC_MAX_BACKOFF_MS: 'y', STK_HUB_URL: 'http://me:hunter2@hub' });
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/^3 settings are wrong: /);
    expect(msg).toContain('STK_BRIDGE_PORT: must be a port number');
    expect(msg).toContain('STK_SYNC_MAX_BACKOFF_MS: must be a whole number ≥ 1 (got "y")');
    expect(msg).toContain('STK_HUB_URL: a Hub URL must not hold credentials');
    expect(msg).not.toContain('hunter2');
  });

  it('cross-variable rules: a service token unless dev, no auth only on loopback', () => {
    expect(() => loadBridgeConfig({})).toThrow(/STK_SERVICE_TOKEN is required/);
    expect(loadBridgeConfig({ STK_DEV: 'true' }).serviceToken).toBe('');
    expect(() => loadBridgeConfig({ ...BRIDGE, STK_DISABLE_AUTH: '1', STK_BRIDGE_HOST: '0.0.0.0' })).toThrow(
      /refused unless STK_BRIDGE_HOST is a loopback address/,
    );
  });
});

describe('Hub settings', () => {
  it('defaults, and the sync timings the Bridges see', () => {
    const c = loadHubConfig(HUB);
    expect(c).toMatchObject({
      port: 4000,
      host: '127.0.0.1',
      dbUrl: 'sqlite://./.santokit-hub/hub.db',
      dbPoolMax: 10,
      serviceTokens: ['hub-token-xxxxxxxxxxxx'],
      sessionTtlSeconds: 12 * 3600,
      auditRetentionDays: 90,
      ackTimeoutMs: 2000,
      apikeyGraceQuietMs: 15 * 60_000,
      loginMaxFailures: 10,
      sync: { heartbeatMs: 10_000, presenceStaleMs: 30_000, gapWaitMs: 250, pollMs: 2000 },
    });
    expect(c.secretKey.equals(Buffer.from('ab'.repeat(32), 'hex'))).toBe(true);
    expect(loadHubConfig({ ...HUB, STK_SYNC_HEARTBEAT_MS: '500' }).sync.presenceStaleMs).toBe(1500);
  });

  it('an owner password keeps its spaces; empty optional values are unset', () => {
    const c = loadHubConfig({ ...HUB, STK_OWNER_PASSWORD: '  two spaces  ', STK_OWNER_EMAIL: '', STK_HUB_DB_URL: '' });
    expect(c.ownerPassword).toBe('  two spaces  ');
    expect(c.ownerEmail).toBeUndefined();
    expect(c.dbUrl).toBe('sqlite://./.santokit-hub/hub.db');
  });

  it.each([
    ['STK_HUB_PORT', 'abc', /STK_HUB_PORT: must be a port number from 0 to 65535 \(got "abc"\)/],
    ['STK_AUDIT_RETENTION_DAYS', 'ninety', /STK_AUDIT_RETENTION_DAYS: must be a whole number ≥ 1/],
    ['STK_REVOKE_ACK_TIMEOUT_MS', '2s', /STK_REVOKE_ACK_TIMEOUT_MS: must be a whole number ≥ 0/],
    ['STK_SESSION_TTL', 'forever', /STK_SESSION_TTL: must be a duration/],
    ['STK_HUB_DB_POOL', '0', /STK_HUB_DB_POOL: must be a whole number from 1 to 1000/],
    ['STK_SYNC_POLL_MS', 'often', /STK_SYNC_POLL_MS: must be a whole number ≥ 1/],
    ['STK_DEV', 'sometimes', /STK_DEV: must be true or false/],
  ])('%s=%s is a ConfigError naming the variable', (name, value, message) => {
    expect(() => loadHubConfig({ ...HUB, [name]: value })).toThrow(ConfigError);
    expect(() => loadHubConfig({ ...HUB, [name]: value })).toThrow(message);
  });

  it('secrets are never quoted back', () => {
    const secret = 'not-a-key-but-a-secret-value';
    let msg = '';
    try {
      loadHubConfig({ STK_SECRET_KEY: secret, STK_SERVICE_TOKEN: 'short', STK_HUB_PORT: 'x' });
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toContain('STK_SECRET_KEY: must be 32 bytes');
    expect(msg).toContain('STK_HUB_PORT: must be a port number');
    expect(msg).not.toContain(secret);
    expect(() => loadHubConfig({ ...HUB, STK_SERVICE_TOKENS: 'tiny,also-tiny' })).toThrow(/each service token must be at least 16 characters/);
    try {
      loadHubConfig({ ...HUB, STK_SERVICE_TOKENS: 'tiny,also-tiny' });
    } catch (e) {
      expect((e as Error).message).not.toMatch(/tiny/);
    }
  });
});

describe('the HTTP layer’s settings, part of each process’s (src/common/http-config.ts)', () => {
  it('defaults, and values as written reach HubConfig.http and BridgeConfig.http', () => {
    for (const c of [loadHubConfig(HUB), loadBridgeConfig(BRIDGE)]) {
      expect(c.http).toEqual({
        logLevel: 'info',
        trustProxy: false,
        maxConnections: 8192,
        maxConnectionsPerAddress: 256,
        bodyInflightMaxBytes: 64 * 1024 * 1024,
      });
      expect(c.http).toEqual(DEFAULT_HTTP);
    }
    const set = {
      STK_LOG_LEVEL: 'warn',
      STK_TRUST_PROXY: '10.0.0.0/8, loopback',
      STK_MAX_CONNECTIONS: '100',
      STK_MAX_CONNECTIONS_PER_ADDRESS: '5',
      STK_BODY_INFLIGHT_MAX_BYTES: '1048576',
    };
    for (const c of [loadHubConfig({ ...HUB, ...set }), loadBridgeConfig({ ...BRIDGE, ...set })]) {
      expect(c.http).toEqual({
        logLevel: 'warn',
        trustProxy: ['10.0.0.0/8', 'loopback'],
        maxConnections: 100,
        maxConnectionsPerAddress: 5,
        bodyInflightMaxBytes: 1048576,
      });
    }
    expect(loadBridgeConfig({ ...BRIDGE, STK_TRUST_PROXY: 'true' }).http.trustProxy).toBe(true);
  });

  it.each([
    ['STK_LOG_LEVEL', 'verbose', /STK_LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent \(got "verbose"\)/],
    ['STK_TRUST_PROXY', 'my-proxy', /STK_TRUST_PROXY: 'my-proxy' is not an IP address, CIDR or one of loopback/],
    ['STK_MAX_CONNECTIONS', 'lots', /STK_MAX_CONNECTIONS: must be a whole number ≥ 1 \(got "lots"\)/],
    ['STK_MAX_CONNECTIONS_PER_ADDRESS', '0', /STK_MAX_CONNECTIONS_PER_ADDRESS: must be a whole number ≥ 1/],
    ['STK_BODY_INFLIGHT_MAX_BYTES', '12', /STK_BODY_INFLIGHT_MAX_BYTES: must be a whole number ≥ 1024/],
  ])('%s=%s stops the Hub and the Bridge at start, naming the variable', (name, value, message) => {
    expect(() => loadHubConfig({ ...HUB, [name]: value })).toThrow(ConfigError);
    expect(() => loadHubConfig({ ...HUB, [name]: value })).toThrow(message);
    expect(() => loadBridgeConfig({ ...BRIDGE, [name]: value })).toThrow(message);
  });
});
