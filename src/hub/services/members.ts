import type { Actor } from './actor.js';
import type { Kysely } from 'kysely';
import { conflict, forbidden, invalidRole, notFound } from '../../protocol/errors.js';
import { ORG_ROLE_RANK, ORG_ROLES, PROJECT_ROLES, type OrgRole, type ProjectRole } from '../../protocol/names.js';
import type { HubContext } from '../context.js';
import type { HubDatabase, InvitesTable } from '../store/schema.js';
import { nowIso } from '../store/store.js';
import { validateEmail } from './auth.js';
import { audit } from './audit.js';
import type { MemberView } from '../../protocol/api/hub.js';
import {
  activeOrgRole,
  activeProjectRole,
  AUTHORITY,
  findProject,
  mayManage,
  orgAuthority,
  orgRole,
  projectAuthority,
  projectAuthorityOf,
  requireOrgRole,
  requireProjectRole,
  type ProjectRef,
} from './rbac.js';

export type Scope = 'org' | 'project';

/** 422 INVALID_ROLE naming the valid roles for the scope. */
export function checkRole(scope: Scope, role: unknown): string {
  const valid: readonly string[] = scope === 'org' ? ORG_ROLES : PROJECT_ROLES;
  if (typeof role !== 'string' || !valid.includes(role)) {
    const shown = typeof role === 'string' ? JSON.stringify(role.slice(0, 40)) : String(role);
    throw invalidRole(`invalid ${scope} role ${shown}: use one of ${valid.join(', ')}`, { validRoles: valid });
  }
  return role;
}

/**
 * Authorises a project-scope membership change and says how far the actor reaches on the ladder
 * (`AUTHORITY`): project admin at least; org owners may always act so an explicit downgrade can never
 * lock the org out of one of its projects.
 */
export async function requireProjectMemberAdmin(ctx: HubContext, actor: Actor, projectName: string): Promise<{ project: ProjectRef; authority: number }> {
  const { role: org } = await orgRole(ctx, actor);
  // the 404 for org members / 403 naming the role the operator has; org owners need no project role
  const project = org === 'owner' && typeof projectName === 'string' ? await findProject(ctx, projectName) : undefined;
  if (project) return { project, authority: AUTHORITY.owner };
  const { project: p, role } = await requireProjectRole(ctx, actor, projectName, 'admin');
  return { project: p, authority: projectAuthorityOf(org, role) };
}

export async function operatorByEmail(db: Kysely<HubDatabase>, email: string) {
  return db.selectFrom('operators').select(['id', 'email', 'status']).where('email', '=', email).executeTakeFirst();
}

/** The target's place on the ladder from their active org role (read in the caller's transaction). */
export async function targetAuthority(db: Kysely<HubDatabase>, orgId: string, operatorId: string): Promise<{ role: OrgRole | null; authority: number }> {
  const role = await activeOrgRole(db, orgId, operatorId);
  return { role, authority: orgAuthority(role) };
}

/**
 * The target's place on the ladder for one project: their org rank, or project admin when that is
 * higher and they hold an explicit active project:admin there (a co-admin is not ranked below you).
 */
export async function targetProjectAuthority(
  db: Kysely<HubDatabase>,
  project: ProjectRef,
  operatorId: string,
): Promise<{ role: OrgRole | null; authority: number; as?: string }> {
  const t = await targetAuthority(db, project.orgId, operatorId);
  if (t.authority >= AUTHORITY.projectAdmin) return t;
  return (await activeProjectRole(db, project.id, operatorId)) === 'admin'
    ? { ...t, authority: AUTHORITY.projectAdmin, as: `project admin of ${project.name}` }
    : t;
}

/** 403 unless an actor at `actor` may change or remove someone at `target` (see `AUTHORITY`); `action` names it, e.g. "remove a@x.io". */
export function requireMayManage(actor: number, target: { role: OrgRole | null; authority: number; as?: string }, action: string): void {
  if (!mayManage(actor, target.authority)) {
    throw forbidden(
      `you cannot ${action}: they are ${target.as ?? `org ${target.role}`}, at or above your own authority${actor < AUTHORITY.owner ? ' (ask an org owner)' : ''}`,
    );
  }
}

/** Invites for `email` in the org that are neither accepted nor expired (optionally: of one scope / project). */
export function openInvites(db: Kysely<HubDatabase>, orgId: string, email: string, now = nowIso()) {
  return db.selectFrom('invites').where('org_id', '=', orgId).where('email', '=', email).where('accepted_at', 'is', null).where('expires_at', '>', now);
}

/**
 * Whether the sender of an invite can still grant it now: an active operator with an org role that
 * may invite at this role (org invites), or project-member authority on the project (project
 * invites). Also returns the project of a project invite.
 */
