import { operatorOf } from '../route-auth.js';
import { projectRoleAtLeast } from '../../protocol/route-auth.js';
import type { FastifyInstance } from 'fastify';
import type { HubContext } from '../context.js';
import { listConnections, setConnection, testConnection } from '../services/connections.js';

type EnvParams = { project: string; env: string };
type ConnParams = EnvParams & { name: string };

/** DB connections of an env. URLs go in, only masked URLs come out. */
export default async function connectionRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  const base = '/api/projects/:project/envs/:env/connections';
  const admin = { config: { auth: projectRoleAtLeast('admin') } };

  app.put<{ Params: ConnParams }>(`${base}/:name`, admin, async (req) => {
    const op = operatorOf(req);
    const body = (req.body ?? {}) as { engine?: unknown; dbUrl?: unknown };
    return setConnection(ctx, req, op, req.params.project, req.params.env, req.params.name, body);
  });

  app.get<{ Params: EnvParams }>(base, admin, async (req) => {
    const op = operatorOf(req);
    return { items: await listConnections(ctx, op, req.params.project, req.params.env) };
  });

  app.post<{ Params: ConnParams }>(`${base}/:name/test`, admin, async (req) => {
    const op = operatorOf(req);
    return testConnection(ctx, req, op, req.params.project, req.params.env, req.params.name);
  });
}
