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

/** Creates an env in a project (project admin). */
export async function createEnv(ctx: HubContext, actor: Actor, projectName: string, nameIn: unknown): Promise<EnvView> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'admin');
  const err = nameError('env', nameIn);
  if (err) throw badRequest(err);
  const name = nameIn as string;
  const createdAt = nowIso();
  const id = ulid();
  try {
    await ctx.db.transaction().execute(async (trx) => {
      const dup = await trx.selectFrom('envs').select('id').where('project_id', '=', project.id).where('name', '=', name).executeTakeFirst();
      if (dup) throw conflict(`env ${name} already exists in project ${project.name}`);
      const { n } = await trx.selectFrom('envs').select((eb) => eb.fn.countAll<number>().as('n')).where('project_id', '=', project.id).executeTakeFirstOrThrow();
      if (Number(n) >= MAX_ENVS_PER_PROJECT) throw conflict(`env limit reached: a project holds at most ${MAX_ENVS_PER_PROJECT} envs`);
      await trx.insertInto('envs').values({ id, project_id: project.id, name, created_at: createdAt }).execute();
      await audit(ctx, actor, { action: 'env.create', project: project.name, env: name, detail: { envId: id } }, trx);
    });
  } catch (e) {
    if (isUniqueViolation(e)) throw conflict(`env ${name} already exists in project ${project.name}`);
    throw e;
  }
  return { name, createdAt };
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
