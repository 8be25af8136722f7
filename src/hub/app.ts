import type { FastifyInstance } from 'fastify';
import type { Metrics } from '../common/metrics.js';
import type { Tracing } from '../common/tracing.js';
import { createBaseApp } from '../common/http.js';
import type { HubConfig } from './config.js';
import { createContext, type HubContext } from './context.js';
import { migrate, openStore, type Store } from './store/store.js';
import { bootstrapOwner } from './services/auth.js';
import { checkStoreKey } from './services/store-key.js';
import { installRouteAuth } from './route-auth.js';
import { installApiDocs } from '../common/api-docs.js';
import { HUB_API } from '../protocol/api/hub.js';
import { API_VERSION, openApiDocument } from '../protocol/api/openapi.js';
import { useContractSchemas } from '../common/contract-route.js';
import healthRoutes from './routes/health.js';
import authRoutes from './routes/auth.js';
import { registerRoutes } from './routes/index.js';
import { WebhookWorker } from './services/webhooks/worker.js';
import { GraceSweeper } from './services/apikey-grace.js';

export interface BuildHubOptions {
  store?: Store;
  loggerStream?: NodeJS.WritableStream;
  logger?: false;
  /** OpenTelemetry traces (src/common/tracing.ts); null/absent = off */
  tracing?: Tracing | null;
}

/** Builds the Hub (store open + migrated, first owner bootstrapped) without listening. */
export async function buildHub(config: HubConfig, opts: BuildHubOptions = {}): Promise<{ app: FastifyInstance; ctx: HubContext; metrics: Metrics | null }> {
  const app = createBaseApp({ name: 'hub', http: config.http, loggerStream: opts.loggerStream, logger: opts.logger });
  const store = opts.store ?? (await openStore(config.dbUrl, { poolMax: config.dbPoolMax }));
  await migrate(store);
  const ctx = createContext(config, store, app.log);
  try {
    await checkStoreKey(ctx); // a store created under another STK_SECRET_KEY is refused
  } catch (e) {
    if (!opts.store) await store.close();
    await app.close();
    throw e;
  }

  // /metrics families, loaded only when on (no hook and no metrics library otherwise)
  let metrics: Metrics | null = null;
  if (config.metrics && config.metrics.port !== null) {
    const { installHubMetrics } = await import('./metrics.js');
    metrics = installHubMetrics(app, ctx, config.metrics);
  }

  if (opts.tracing) {
    const { installHubTracing } = await import('./tracing.js');
    installHubTracing(app, opts.tracing);
  }

  // every route's declared auth (service token, session, org/project role) is enforced on the route
  // the router matched, before its body is read
  installRouteAuth(app, ctx);
  // every route's input is validated, and every response serialized, by its contract's zod schemas
  useContractSchemas(app);

  installApiDocs(app, 'Santokit Hub', () =>
    openApiDocument(
      {
        title: 'Santokit Hub',
        version: API_VERSION,
        description: 'The control plane: operators, projects, envs, connections, schema apply, releases, API keys, audit. Used through `stk`.',
      },
      HUB_API,
    ),
  );
  await app.register(healthRoutes, { ctx });
  await app.register(authRoutes, { ctx });
  await registerRoutes(app, ctx);

  app.addHook('onClose', async () => {
    for (const fn of ctx.onClose) await fn();
    await store.close();
  });
  await bootstrapOwner(ctx);
  // webhook deliveries queued in the store (by this Hub or another on it): sent from here
  const webhooks = new WebhookWorker(ctx);
  ctx.onClose.push(() => webhooks.stop());
  webhooks.start();
  // `stk apikey rotate --grace auto`: every Hub looks for grace periods to end (apikey-grace.ts)
  const graces = new GraceSweeper(ctx);
  ctx.onClose.push(() => graces.stop());
  graces.start();
  return { app, ctx, metrics };
}
