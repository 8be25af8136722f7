import { loadBridgeConfig, type BridgeConfig } from './config.js';
import { buildBridge } from './app.js';

/** `stk bridge start`: build, listen. */
export async function startBridge(config: BridgeConfig = loadBridgeConfig()) {
  const { app, ctx } = await buildBridge(config);
  await app.listen({ port: config.port, host: config.host });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  app.log.info({ port, hubs: config.hubUrls.length }, `bridge listening on http://${config.host}:${port}`);
  return { app, ctx, port, stop: () => app.close() };
}
