import { loadBridgeConfig, type BridgeConfig } from './config.js';
import { buildBridge } from './app.js';
import { tracingWanted } from '../common/tracing-config.js';

/** `stk bridge start`: build, listen. */
export async function startBridge(config: BridgeConfig = loadBridgeConfig()) {
  // traces only when the standard OTEL_* variables ask for them (no OpenTelemetry code loaded otherwise)
  const tracing = tracingWanted() ? (await import('../common/tracing.js')).createTracing('santokit-bridge') : null;
  const { app, ctx } = await buildBridge(config, { tracing });
  if (tracing) ctx.onClose.push(() => tracing.shutdown());
  // load keys and releases before taking traffic (bounded: a Hub that is down must not block the start)
  const synced = await ctx.sync.start(config.sync.initialTimeoutMs);
  if (!synced) app.log.warn({ hubs: config.hubUrls.length }, 'bridge: no Hub reachable yet; API keys are refused (503) until the first sync');
  // /metrics on its own listener (never the public port), closed with the app
  const metrics = ctx.metrics ? await ctx.metrics.serve(app.log) : null;
  if (metrics) ctx.onClose.push(() => metrics.close());
  try {
    await app.listen({ port: config.port, host: config.host });
  } catch (e) {
    await metrics?.close();
    throw e;
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  app.log.info({ port, hubs: config.hubUrls.length }, `bridge listening on http://${config.host}:${port}`);
  return { app, ctx, port, metricsPort: metrics?.port ?? null, stop: () => app.close() };
}
