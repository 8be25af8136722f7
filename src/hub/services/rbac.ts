import { forbidden, notFound } from '../../protocol/errors.js';
import { ORG_ROLE_RANK as ORG_RANK, PROJECT_ROLE_RANK, type OrgRole, type ProjectRole } from '../../protocol/names.js';
import type { Kysely } from 'kysely';
import type { HubContext } from '../context.js';
import type { HubDatabase } from '../store/schema.js';
import { signedIn, type Actor } from './actor.js';
import { DEFAULT_ORG } from './auth.js';

/**
 * One ladder for managing other operators: org owner > org admin > project admin (by an explicit
 * membership) > org member > nobody. An operator may change, pin or remove only people ranked below
 * them, and grant only roles up to their own; owners may act on anyone (the last-owner rule still holds).
 */
export const AUTHORITY = { none: 0, member: 1, projectAdmin: 2, admin: 3, owner: 4 } as const;

/** Where an operator's org role puts them on the ladder (null: not an active member). */
export function orgAuthority(role: OrgRole | null): number {
  return role === 'owner' ? AUTHORITY.owner : role === 'admin' ? AUTHORITY.admin : role === 'member' ? AUTHORITY.member : AUTHORITY.none;
}

/** Whether an actor with authority `actor` may change or remove someone whose org role puts them at `target`. */
export const mayManage = (actor: number, target: number) => actor === AUTHORITY.owner || target < actor;

export interface ProjectRef {
  id: string;
  name: string;
  orgId: string;
}

/** An operator's active role in an org (null: not a member). Reads through `db` (a transaction too). */
export async function activeOrgRole(db: Kysely<HubDatabase>, orgId: string, operatorId: string): Promise<OrgRole | null> {
  const m = await db
    .selectFrom('org_memberships')
    .select('role')
    .where('org_id', '=', orgId)
    .where('operator_id', '=', operatorId)
    .where('status', '=', 'active')
    .executeTakeFirst();
  return m?.role ?? null;
}

/** An operator's active explicit role on a project (null: none). Reads through `db` (a transaction too). */
export async function activeProjectRole(db: Kysely<HubDatabase>, projectId: string, operatorId: string): Promise<ProjectRole | null> {
  const m = await db
    .selectFrom('project_memberships')
    .select('role')
    .where('project_id', '=', projectId)
    .where('operator_id', '=', operatorId)
    .where('status', '=', 'active')
    .executeTakeFirst();
  return m?.role ?? null;
}

/**
 * The effective role on a project: an explicit active project membership wins (even when lower than
 * what the org role would give); otherwise org owner/admin act as project admin.
 */
export function effectiveRole(explicit: ProjectRole | null, org: OrgRole | null): ProjectRole | null {
  return explicit ?? (org === 'owner' || org === 'admin' ? 'admin' : null);
}

/**
 * How far an operator reaches over a project's memberships (`AUTHORITY`): org owner; org admin whose
 * effective project role is admin; project admin by an explicit membership; otherwise none (0).
 */
export function projectAuthorityOf(org: OrgRole | null, effective: ProjectRole | null): number {
  if (org === 'owner') return AUTHORITY.owner;
  if (effective !== 'admin') return AUTHORITY.none;
  return org === 'admin' ? AUTHORITY.admin : AUTHORITY.projectAdmin;
}

/** The operator's active role in the org (read once per actor: see Actor.roles). */
export async function orgRole(ctx: HubContext, actor: Actor): Promise<{ orgId: string; role: OrgRole | null }> {
  if (actor.roles?.org) return actor.roles.org;
  const op = signedIn(actor);
  // the default org and the role in it, in one read
  const row = await ctx.db
    .selectFrom('orgs')
    .leftJoin('org_memberships', (j) =>
      j.onRef('org_memberships.org_id', '=', 'orgs.id').on('org_memberships.operator_id', '=', op.id).on('org_memberships.status', '=', 'active'),
    )
    .select(['orgs.id as org_id', 'org_memberships.role'])
    .where('orgs.name', '=', DEFAULT_ORG)
    .executeTakeFirstOrThrow();
  const org = { orgId: row.org_id, role: row.role ?? null };
  (actor.roles ??= {}).org = org;
  return org;
}

/**
 * The project named and the actor's effective role on it (`effectiveRole`), read once per actor and
 * project (see Actor.roles): the project and the actor's explicit membership in one query, the org role
 * alongside. The same reads whether the project exists or not, and whether the actor has a role on it
 * or not: how long it takes says nothing about either.
 */
