import type { FastifyInstance } from 'fastify';
import { projects as api } from '../../protocol/api/hub.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';
import { createEnv, listEnvs } from '../services/envs.js';
import { createProject, listProjects } from '../services/projects.js';

/** Projects and their envs (OPERATOR-001). */
export default async function projectRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  route(app, api.create, async ({ body }, actor) => createProject(ctx, actor, body.name));
  route(app, api.list, async (_in, actor) => ({ items: await listProjects(ctx, actor) }));
  route(app, api.createEnv, async ({ params, body }, actor) => createEnv(ctx, actor, params.project, body.name));
  route(app, api.listEnvs, async ({ params }, actor) => ({ items: await listEnvs(ctx, actor, params.project) }));
}