export async function senderCanGrant(
  db: Kysely<HubDatabase>,
  invite: Pick<InvitesTable, 'scope' | 'org_id' | 'project_id' | 'role' | 'created_by'>,
): Promise<{ ok: boolean; project: ProjectRef | null }> {
  const sender = await db.selectFrom('operators').select(['id', 'status']).where('id', '=', invite.created_by).executeTakeFirst();
  if (invite.scope === 'org') {
    if (sender?.status !== 'active') return { ok: false, project: null };
    const s = await targetAuthority(db, invite.org_id, sender.id);
    return { ok: s.role !== null && s.authority >= AUTHORITY.admin && ORG_ROLE_RANK[invite.role as OrgRole] <= ORG_ROLE_RANK[s.role], project: null };
  }
  const p = invite.project_id
    ? await db.selectFrom('projects').select(['id', 'name', 'org_id']).where('id', '=', invite.project_id).executeTakeFirst()
    : undefined;
  const project = p ? { id: p.id, name: p.name, orgId: p.org_id } : null;
  if (!project || sender?.status !== 'active') return { ok: false, project };
  return { ok: (await projectAuthority(db, project, sender.id)) > AUTHORITY.none, project };
}

/** After `senderId` was demoted or removed: withdraws the open invites they sent and can no longer grant. */
async function dropVoidInvites(db: Kysely<HubDatabase>, orgId: string, senderId: string): Promise<number> {
  const sent = await db
    .selectFrom('invites')
    .selectAll()
    .where('org_id', '=', orgId)
    .where('created_by', '=', senderId)
    .where('accepted_at', 'is', null)
    .execute();
  const gone: string[] = [];
  for (const i of sent) if (!(await senderCanGrant(db, i)).ok) gone.push(i.id);
  if (gone.length) await db.deleteFrom('invites').where('id', 'in', gone).execute();
  return gone.length;
}

async function activeOwnerCount(db: Kysely<HubDatabase>, orgId: string): Promise<number> {
  const { n } = await db
    .selectFrom('org_memberships')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('org_id', '=', orgId)
    .where('role', '=', 'owner')
    .where('status', '=', 'active')
    .executeTakeFirstOrThrow();
  return Number(n);
}

// ---------------------------------------------------------------- org scope

/** Active org members, then people with an open invite (status `pending`; a project-only invite shows as org member). */
export async function listOrgMembers(ctx: HubContext, actor: Actor): Promise<MemberView[]> {
  const { orgId } = await requireOrgRole(ctx, actor, 'admin');
  const rows = await ctx.db
    .selectFrom('org_memberships')
    .innerJoin('operators', 'operators.id', 'org_memberships.operator_id')
    .select(['operators.email', 'org_memberships.role', 'org_memberships.created_at'])
    .where('org_memberships.org_id', '=', orgId)
    .where('org_memberships.status', '=', 'active')
    .execute();
  const out: MemberView[] = rows.map((r) => ({ email: r.email, role: r.role, status: 'active', createdAt: r.created_at }));
  const members = new Set(rows.map((r) => r.email));
  const invites = await ctx.db
    .selectFrom('invites')
    .select(['email', 'scope', 'role', 'created_at'])
    .where('org_id', '=', orgId)
    .where('accepted_at', 'is', null)
    .where('expires_at', '>', nowIso())
    .orderBy('created_at')
    .execute();
  const pending = new Map<string, MemberView>();
  for (const i of invites) {
    if (members.has(i.email)) continue;
    const role = i.scope === 'org' ? (i.role as OrgRole) : 'member';
    const cur = pending.get(i.email);
    if (!cur) pending.set(i.email, { email: i.email, role, status: 'pending', createdAt: i.created_at });
    else if (ORG_ROLE_RANK[role] > ORG_ROLE_RANK[cur.role as OrgRole]) cur.role = role;
  }
  return [...out, ...pending.values()].sort((a, b) => a.email.localeCompare(b.email));
}

/**
 * Changes an active org member's role. Org admins manage members only (not other admins or owners)
 * and grant at most admin; owners manage everyone; the org always keeps one active owner.
 */
