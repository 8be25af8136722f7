import { PUBLIC } from '../../protocol/route-auth.js';
import type { FastifyInstance } from 'fastify';
import type { HubContext } from '../context.js';

export default async function healthRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  const pub = { config: { auth: PUBLIC } };
  app.get('/healthz', pub, async () => ({ ok: true }));
  app.get('/health', pub, async () => ({ ok: true }));
  app.get('/internal/healthz', pub, async () => ({ ok: true }));
  app.get('/readyz', pub, async (_req, reply) => {
    const ok = await ctx.store.ping();
    return reply.code(ok ? 200 : 503).send({ ok });
  });
}