async function projectAndRole(
  ctx: HubContext,
  actor: Actor,
  name: string,
): Promise<{ project: ProjectRef | undefined; role: ProjectRole | null; org: OrgRole | null }> {
  const known = actor.roles?.project;
  if (known && known.project.name === name) return { ...known, org: (await orgRole(ctx, actor)).role };
  const op = signedIn(actor);
  const [row, { role: org }] = await Promise.all([
    ctx.db
      .selectFrom('projects')
      .innerJoin('orgs', 'orgs.id', 'projects.org_id')
      .leftJoin('project_memberships', (j) =>
        j
          .onRef('project_memberships.project_id', '=', 'projects.id')
          .on('project_memberships.operator_id', '=', op.id)
          .on('project_memberships.status', '=', 'active'),
      )
      .select(['projects.id', 'projects.name', 'projects.org_id', 'project_memberships.role'])
      .where('orgs.name', '=', DEFAULT_ORG)
      .where('projects.name', '=', name)
      .executeTakeFirst(),
    orgRole(ctx, actor),
  ]);
  if (!row) return { project: undefined, role: null, org };
  const project = { id: row.id, name: row.name, orgId: row.org_id };
  const role = effectiveRole(row.role ?? null, org);
  (actor.roles ??= {}).project = { project, role };
  return { project, role, org };
}

/** `projectAuthorityOf` read through `db`, so it can run inside the caller's transaction. */
export async function projectAuthority(db: Kysely<HubDatabase>, project: ProjectRef, operatorId: string): Promise<number> {
  const org = await activeOrgRole(db, project.orgId, operatorId);
  if (org === 'owner') return AUTHORITY.owner;
  return projectAuthorityOf(org, effectiveRole(await activeProjectRole(db, project.id, operatorId), org));
}

export async function findProject(ctx: HubContext, name: string): Promise<ProjectRef | undefined> {
  const row = await ctx.db
    .selectFrom('projects')
    .innerJoin('orgs', 'orgs.id', 'projects.org_id')
    .select(['projects.id', 'projects.name', 'projects.org_id'])
    .where('orgs.name', '=', DEFAULT_ORG)
    .where('projects.name', '=', name)
    .executeTakeFirst();
  return row ? { id: row.id, name: row.name, orgId: row.org_id } : undefined;
}

/**
 * Loads the project and checks the operator holds at least `min` on it (the project and role the
 * actor already resolved for this request are reused, by name: see Actor.roles).
 *
 * A project the operator has no role on reads exactly like one that does not exist, so a project's
 * name cannot be probed: both get 403 `you need project:<min> on <name>` (same message, same reads:
 * `projectAndRole`) — 403 as upstream Santokit answers an unauthorised action (OPERATOR-006: a pending
 * member, a removed one). Only an operator with some role on the project learns it exists: below
 * `min`, 403 naming the role they have. An org owner or admin, who holds a role on every project, gets
 * 404 for a name nobody created.
 */
export async function requireProjectRole(
  ctx: HubContext,
  actor: Actor,
  projectName: string,
  min: ProjectRole,
): Promise<{ project: ProjectRef; role: ProjectRole }> {
  const name = String(projectName).slice(0, 80);
  const { project, role, org } =
    typeof projectName === 'string' ? await projectAndRole(ctx, actor, projectName) : { project: undefined, role: null, org: (await orgRole(ctx, actor)).role };
  if (!project || !role) {
    // an org owner or admin holds a role on every project: to them only a name nobody created is unknown
    if (!project && effectiveRole(null, org)) throw notFound(`project ${JSON.stringify(name)} not found`);
    throw forbidden(`you need project:${min} on ${name}`);
  }
  if (PROJECT_ROLE_RANK[role] < PROJECT_ROLE_RANK[min]) throw forbidden(`you need project:${min} on ${project.name} (you have project:${role})`);
  return { project, role };
}

export async function requireOrgRole(ctx: HubContext, actor: Actor, min: OrgRole): Promise<{ orgId: string; role: OrgRole }> {
  const { orgId, role } = await orgRole(ctx, actor);
  if (!role || ORG_RANK[role] < ORG_RANK[min]) throw forbidden(`you need org:${min}${role ? ` (you have org:${role})` : ''}`);
  return { orgId, role };
}

/** Resolves an env of a project, or 404. */
export async function findEnv(ctx: HubContext, project: ProjectRef, envName: string): Promise<{ id: string; name: string }> {
  const env =
    typeof envName === 'string'
      ? await ctx.db.selectFrom('envs').select(['id', 'name']).where('project_id', '=', project.id).where('name', '=', envName).executeTakeFirst()
      : undefined;
  if (!env) throw notFound(`env ${JSON.stringify(String(envName).slice(0, 80))} not found in project ${project.name}`);
  return env;
}
