import type { FastifyInstance } from 'fastify';
import { projects as api } from '../../protocol/api/hub.js';
import { badField } from '../../protocol/errors.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';
import { createEnv, listEnvs } from '../services/envs.js';
import { createProject, listProjects } from '../services/projects.js';

/** Projects and their envs (OPERATOR-001). */
export default async function projectRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  route(app, api.create, async ({ body }, actor, { reply }) => {
    // the upstream spelling {project} (docs/compat.md): idempotent, 200 {ok, created}
    if (body.project !== undefined) {
      if (body.name !== undefined) throw badField(['name', 'project'], 'give "name" or the upstream "project", not both');
      const p = await createProject(ctx, actor, body.project, { existingOk: true });
      return { ok: true as const, created: p.created };
    }
    const p = await createProject(ctx, actor, body.name);
    reply.code(201);
    return { name: p.name, createdAt: p.createdAt };
  });
  route(app, api.list, async (_in, actor) => ({ items: await listProjects(ctx, actor) }));
  route(app, api.createEnv, async ({ params, body }, actor) => {
    const e = await createEnv(ctx, actor, params.project, body.name);
    return { name: e.name, createdAt: e.createdAt };
  });
  route(app, api.listEnvs, async ({ params }, actor) => ({ items: await listEnvs(ctx, actor, params.project) }));
}
