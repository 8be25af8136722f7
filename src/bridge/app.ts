import { installApiDocs } from '../common/api-docs.js';
import { BRIDGE_API } from '../protocol/api/bridge.js';
import { API_VERSION, openApiDocument } from '../protocol/api/openapi.js';
import type { FastifyInstance } from 'fastify';
import { createBaseApp } from '../common/http.js';
import { AppError } from '../protocol/errors.js';
import type { BridgeConfig } from './config.js';
import type { BridgeContext } from './context.js';
import healthRoutes from './routes/health.js';
import callRoutes from './routes/call.js';
import { ReleaseCache } from './release-cache/index.js';
import { installHubSync } from './sync/index.js';
import { installRouteAuth } from './route-auth.js';

export interface BuildBridgeOptions {
  loggerStream?: NodeJS.WritableStream;
  logger?: false;
}

/** Builds the Bridge without listening. */
export async function buildBridge(config: BridgeConfig, opts: BuildBridgeOptions = {}): Promise<{ app: FastifyInstance; ctx: BridgeContext }> {
  const app = createBaseApp({ name: 'bridge', loggerStream: opts.loggerStream, logger: opts.logger });
  const ctx: BridgeContext = {
    config,
    log: app.log,
    credentials: {
      authenticate() {
        throw new AppError('UNAUTHORIZED', 'API key verification is not available yet');
      },
    },
    onClose: [],
  };
  if (config.disableAuth) {
    app.log.warn('!!! STK_DISABLE_AUTH=true: the Bridge accepts requests WITHOUT authentication or permission checks. Never use this outside local development. !!!');
  }
  const releases = new ReleaseCache({ max: config.poolMax, queryTimeoutMs: config.queryTimeoutMs, allow: config.connectionAllow }, app.log);
  ctx.releases = releases;
  ctx.readiness = async (project: string, env: string) => {
    const isExpired = ctx.isExpired as ((p: string, e: string) => boolean) | undefined;
    if (isExpired?.(project, env)) return false;
    return releases.ready(project, env);
  };
  ctx.onClose.push(() => releases.close());
  const { verifier } = installHubSync(ctx); // ctx.credentials (API keys), ctx.isExpired, ctx.sync (started by startBridge)
  // `apikey show`'s figures by status: a call that fails after its key was authenticated counts as an
  // error of that key. The request property is declared up front (no per-request shape change) and the
  // hook runs on failures only, so a successful call costs nothing here.
  app.decorateRequest('stkKeyId', null);
  app.addHook('onError', (req, _reply, err, done) => {
    const keyId = (req as { stkKeyId?: string | null }).stkKeyId;
    if (keyId) {
      const e = err as { status?: unknown; statusCode?: unknown };
      const status = typeof e.status === 'number' ? e.status : typeof e.statusCode === 'number' ? e.statusCode : 500;
      verifier.usage.outcome(keyId, 'error', status, Date.now());
    }
    done();
  });
  installRouteAuth(app, ctx); // before any route: each route's declared auth becomes its first onRequest hook
  installApiDocs(app, 'Santokit Bridge', () =>
    openApiDocument({ title: 'Santokit Bridge', version: API_VERSION, description: 'The data plane: POST /call with a project API key for auto-CRUD on the env’s PostgreSQL.' }, BRIDGE_API),
  );
  await app.register(healthRoutes, { ctx });
  await app.register(callRoutes, { ctx });
  app.addHook('onClose', async () => {
    for (const fn of ctx.onClose) await fn();
  });
  return { app, ctx };
}
