import type { FastifyInstance } from 'fastify';
import type { HubContext } from '../context.js';
import { authenticate } from '../services/auth.js';
import { apply } from '../services/releases.js';

/** `stk apply`: schema DDL + permissions + release for one env (project deployer). */
export default async function applyRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  app.post<{ Params: { project: string; env: string } }>('/api/projects/:project/envs/:env/apply', async (req) => {
    const op = await authenticate(ctx, req);
    return apply(ctx, req, op, req.params.project, req.params.env, req.body);
  });
}
