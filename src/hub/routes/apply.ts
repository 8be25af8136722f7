import { operatorOf } from '../route-auth.js';
import { projectRoleAtLeast } from '../../protocol/route-auth.js';
import type { FastifyInstance } from 'fastify';
import type { HubContext } from '../context.js';
import { apply } from '../services/releases.js';

/** `stk apply`: schema DDL + permissions + release for one env (project deployer). */
export default async function applyRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  app.post<{ Params: { project: string; env: string } }>('/api/projects/:project/envs/:env/apply', { config: { auth: projectRoleAtLeast('deployer') } }, async (req) => {
    const op = operatorOf(req);
    return apply(ctx, req, op, req.params.project, req.params.env, req.body);
  });
}