export async function setOrgRole(ctx: HubContext, actor: Actor, emailIn: string, roleIn: unknown): Promise<MemberView> {
  const me = await requireOrgRole(ctx, actor, 'admin');
  const role = checkRole('org', roleIn) as OrgRole;
  const email = validateEmail(emailIn);
  return ctx.db.transaction().execute(async (trx) => {
    const target = await operatorByEmail(trx, email);
    const m = target
      ? await trx
          .selectFrom('org_memberships')
          .selectAll()
          .where('org_id', '=', me.orgId)
          .where('operator_id', '=', target.id)
          .where('status', '=', 'active')
          .executeTakeFirst()
      : undefined;
    if (!target || !m) {
      const invited = await openInvites(trx, me.orgId, email).select('id').executeTakeFirst();
      if (invited) throw notFound(`${email} has not accepted their invite yet: the role takes effect on acceptance (invite again to change it)`);
      throw notFound(`${email} is not a member of the org: invite them with stk org invite`);
    }
    requireMayManage(orgAuthority(me.role), { role: m.role, authority: orgAuthority(m.role) }, `change the org role of ${email}`);
    if (ORG_ROLE_RANK[role] > ORG_ROLE_RANK[me.role]) throw forbidden(`you need org:${role} to grant the ${role} role`);
    if (m.role === 'owner' && role !== 'owner' && (await activeOwnerCount(trx, me.orgId)) <= 1) {
      throw conflict(`${email} is the last owner of the org: make someone else owner first`);
    }
    await trx.updateTable('org_memberships').set({ role }).where('org_id', '=', me.orgId).where('operator_id', '=', target.id).execute();
    await dropVoidInvites(trx, me.orgId, target.id);
    await audit(ctx, actor, { action: 'rbac.set_role', detail: { scope: 'org', operatorId: target.id, email, role, previousRole: m.role } }, trx);
    return { email, role, status: 'active', createdAt: m.created_at };
  });
}

/**
 * Removes an operator from the org: the org membership, every project membership in the org and
 * any open invites (so this also withdraws a pending invite). Access ends on the very next request.
 */
export async function removeOrgMember(ctx: HubContext, actor: Actor, emailIn: string): Promise<void> {
  const me = await requireOrgRole(ctx, actor, 'admin');
  const email = validateEmail(emailIn);
  await ctx.db.transaction().execute(async (trx) => {
    const target = await operatorByEmail(trx, email);
    const m = target
      ? await trx.selectFrom('org_memberships').selectAll().where('org_id', '=', me.orgId).where('operator_id', '=', target.id).executeTakeFirst()
      : undefined;
    const invites = (await openInvites(trx, me.orgId, email).select('id').execute()).length;
    if (!target || (!m && invites === 0)) throw notFound(`${email} is not a member of the org`);
    const t = await targetAuthority(trx, me.orgId, target.id);
    requireMayManage(orgAuthority(me.role), t, `remove ${email} from the org`);
    if (t.role === 'owner' && (await activeOwnerCount(trx, me.orgId)) <= 1) {
      throw conflict(`${email} is the last owner of the org and cannot be removed`);
    }
    await trx.deleteFrom('org_memberships').where('org_id', '=', me.orgId).where('operator_id', '=', target.id).execute();
    const projectIds = trx.selectFrom('projects').select('id').where('org_id', '=', me.orgId);
    await trx.deleteFrom('project_memberships').where('operator_id', '=', target.id).where('project_id', 'in', projectIds).execute();
    await trx.deleteFrom('invites').where('org_id', '=', me.orgId).where('email', '=', email).where('accepted_at', 'is', null).execute();
    await dropVoidInvites(trx, me.orgId, target.id);
    await audit(
      ctx,
      actor,
      { action: 'rbac.remove', detail: { scope: 'org', operatorId: target.id, email, role: m?.role ?? null, withdrawnInvites: invites } },
      trx,
    );
  });
}

// ---------------------------------------------------------------- project scope

/** Explicit project memberships, org owners/admins who inherit project:admin there, then open invites to the project (pending). */
export async function listProjectMembers(ctx: HubContext, actor: Actor, projectName: string): Promise<MemberView[]> {
  const { project } = await requireProjectMemberAdmin(ctx, actor, projectName);
  const explicit = await ctx.db
    .selectFrom('project_memberships')
    .innerJoin('operators', 'operators.id', 'project_memberships.operator_id')
    .select(['operators.email', 'project_memberships.role', 'project_memberships.created_at'])
    .where('project_memberships.project_id', '=', project.id)
    .where('project_memberships.status', '=', 'active')
    .execute();
  const out: MemberView[] = explicit.map((r) => ({ email: r.email, role: r.role, status: 'active', createdAt: r.created_at, source: 'project' as const }));
  const seen = new Set(explicit.map((r) => r.email));
  const inherited = await ctx.db
    .selectFrom('org_memberships')
    .innerJoin('operators', 'operators.id', 'org_memberships.operator_id')
    .select(['operators.email', 'org_memberships.created_at'])
    .where('org_memberships.org_id', '=', project.orgId)
    .where('org_memberships.status', '=', 'active')
    .where('org_memberships.role', 'in', ['owner', 'admin'])
    .execute();
  for (const r of inherited) {
    if (seen.has(r.email)) continue;
    seen.add(r.email);
    out.push({ email: r.email, role: 'admin', status: 'active', createdAt: r.created_at, source: 'org' });
  }
  // people with an open invite to the project and no access here yet
  const invites = await ctx.db
    .selectFrom('invites')
    .select(['email', 'role', 'created_at'])
    .where('project_id', '=', project.id)
    .where('accepted_at', 'is', null)
    .where('expires_at', '>', nowIso())
    .orderBy('created_at', 'desc')
    .execute();
  for (const i of invites) {
    if (seen.has(i.email)) continue;
    seen.add(i.email);
    out.push({ email: i.email, role: i.role, status: 'pending', createdAt: i.created_at, source: 'project' });
  }
  return out.sort((a, b) => a.email.localeCompare(b.email));
}

