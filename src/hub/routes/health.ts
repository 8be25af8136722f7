import type { FastifyInstance } from 'fastify';
import type { HubContext } from '../context.js';

export default async function healthRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  app.get('/healthz', async () => ({ ok: true }));
  app.get('/health', async () => ({ ok: true }));
  app.get('/internal/healthz', async () => ({ ok: true }));
  app.get('/readyz', async (_req, reply) => {
    const ok = await ctx.store.ping();
    return reply.code(ok ? 200 : 503).send({ ok });
  });
}
