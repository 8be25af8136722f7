import type { FastifyInstance } from 'fastify';
import type { HubContext } from '../context.js';
import projectRoutes from './projects.js';
import connectionRoutes from './connections.js';
import memberRoutes from './members.js';
import auditRoutes from './audit.js';
import apiKeyRoutes from './apikeys.js';
import internalRoutes from './internal.js';
import applyRoutes from './apply.js';
import releaseRoutes from './releases.js';
import schemaRoutes from './schema.js';
import webhookRoutes from './webhooks.js';
import compatRoutes from './compat.js';
import leakRoutes from './leaks.js';

/**
 * Resource route plugins. Each file owns one resource and stays thin: parse input, call a service,
 * return its result. Add new resources here.
 */
export async function registerRoutes(app: FastifyInstance, ctx: HubContext): Promise<void> {
  void app;
  void ctx;
  await app.register(projectRoutes, { ctx });
  await app.register(connectionRoutes, { ctx });
  await app.register(memberRoutes, { ctx });
  await app.register(auditRoutes, { ctx });
  await app.register(apiKeyRoutes, { ctx });
  await app.register(internalRoutes, { ctx });
  await app.register(applyRoutes, { ctx });
  await app.register(releaseRoutes, { ctx });
  await app.register(schemaRoutes, { ctx });
  await app.register(webhookRoutes, { ctx });
  await app.register(leakRoutes, { ctx });
  // the upstream Santokit routes, onto the same services (docs/compat.md)
  await app.register(compatRoutes, { ctx });
}