/**
 * Sets an explicit project role for an active org member (this is how an org admin is pinned to,
 * say, viewer on one project); new people go through an invite. Only someone ranked above the
 * target may do it: a project admin cannot pin an org admin or owner.
 */
export async function setProjectRole(ctx: HubContext, actor: Actor, projectName: string, emailIn: string, roleIn: unknown): Promise<MemberView> {
  const { project, authority } = await requireProjectMemberAdmin(ctx, actor, projectName);
  const role = checkRole('project', roleIn) as ProjectRole;
  const email = validateEmail(emailIn);
  return ctx.db.transaction().execute(async (trx) => {
    const target = await operatorByEmail(trx, email);
    const t = target ? await targetProjectAuthority(trx, project, target.id) : null;
    if (!target || !t || t.role === null || target.status !== 'active') {
      // project admins see open invites in the member list: saying so here tells them nothing new
      const invited = await openInvites(trx, project.orgId, email).where('project_id', '=', project.id).select('id').executeTakeFirst();
      if (invited)
        throw notFound(`${email} has not accepted their invite to ${project.name} yet: the role takes effect on acceptance (invite again to change it)`);
      if (!target) throw notFound(`no operator ${email}: invite them with stk project invite`);
      throw notFound(`${email} is not an active member of the org: invite them with stk project invite`);
    }
    requireMayManage(authority, t, `change the project role of ${email} on ${project.name}`);
    const existing = await trx
      .selectFrom('project_memberships')
      .selectAll()
      .where('project_id', '=', project.id)
      .where('operator_id', '=', target.id)
      .executeTakeFirst();
    let out: MemberView;
    if (existing) {
      await trx
        .updateTable('project_memberships')
        .set({ role, status: 'active' })
        .where('project_id', '=', project.id)
        .where('operator_id', '=', target.id)
        .execute();
      out = { email, role, status: 'active', createdAt: existing.created_at, source: 'project' };
    } else {
      const now = nowIso();
      await trx.insertInto('project_memberships').values({ project_id: project.id, operator_id: target.id, role, status: 'active', created_at: now }).execute();
      out = { email, role, status: 'active', createdAt: now, source: 'project' };
    }
    await dropVoidInvites(trx, project.orgId, target.id);
    await audit(
      ctx,
      actor,
      {
        action: 'rbac.set_role',
        project: project.name,
        detail: { scope: 'project', operatorId: target.id, email, role, previousRole: existing?.role ?? null },
      },
      trx,
    );
    return out;
  });
}

/** Removes an explicit project membership and withdraws open invites to the project (same ranking rule as set-role). */
export async function removeProjectMember(ctx: HubContext, actor: Actor, projectName: string, emailIn: string): Promise<void> {
  const { project, authority } = await requireProjectMemberAdmin(ctx, actor, projectName);
  const email = validateEmail(emailIn);
  await ctx.db.transaction().execute(async (trx) => {
    const target = await operatorByEmail(trx, email);
    const m = target
      ? await trx.selectFrom('project_memberships').selectAll().where('project_id', '=', project.id).where('operator_id', '=', target.id).executeTakeFirst()
      : undefined;
    const invites = (await openInvites(trx, project.orgId, email).where('project_id', '=', project.id).select('id').execute()).length;
    if (!target || (!m && invites === 0)) throw notFound(`${email} has no role on project ${project.name}`);
    requireMayManage(authority, await targetProjectAuthority(trx, project, target.id), `remove ${email} from project ${project.name}`);
    await trx.deleteFrom('project_memberships').where('project_id', '=', project.id).where('operator_id', '=', target.id).execute();
    await trx.deleteFrom('invites').where('project_id', '=', project.id).where('email', '=', email).where('accepted_at', 'is', null).execute();
    await dropVoidInvites(trx, project.orgId, target.id);
    await audit(
      ctx,
      actor,
      {
        action: 'rbac.remove',
        project: project.name,
        detail: { scope: 'project', operatorId: target.id, email, role: m?.role ?? null, withdrawnInvites: invites },
      },
      trx,
    );
  });
}
