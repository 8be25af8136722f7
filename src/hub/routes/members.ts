import type { FastifyInstance } from 'fastify';
import { members as api } from '../../protocol/api/hub.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';
import { acceptInvite, createInvite } from '../services/invites.js';
import { listOrgMembers, listProjectMembers, removeOrgMember, removeProjectMember, setOrgRole, setProjectRole } from '../services/members.js';

/**
 * Org and project memberships, invites and their acceptance (OPERATOR-006). Project-scope changes:
 * project admin, or the org owner even when pinned lower on the project (so an explicit downgrade can
 * never lock the org out of one of its projects); the services apply the authority ladder.
 */
export default async function memberRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  route(app, api.orgInvite, async ({ body }, actor) => createInvite(ctx, actor, 'org', null, body));
  route(app, api.orgList, async (_in, actor) => ({ items: await listOrgMembers(ctx, actor) }));
  route(app, api.orgSetRole, async ({ params, body }, actor) => setOrgRole(ctx, actor, params.email, body.role));
  route(app, api.orgRemove, async ({ params }, actor) => {
    await removeOrgMember(ctx, actor, params.email);
    return { ok: true as const };
  });
  route(app, api.projectInvite, async ({ params, body }, actor) => createInvite(ctx, actor, 'project', params.project, body));
  route(app, api.projectList, async ({ params }, actor) => ({ items: await listProjectMembers(ctx, actor, params.project) }));
  route(app, api.projectSetRole, async ({ params, body }, actor) => setProjectRole(ctx, actor, params.project, params.email, body.role));
  route(app, api.projectRemove, async ({ params }, actor) => {
    await removeProjectMember(ctx, actor, params.project, params.email);
    return { ok: true as const };
  });
  // the code is the credential: no session needed
  route(app, api.accept, async ({ body }, actor) => acceptInvite(ctx, actor, body));
}
