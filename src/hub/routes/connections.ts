import type { FastifyInstance } from 'fastify';
import { connections as api } from '../../protocol/api/hub.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';
import { listConnections, setConnection, testConnection } from '../services/connections.js';

/** DB connections of an env. URLs go in, only masked URLs come out. */
export default async function connectionRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  route(app, api.set, async ({ params: p, body }, actor) => setConnection(ctx, actor, p.project, p.env, p.name, body));
  route(app, api.list, async ({ params: p }, actor) => ({ items: await listConnections(ctx, actor, p.project, p.env) }));
  route(app, api.test, async ({ params: p }, actor) => testConnection(ctx, actor, p.project, p.env, p.name));
}
