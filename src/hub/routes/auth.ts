import type { FastifyInstance } from 'fastify';
import { auth as api } from '../../protocol/api/hub.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';
import { signedIn } from '../services/actor.js';
import { login, logout } from '../services/auth.js';
import { orgRole } from '../services/rbac.js';

export default async function authRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  route(app, api.login, async ({ body }, actor) => {
    const r = await login(ctx, actor, body.email, body.password);
    return { token: r.token, expiresAt: r.expiresAt, email: r.operator.email };
  });

  route(app, api.logout, async (_in, actor) => {
    await logout(ctx, actor);
    return { ok: true as const };
  });

  route(app, api.whoami, async (_in, actor) => {
    const op = signedIn(actor);
    const { role } = await orgRole(ctx, actor);
    const projects = await ctx.db
      .selectFrom('project_memberships')
      .innerJoin('projects', 'projects.id', 'project_memberships.project_id')
      .select(['projects.name as project', 'project_memberships.role', 'project_memberships.status'])
      .where('project_memberships.operator_id', '=', op.id)
      .orderBy('projects.name')
      .execute();
    return { id: op.id, email: op.email, orgRole: role, projectRoles: projects };
  });
}
