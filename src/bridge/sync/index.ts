import type { BridgeContext } from '../context.js';
import { ApiKeyVerifier, KeyTable, UsageCounter } from '../credentials/index.js';
import { HubSync, type ReleaseSink } from './hub-sync.js';

export { HubSync, type ReleaseSink, type HubSyncOptions } from './hub-sync.js';

const num = (v: string | undefined, d: number) => {
  const n = Number(v);
  return v !== undefined && v !== '' && Number.isFinite(n) && n >= 0 ? n : d;
};

/**
 * Wires API-key verification and the Hub sync into a Bridge context: `ctx.credentials` (the verifier),
 * `ctx.isExpired` (max-stale), `ctx.ready` (plain /readyz), `ctx.keys`, `ctx.sync`. The sync is started by `startBridge`, so an
 * in-process `buildBridge` (tests) never reaches for a Hub.
 */
export function installHubSync(ctx: BridgeContext, env: NodeJS.ProcessEnv = process.env): { sync: HubSync; verifier: ApiKeyVerifier; table: KeyTable } {
  const { config } = ctx;
  const table = new KeyTable();
  const usage = new UsageCounter();
  const heartbeatMs = num(env.STK_SYNC_HEARTBEAT_MS, 10_000);
  const sync = new HubSync(
    {
      hubUrls: config.hubUrls,
      serviceToken: config.serviceToken,
      bridgeId: config.bridgeId,
      maxStaleMs: config.maxStaleMs,
      usageIntervalMs: Math.min(60_000, Math.max(200, num(env.STK_USAGE_REPORT_SECONDS, 60) * 1000)),
      idleTimeoutMs: Math.max(5000, heartbeatMs * 3),
      minBackoffMs: 200,
      maxBackoffMs: num(env.STK_SYNC_MAX_BACKOFF_MS, 5000),
    },
    {
      table,
      usage,
      log: ctx.log,
      releases: () => ctx.releases as ReleaseSink | undefined,
      onKeyChange: (keyId) => verifier.limiter.forget(keyId),
    },
  );
  const verifier = new ApiKeyVerifier(
    table,
    usage,
    { synced: () => sync.synced, isExpired: () => sync.isStale() },
    { rateLimitPerApiKey: config.rateLimitPerApiKey, invalidKeyLimitPerMin: num(env.STK_INVALID_KEY_LIMIT_PER_MIN, 100) },
  );
  ctx.credentials = verifier;
  ctx.isExpired = (_project: string, _env: string) => sync.isStale();
  // plain /readyz: the first snapshot is in and a Hub was heard from within max-stale
  ctx.ready = () => sync.synced && !sync.isStale();
  ctx.keys = table;
  ctx.sync = sync;
  // stop following before the release cache closes; reports the last usage counts
  ctx.onClose.unshift(() => sync.stop());
  return { sync, verifier, table };
}
