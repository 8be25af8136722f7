import { operatorOf } from '../route-auth.js';
import { OPERATOR, PUBLIC } from '../../protocol/route-auth.js';
import type { FastifyInstance } from 'fastify';
import type { HubContext } from '../context.js';
import { login, logout } from '../services/auth.js';
import { orgRole } from '../services/rbac.js';

export default async function authRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  app.post('/api/auth/login', { config: { auth: PUBLIC } }, async (req) => {
    const body = (req.body ?? {}) as { email?: unknown; password?: unknown };
    const r = await login(ctx, req, body.email, body.password);
    return { token: r.token, expiresAt: r.expiresAt, email: r.operator.email };
  });

  app.post('/api/auth/logout', { config: { auth: OPERATOR } }, async (req) => {
    const op = operatorOf(req);
    await logout(ctx, req, op);
    return { ok: true };
  });

  app.get('/api/auth/whoami', { config: { auth: OPERATOR } }, async (req) => {
    const op = operatorOf(req);
    const { role } = await orgRole(ctx, op);
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
