import { operatorOf } from '../route-auth.js';
import { OPERATOR, orgRoleAtLeast, projectRoleAtLeast } from '../../protocol/route-auth.js';
import type { FastifyInstance } from 'fastify';
import type { HubContext } from '../context.js';
import { createEnv, listEnvs } from '../services/envs.js';
import { createProject, listProjects } from '../services/projects.js';

type ProjectParams = { project: string };

/** Projects and their envs (OPERATOR-001). */
export default async function projectRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  app.post('/api/projects', { config: { auth: orgRoleAtLeast('admin') } }, async (req, reply) => {
    const op = operatorOf(req);
    const body = (req.body ?? {}) as { name?: unknown };
    const p = await createProject(ctx, req, op, body.name);
    return reply.code(201).send(p);
  });

  app.get('/api/projects', { config: { auth: OPERATOR } }, async (req) => {
    const op = operatorOf(req);
    return { items: await listProjects(ctx, op) };
  });

  app.post<{ Params: ProjectParams }>('/api/projects/:project/envs', { config: { auth: projectRoleAtLeast('admin') } }, async (req, reply) => {
    const op = operatorOf(req);
    const body = (req.body ?? {}) as { name?: unknown };
    const e = await createEnv(ctx, req, op, req.params.project, body.name);
    return reply.code(201).send(e);
  });

  app.get<{ Params: ProjectParams }>('/api/projects/:project/envs', { config: { auth: projectRoleAtLeast('viewer') } }, async (req) => {
    const op = operatorOf(req);
    return { items: await listEnvs(ctx, op, req.params.project) };
  });
}
