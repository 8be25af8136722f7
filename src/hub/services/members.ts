import type { FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import { conflict, forbidden, invalidRole, notFound } from '../../protocol/errors.js';
import { ORG_ROLES, PROJECT_ROLES, type OrgRole, type ProjectRole } from '../../protocol/names.js';
import type { HubContext } from '../context.js';
import type { HubDatabase } from '../store/schema.js';
import { nowIso } from '../store/store.js';
import { validateEmail, type Operator } from './auth.js';
import { audit } from './audit.js';
import { findProject, orgRole, requireOrgRole, requireProjectRole, type ProjectRef } from './rbac.js';

export type Scope = 'org' | 'project';

export interface MemberView {
  email: string;
  role: string;
  status: 'active' | 'pending';
  createdAt: string;
  /** project lists only: 'project' for an explicit membership, 'org' for an org owner/admin's inherited admin */
  source?: 'project' | 'org';
}

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
 * Authorises a project-scope membership change: project admin; org owners may always act so an
 * explicit downgrade can never lock the org out of one of its projects.
 */
export async function requireProjectMemberAdmin(ctx: HubContext, op: Operator, projectName: string): Promise<ProjectRef> {
  const project = typeof projectName === 'string' ? await findProject(ctx, projectName) : undefined;
  if (project) {
    const { role } = await orgRole(ctx, op);
    if (role === 'owner') return project;
  }
  return (await requireProjectRole(ctx, op, projectName, 'admin')).project;
}

async function operatorByEmail(db: Kysely<HubDatabase>, email: string) {
  return db.selectFrom('operators').select(['id', 'email', 'status']).where('email', '=', email).executeTakeFirst();
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

export async function listOrgMembers(ctx: HubContext, op: Operator): Promise<MemberView[]> {
  const { orgId } = await requireOrgRole(ctx, op, 'admin');
  const rows = await ctx.db
    .selectFrom('org_memberships')
    .innerJoin('operators', 'operators.id', 'org_memberships.operator_id')
    .select(['operators.email', 'org_memberships.role', 'org_memberships.status', 'org_memberships.created_at'])
    .where('org_memberships.org_id', '=', orgId)
    .orderBy('operators.email')
    .execute();
  return rows.map((r) => ({ email: r.email, role: r.role, status: r.status, createdAt: r.created_at }));
}

/** Changes an org member's role (org admin; owner role changes need an owner; keeps one active owner). */
export async function setOrgRole(ctx: HubContext, req: FastifyRequest | null, op: Operator, emailIn: string, roleIn: unknown): Promise<MemberView> {
  const me = await requireOrgRole(ctx, op, 'admin');
  const role = checkRole('org', roleIn) as OrgRole;
  const email = validateEmail(emailIn);
  return ctx.db.transaction().execute(async (trx) => {
    const target = await operatorByEmail(trx, email);
    const m = target
      ? await trx.selectFrom('org_memberships').selectAll().where('org_id', '=', me.orgId).where('operator_id', '=', target.id).executeTakeFirst()
      : undefined;
    if (!target || !m) throw notFound(`${email} is not a member of the org: invite them with stk org invite`);
    if ((role === 'owner' || m.role === 'owner') && me.role !== 'owner') throw forbidden('you need org:owner to grant or change the owner role');
    if (m.role === 'owner' && role !== 'owner' && m.status === 'active' && (await activeOwnerCount(trx, me.orgId)) <= 1) {
      throw conflict(`${email} is the last owner of the org: make someone else owner first`);
    }
    await trx.updateTable('org_memberships').set({ role }).where('org_id', '=', me.orgId).where('operator_id', '=', target.id).execute();
    await audit(ctx, req, { action: 'rbac.set_role', actor: op, detail: { scope: 'org', operatorId: target.id, email, role, previousRole: m.role } }, trx);
    return { email, role, status: m.status, createdAt: m.created_at };
  });
}

/**
 * Removes an operator from the org: the org membership, every project membership in the org and
 * any open invites. Access ends on the very next request.
 */
export async function removeOrgMember(ctx: HubContext, req: FastifyRequest | null, op: Operator, emailIn: string): Promise<void> {
  const me = await requireOrgRole(ctx, op, 'admin');
  const email = validateEmail(emailIn);
  await ctx.db.transaction().execute(async (trx) => {
    const target = await operatorByEmail(trx, email);
    const m = target
      ? await trx.selectFrom('org_memberships').selectAll().where('org_id', '=', me.orgId).where('operator_id', '=', target.id).executeTakeFirst()
      : undefined;
    if (!target || !m) throw notFound(`${email} is not a member of the org`);
    if (m.role === 'owner' && me.role !== 'owner') throw forbidden('you need org:owner to remove an owner');
    if (m.role === 'owner' && m.status === 'active' && (await activeOwnerCount(trx, me.orgId)) <= 1) {
      throw conflict(`${email} is the last owner of the org and cannot be removed`);
    }
    await trx.deleteFrom('org_memberships').where('org_id', '=', me.orgId).where('operator_id', '=', target.id).execute();
    const projectIds = trx.selectFrom('projects').select('id').where('org_id', '=', me.orgId);
    await trx.deleteFrom('project_memberships').where('operator_id', '=', target.id).where('project_id', 'in', projectIds).execute();
    await trx.deleteFrom('invites').where('org_id', '=', me.orgId).where('email', '=', email).where('accepted_at', 'is', null).execute();
    await audit(ctx, req, { action: 'rbac.remove', actor: op, detail: { scope: 'org', operatorId: target.id, email, role: m.role } }, trx);
  });
}

// ---------------------------------------------------------------- project scope

/** Explicit project memberships plus org owners/admins who inherit project:admin there. */
export async function listProjectMembers(ctx: HubContext, op: Operator, projectName: string): Promise<MemberView[]> {
  const project = await requireProjectMemberAdmin(ctx, op, projectName);
  const explicit = await ctx.db
    .selectFrom('project_memberships')
    .innerJoin('operators', 'operators.id', 'project_memberships.operator_id')
    .select(['operators.email', 'project_memberships.role', 'project_memberships.status', 'project_memberships.created_at'])
    .where('project_memberships.project_id', '=', project.id)
    .execute();
  const seen = new Set(explicit.map((r) => r.email));
  const inherited = await ctx.db
    .selectFrom('org_memberships')
    .innerJoin('operators', 'operators.id', 'org_memberships.operator_id')
    .select(['operators.email', 'org_memberships.created_at'])
    .where('org_memberships.org_id', '=', project.orgId)
    .where('org_memberships.status', '=', 'active')
    .where('org_memberships.role', 'in', ['owner', 'admin'])
    .execute();
  const out: MemberView[] = explicit.map((r) => ({ email: r.email, role: r.role, status: r.status, createdAt: r.created_at, source: 'project' as const }));
  for (const r of inherited) if (!seen.has(r.email)) out.push({ email: r.email, role: 'admin', status: 'active', createdAt: r.created_at, source: 'org' });
  return out.sort((a, b) => a.email.localeCompare(b.email));
}

/**
 * Sets an explicit project role. An operator who already belongs to the org gets an active
 * membership directly (this is how an org admin is pinned to, say, viewer on one project);
 * new people go through an invite.
 */
export async function setProjectRole(
  ctx: HubContext,
  req: FastifyRequest | null,
  op: Operator,
  projectName: string,
  emailIn: string,
  roleIn: unknown,
): Promise<MemberView> {
  const project = await requireProjectMemberAdmin(ctx, op, projectName);
  const role = checkRole('project', roleIn) as ProjectRole;
  const email = validateEmail(emailIn);
  return ctx.db.transaction().execute(async (trx) => {
    const target = await operatorByEmail(trx, email);
    if (!target) throw notFound(`no operator ${email}: invite them with stk project invite`);
    const existing = await trx
      .selectFrom('project_memberships')
      .selectAll()
      .where('project_id', '=', project.id)
      .where('operator_id', '=', target.id)
      .executeTakeFirst();
    let out: MemberView;
    if (existing) {
      await trx.updateTable('project_memberships').set({ role }).where('project_id', '=', project.id).where('operator_id', '=', target.id).execute();
      out = { email, role, status: existing.status, createdAt: existing.created_at, source: 'project' };
    } else {
      const orgM = await trx
        .selectFrom('org_memberships')
        .select('status')
        .where('org_id', '=', project.orgId)
        .where('operator_id', '=', target.id)
        .executeTakeFirst();
      if (!orgM || orgM.status !== 'active' || target.status !== 'active') {
        throw notFound(`${email} is not an active member of the org: invite them with stk project invite`);
      }
      const now = nowIso();
      await trx.insertInto('project_memberships').values({ project_id: project.id, operator_id: target.id, role, status: 'active', created_at: now }).execute();
      out = { email, role, status: 'active', createdAt: now, source: 'project' };
    }
    await audit(ctx, req, {
      action: 'rbac.set_role',
      project: project.name,
      actor: op,
      detail: { scope: 'project', operatorId: target.id, email, role, previousRole: existing?.role ?? null },
    }, trx);
    return out;
  });
}

/** Removes an explicit project membership (and open invites to the project). */
export async function removeProjectMember(ctx: HubContext, req: FastifyRequest | null, op: Operator, projectName: string, emailIn: string): Promise<void> {
  const project = await requireProjectMemberAdmin(ctx, op, projectName);
  const email = validateEmail(emailIn);
  await ctx.db.transaction().execute(async (trx) => {
    const target = await operatorByEmail(trx, email);
    const m = target
      ? await trx.selectFrom('project_memberships').selectAll().where('project_id', '=', project.id).where('operator_id', '=', target.id).executeTakeFirst()
      : undefined;
    if (!target || !m) throw notFound(`${email} has no role on project ${project.name}`);
    await trx.deleteFrom('project_memberships').where('project_id', '=', project.id).where('operator_id', '=', target.id).execute();
    await trx.deleteFrom('invites').where('project_id', '=', project.id).where('email', '=', email).where('accepted_at', 'is', null).execute();
    await audit(ctx, req, { action: 'rbac.remove', project: project.name, actor: op, detail: { scope: 'project', operatorId: target.id, email, role: m.role } }, trx);
  });
}
