import type { FastifyInstance } from 'fastify';
import { health as api } from '../../protocol/api/hub.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';

export default async function healthRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  route(app, api.healthz, async () => ({ ok: true }));
  route(app, api.health, async () => ({ ok: true }));
  route(app, api.internalHealthz, async () => ({ ok: true }));
  route(app, api.readyz, async (_in, _actor, { reply }) => {
    const ok = await ctx.store.ping();
    return reply.code(ok ? 200 : 503).send({ ok });
  });
}
