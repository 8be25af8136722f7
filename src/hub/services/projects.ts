import { signedIn, type Actor } from './actor.js';
import { ulid } from '../../common/ulid.js';
import { badRequest, conflict } from '../../protocol/errors.js';
import { nameError, type ProjectRole } from '../../protocol/names.js';
import type { HubContext } from '../context.js';
import { nowIso } from '../store/store.js';
import { isUniqueViolation } from './auth.js';
import { audit } from './audit.js';
import { orgRole, requireOrgRole } from './rbac.js';
import type { ProjectListItem, ProjectView } from '../../protocol/api/hub.js';

/** SPEC limits.md: projects per org. */
export const MAX_PROJECTS_PER_ORG = 500;

/**
 * Creates a project in the default org (org admin or owner). An existing one is 409, or with
 * `existingOk` (the upstream route: idempotent for scripts re-run in CI) answered as it is, with
 * `created: false` and nothing changed or audited.
 */
export async function createProject(
  ctx: HubContext,
  actor: Actor,
  nameIn: unknown,
  opts: { existingOk?: boolean } = {},
): Promise<ProjectView & { created: boolean }> {
  const { orgId } = await requireOrgRole(ctx, actor, 'admin');
  const err = nameError('project', nameIn);
  if (err) throw badRequest(err);
  const name = nameIn as string;
  const createdAt = nowIso();
  const id = ulid();
  const existing = () => ctx.db.selectFrom('projects').select('created_at').where('org_id', '=', orgId).where('name', '=', name).executeTakeFirst();
  let dup: { created_at: string } | undefined;
  try {
    dup = await ctx.db.transaction().execute(async (trx) => {
      const found = await trx.selectFrom('projects').select('created_at').where('org_id', '=', orgId).where('name', '=', name).executeTakeFirst();
      if (found) return found;
      const { n } = await trx
        .selectFrom('projects')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('org_id', '=', orgId)
        .executeTakeFirstOrThrow();
      if (Number(n) >= MAX_PROJECTS_PER_ORG) throw conflict(`project limit reached: an org holds at most ${MAX_PROJECTS_PER_ORG} projects`);
      await trx.insertInto('projects').values({ id, org_id: orgId, name, created_at: createdAt }).execute();
      await audit(ctx, actor, { action: 'project.create', project: name, detail: { projectId: id } }, trx);
      return undefined;
    });
  } catch (e) {
    // created concurrently by someone else
    if (!isUniqueViolation(e)) throw e;
    dup = await existing();
    if (!dup) throw conflict(`project ${name} already exists`);
  }
  if (dup) {
    if (!opts.existingOk) throw conflict(`project ${name} already exists`);
    return { name, createdAt: dup.created_at, created: false };
  }
  return { name, createdAt, created: true };
}

/**
 * Projects the caller can see, with the caller's effective role: org owners/admins see every
 * project (as admin unless an explicit project role says otherwise); others see the projects where
 * they hold an active explicit role.
 */
export async function listProjects(ctx: HubContext, actor: Actor): Promise<ProjectListItem[]> {
  const { orgId, role: orgR } = await orgRole(ctx, actor);
  const explicit = await ctx.db
    .selectFrom('project_memberships')
    .innerJoin('projects', 'projects.id', 'project_memberships.project_id')
    .select(['projects.name', 'project_memberships.role'])
    .where('project_memberships.operator_id', '=', signedIn(actor).id)
    .where('project_memberships.status', '=', 'active')
    .where('projects.org_id', '=', orgId)
    .execute();
  const roles = new Map<string, ProjectRole>(explicit.map((r) => [r.name, r.role]));
  const orgWide = orgR === 'owner' || orgR === 'admin';
  let q = ctx.db.selectFrom('projects').select(['name', 'created_at']).where('org_id', '=', orgId).orderBy('name');
  if (!orgWide) {
    if (roles.size === 0) return [];
    q = q.where('name', 'in', [...roles.keys()]);
  }
  const rows = await q.execute();
  return rows.map((r) => ({ name: r.name, createdAt: r.created_at, role: roles.get(r.name) ?? 'admin' }));
}
