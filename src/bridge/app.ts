import { installApiDocs } from '../common/api-docs.js';
import { BRIDGE_API } from '../protocol/api/bridge.js';
import { API_VERSION, openApiDocument } from '../protocol/api/openapi.js';
import type { FastifyInstance } from 'fastify';
import { useContractSchemas } from '../common/contract-route.js';
import { createBaseApp, type FrontDoor } from '../common/http.js';
import { openFrontDoor } from './front-door.js';
import type { BridgeConfig } from './config.js';
import type { BridgeContext } from './context.js';
import { ApiKeyVerifier, KeyTable, UsageCounter } from './credentials/index.js';
import { SampledApiKeyVerifier } from './credentials/verify-samples.js';
import { GlobalRateLimiter } from './credentials/global-limits.js';
import { RedisWindowStore } from './credentials/redis-window.js';
import { ResponseGauge } from './executor/index.js';
import healthRoutes from './routes/health.js';
import callRoutes from './routes/call.js';
import { ReleaseCache } from './release-cache/index.js';
import { HubSync } from './sync/index.js';
import { installRouteAuth } from './route-auth.js';
import { Refusals } from './refusals.js';
import { HistogramCell, LATENCY_BUCKETS } from '../common/metric-cells.js';
import type { Tracing } from '../common/tracing.js';

/** sub-windows of the global rate-limit window (60 s → 12 × 5 s) */
const RATE_SUB_WINDOWS = 12;

export interface BuildBridgeOptions {
  loggerStream?: NodeJS.WritableStream;
  logger?: false;
  /** OpenTelemetry traces (src/common/tracing.ts); null/absent = off */
  tracing?: Tracing | null;
}

/**
 * Builds the Bridge without listening, and wires its parts in one place: the key table the Hub sync
 * fills and the verifier reads, the release cache the sync fills and `/call` reads, the answer gauge.
 * The sync is not started here (`startBridge` does), so an in-process Bridge never reaches for a Hub.
 */
