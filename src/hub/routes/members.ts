import { operatorOf } from '../route-auth.js';
import { PUBLIC, orgRoleAtLeast, projectRoleAtLeast } from '../../protocol/route-auth.js';
import type { FastifyInstance } from 'fastify';
import type { HubContext } from '../context.js';
import { acceptInvite, createInvite } from '../services/invites.js';
import {
  listOrgMembers,
  listProjectMembers,
  removeOrgMember,
  removeProjectMember,
  setOrgRole,
  setProjectRole,
} from '../services/members.js';

type ProjectParams = { project: string };
type OrgMemberParams = { email: string };
type ProjectMemberParams = ProjectParams & OrgMemberParams;
type InviteBody = { email?: unknown; role?: unknown };
type RoleBody = { role?: unknown };

/** Org and project memberships, invites and their acceptance (OPERATOR-006). */
export default async function memberRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  const orgAdmin = { config: { auth: orgRoleAtLeast('admin') } };
  // project admin, or the org owner even when pinned lower on the project (so an explicit downgrade
  // can never lock the org out of one of its projects): decided by requireProjectMemberAdmin
  const memberAdmin = { config: { auth: projectRoleAtLeast('admin', { orOrg: 'owner' }) } };
  // ---- org scope
  app.post('/api/org/invites', orgAdmin, async (req, reply) => {
    const op = operatorOf(req);
    return reply.code(201).send(await createInvite(ctx, req, op, 'org', null, (req.body ?? {}) as InviteBody));
  });
  app.get('/api/org/members', orgAdmin, async (req) => {
    const op = operatorOf(req);
    return { items: await listOrgMembers(ctx, op) };
  });
  app.put<{ Params: OrgMemberParams }>('/api/org/members/:email', orgAdmin, async (req) => {
    const op = operatorOf(req);
    return setOrgRole(ctx, req, op, req.params.email, ((req.body ?? {}) as RoleBody).role);
  });
  app.delete<{ Params: OrgMemberParams }>('/api/org/members/:email', orgAdmin, async (req) => {
    const op = operatorOf(req);
    await removeOrgMember(ctx, req, op, req.params.email);
    return { ok: true };
  });

  // ---- project scope
  app.post<{ Params: ProjectParams }>('/api/projects/:project/invites', memberAdmin, async (req, reply) => {
    const op = operatorOf(req);
    return reply.code(201).send(await createInvite(ctx, req, op, 'project', req.params.project, (req.body ?? {}) as InviteBody));
  });
  app.get<{ Params: ProjectParams }>('/api/projects/:project/members', memberAdmin, async (req) => {
    const op = operatorOf(req);
    return { items: await listProjectMembers(ctx, op, req.params.project) };
  });
  app.put<{ Params: ProjectMemberParams }>('/api/projects/:project/members/:email', memberAdmin, async (req) => {
    const op = operatorOf(req);
    return setProjectRole(ctx, req, op, req.params.project, req.params.email, ((req.body ?? {}) as RoleBody).role);
  });
  app.delete<{ Params: ProjectMemberParams }>('/api/projects/:project/members/:email', memberAdmin, async (req) => {
    const op = operatorOf(req);
    await removeProjectMember(ctx, req, op, req.params.project, req.params.email);
    return { ok: true };
  });

  // ---- acceptance: the code is the credential, no session needed
  app.post('/api/invites/accept', { config: { auth: PUBLIC } }, async (req) => {
    return acceptInvite(ctx, req, (req.body ?? {}) as { email?: unknown; code?: unknown; password?: unknown });
  });
}
