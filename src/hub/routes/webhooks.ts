import type { FastifyInstance } from 'fastify';
import { webhooks as api } from '../../protocol/api/hub.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';
import { addWebhook, listDeliveries, listWebhooks, removeWebhook, testWebhook } from '../services/webhooks/endpoints.js';

/** Webhook endpoints of a project: /api/projects/:project/webhooks (project admin). */
export default async function webhookRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  route(app, api.add, async ({ params: p, body }, actor, { reply }) => {
    reply.header('cache-control', 'no-store'); // carries the signing secret
    return addWebhook(ctx, actor, p.project, body);
  });
  route(app, api.list, async ({ params: p }, actor) => ({ items: await listWebhooks(ctx, actor, p.project) }));
  route(app, api.remove, async ({ params: p }, actor) => removeWebhook(ctx, actor, p.project, p.webhook));
  route(app, api.test, async ({ params: p }, actor, { reply }) => {
    const r = await testWebhook(ctx, actor, p.project, p.webhook);
    reply.code(202);
    return r;
  });
  route(app, api.deliveries, async ({ params: p, query }, actor) => ({ items: await listDeliveries(ctx, actor, p.project, query) }));
}