export async function buildBridge(config: BridgeConfig, opts: BuildBridgeOptions = {}): Promise<{ app: FastifyInstance; ctx: BridgeContext }> {
  // POST /call's key check ahead of Fastify (front-door.ts), opened once the context exists
  const front: FrontDoor = { handle: null };
  const app = createBaseApp({ name: 'bridge', http: config.http, loggerStream: opts.loggerStream, logger: opts.logger, front });
  const log = app.log;
  if (config.disableAuth) {
    log.warn(
      '!!! STK_DISABLE_AUTH=true: the Bridge accepts requests WITHOUT authentication or permission checks. Never use this outside local development. !!!',
    );
  }
  // with /metrics on, every query's duration (nothing is measured with it off)
  const queryTimes = config.metrics && config.metrics.port !== null ? new HistogramCell({}, LATENCY_BUCKETS) : undefined;
  const releases = new ReleaseCache({ max: config.poolMax, queryTimeoutMs: config.queryTimeoutMs, allow: config.connectionAllow, queryTimes }, log);
  const keys = new KeyTable();
  const usage = new UsageCounter();
  const sync: HubSync = new HubSync(
    {
      hubUrls: config.hubUrls,
      serviceToken: config.serviceToken,
      bridgeId: config.bridgeId,
      maxStaleMs: config.maxStaleMs,
      usageIntervalMs: config.sync.usageIntervalMs,
      idleTimeoutMs: Math.max(5000, config.sync.heartbeatMs * 3),
      minBackoffMs: 200,
      maxBackoffMs: config.sync.maxBackoffMs,
    },
    { table: keys, usage, log, releases, onKeyChange: (keyId) => verifier.limiter.forget(keyId) },
  );
  // global per-key limits when a Redis-compatible store is configured (ioredis is loaded only then)
  const rl = config.rateLimit;
  const globalLimiter = rl.redisUrl
    ? new GlobalRateLimiter(
        await RedisWindowStore.open({
          url: rl.redisUrl,
          subMs: Math.floor(rl.windowMs / RATE_SUB_WINDOWS),
          subWindows: RATE_SUB_WINDOWS,
          timeoutMs: rl.timeoutMs,
        }),
        { windowMs: rl.windowMs, subWindows: RATE_SUB_WINDOWS, syncMs: rl.syncMs, bridges: () => sync.clusterBridges, log },
      )
    : null;
  const verifierArgs = [
    keys,
    usage,
    { synced: () => sync.synced, isExpired: () => sync.isStale() },
    { rateLimitPerApiKey: config.rateLimitPerApiKey, invalidKeyLimitPerMin: config.invalidKeyLimitPerMin, limiter: globalLimiter ?? undefined },
  ] as const;
  // the benchmark's timed verifier (issue 18) only when asked for; otherwise the plain one
  const verifier = config.benchVerifySamples ? new SampledApiKeyVerifier(config.benchVerifySamples, ...verifierArgs) : new ApiKeyVerifier(...verifierArgs);
  globalLimiter?.start();
  const refusals = new Refusals(log, config.refusalLogMs);
  const ctx: BridgeContext = {
    config,
    log,
    credentials: verifier,
    refusals,
    keys,
    releases,
    sync,
    isStale: () => sync.isStale(),
    responses: new ResponseGauge({ maxBytes: config.responseMaxBytes, inflightMaxBytes: config.responseInflightMaxBytes }),
    metrics: null,
    // stop following first (it reports the last usage counts), then close the pools
    onClose: [() => sync.stop(), () => releases.close(), async () => globalLimiter?.close(), () => refusals.flush()],
  };
  // `apikey show`'s figures by status: a call that fails after its key was authenticated counts as an
  // error of that key. The request property is declared up front (no per-request shape change) and the
  // hook runs on failures only, so a successful call costs nothing here.
  app.decorateRequest('stkKeyId', null);
  app.decorateRequest('stkOp', null);
  app.decorateRequest('stkTrace', null);
  app.addHook('onError', (req, _reply, err, done) => {
    const keyId = (req as { stkKeyId?: string | null }).stkKeyId;
    if (keyId) {
      const e = err as { status?: unknown; statusCode?: unknown };
      const status = typeof e.status === 'number' ? e.status : typeof e.statusCode === 'number' ? e.statusCode : 500;
      usage.outcome(keyId, 'error', status, Date.now());
    }
    done();
  });
  // loaded only when on: with metrics off no metrics library is imported and no hook is added
  if (queryTimes) {
    const { installBridgeMetrics } = await import('./metrics.js');
    ctx.metrics = installBridgeMetrics(app, ctx, config.metrics!, { verifyCounts: verifier.counts, queryTimes });
  }
  if (opts.tracing) {
    const { installBridgeTracing } = await import('./tracing.js');
    installBridgeTracing(app, ctx, opts.tracing);
  }
  installRouteAuth(app, ctx); // before any route: each route's declared auth becomes its first onRequest hook
  // the health routes' input and answers go through their contracts' zod schemas; /call's contract only
  // describes it (its planner checks params on the hot path)
  useContractSchemas(app);
  installApiDocs(app, 'Santokit Bridge', () =>
    openApiDocument(
      {
        title: 'Santokit Bridge',
        version: API_VERSION,
        description: 'The data plane: POST /call with a project API key for auto-CRUD on the env’s PostgreSQL.',
      },
      BRIDGE_API,
    ),
  );
  await app.register(healthRoutes, { ctx });
  await app.register(callRoutes, { ctx });
  // off with STK_DISABLE_AUTH (no key to check) and with tracing on (a refusal gets its span)
  if (!config.disableAuth && !opts.tracing) openFrontDoor(front, ctx);
  app.addHook('onClose', async () => {
    for (const fn of ctx.onClose) await fn();
  });
  return { app, ctx };
}
