import type { Actor } from './actor.js';
import { ulid } from '../../common/ulid.js';
import { badRequest, conflict } from '../../protocol/errors.js';
import { nameError } from '../../protocol/names.js';
import type { HubContext } from '../context.js';
import { nowIso } from '../store/store.js';
import { isUniqueViolation } from './auth.js';
import { audit } from './audit.js';
import { requireProjectRole } from './rbac.js';
import type { EnvListItem, EnvView } from '../../protocol/api/hub.js';

/** SPEC limits.md: envs per project. */
export const MAX_ENVS_PER_PROJECT = 10;

/**
 * Creates an env in a project (project admin). An existing one is 409, or with `existingOk` (the
 * upstream route: idempotent for scripts re-run in CI) answered as it is, with `created: false`.
 */
export async function createEnv(
  ctx: HubContext,
  actor: Actor,
  projectName: string,
  nameIn: unknown,
  opts: { existingOk?: boolean } = {},
): Promise<EnvView & { created: boolean }> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'admin');
  const err = nameError('env', nameIn);
  if (err) throw badRequest(err);
  const name = nameIn as string;
  const createdAt = nowIso();
  const id = ulid();
  const existing = () => ctx.db.selectFrom('envs').select('created_at').where('project_id', '=', project.id).where('name', '=', name).executeTakeFirst();
  let dup: { created_at: string } | undefined;
  try {
    dup = await ctx.db.transaction().execute(async (trx) => {
      const found = await trx.selectFrom('envs').select('created_at').where('project_id', '=', project.id).where('name', '=', name).executeTakeFirst();
      if (found) return found;
      const { n } = await trx
        .selectFrom('envs')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('project_id', '=', project.id)
        .executeTakeFirstOrThrow();
      if (Number(n) >= MAX_ENVS_PER_PROJECT) throw conflict(`env limit reached: a project holds at most ${MAX_ENVS_PER_PROJECT} envs`);
      await trx.insertInto('envs').values({ id, project_id: project.id, name, created_at: createdAt }).execute();
      await audit(ctx, actor, { action: 'env.create', project: project.name, env: name, detail: { envId: id } }, trx);
      return undefined;
    });
  } catch (e) {
    // created concurrently by someone else
    if (!isUniqueViolation(e)) throw e;
    dup = await existing();
    if (!dup) throw conflict(`env ${name} already exists in project ${project.name}`);
  }
  if (dup) {
    if (!opts.existingOk) throw conflict(`env ${name} already exists in project ${project.name}`);
    return { name, createdAt: dup.created_at, created: false };
  }
  return { name, createdAt, created: true };
}

/** The project's envs with their current release (project viewer). */
export async function listEnvs(ctx: HubContext, actor: Actor, projectName: string): Promise<EnvListItem[]> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'viewer');
  const rows = await ctx.db
    .selectFrom('envs')
    .leftJoin('current_releases', 'current_releases.env_id', 'envs.id')
    .select(['envs.name', 'envs.created_at', 'current_releases.release_id'])
    .where('envs.project_id', '=', project.id)
    .orderBy('envs.name')
    .execute();
  return rows.map((r) => ({ name: r.name, createdAt: r.created_at, currentReleaseId: r.release_id ?? null }));
}
