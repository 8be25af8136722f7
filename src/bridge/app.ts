import type { FastifyInstance } from 'fastify';
import { createBaseApp } from '../common/http.js';
import { AppError } from '../protocol/errors.js';
import type { BridgeConfig } from './config.js';
import type { BridgeContext } from './context.js';
import healthRoutes from './routes/health.js';

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
  await app.register(healthRoutes, { ctx });
  app.post('/call', async () => {
    throw new AppError('SERVICE_UNAVAILABLE', 'the /call data plane is not enabled in this build');
  });
  app.addHook('onClose', async () => {
    for (const fn of ctx.onClose) await fn();
  });
  return { app, ctx };
}
