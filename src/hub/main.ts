import { loadHubConfig, type HubConfig } from './config.js';
import { buildHub } from './app.js';
import { tracingWanted } from '../common/tracing-config.js';
import { pruneAudit } from './services/audit.js';

/** `stk hub start`: build, listen, handle SIGINT/SIGTERM. Resolves with a stop function. */
export async function startHub(config: HubConfig = loadHubConfig()) {
  // traces only when the standard OTEL_* variables ask for them (no OpenTelemetry code loaded otherwise)
  const tracing = tracingWanted() ? (await import('../common/tracing.js')).createTracing('santokit-hub') : null;
  const { app, ctx, metrics } = await buildHub(config, { tracing });
  if (tracing) ctx.onClose.push(() => tracing.shutdown());
  // /metrics on its own listener (never the public port), closed with the app
  const served = metrics ? await metrics.serve(app.log) : null;
  if (served) ctx.onClose.push(() => served.close());
  try {
    await app.listen({ port: config.port, host: config.host });
  } catch (e) {
    await served?.close();
    throw e;
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  app.log.info({ port, store: ctx.store.dialect }, `hub listening on http://${config.host}:${port}`);
  const prune = setInterval(() => pruneAudit(ctx).catch((err) => app.log.warn({ err }, 'audit prune failed')), 3600_000);
  prune.unref();
  void pruneAudit(ctx).catch(() => {});
  return {
    app,
    ctx,
    port,
    metricsPort: served?.port ?? null,
    async stop() {
      clearInterval(prune);
      await app.close();
    },
  };
}
