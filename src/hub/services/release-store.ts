import type { PermissionsIR, ReleaseIR, SchemaIR } from '../../protocol/release.js';
import type { HubContext } from '../context.js';
import type { HubDatabase } from '../store/schema.js';

/** Reading releases from the store (no authorisation: callers check it). */

type ReleaseRow = HubDatabase['releases'];

export function toIR(row: ReleaseRow, project: string): ReleaseIR {
  return {
    releaseId: row.id,
    project,
    ref: row.ref,
    createdAt: row.created_at,
    schema: JSON.parse(row.schema_json) as SchemaIR,
    permissions: JSON.parse(row.permissions_json) as PermissionsIR,
    connections: JSON.parse(row.connections_json) as string[],
  };
}

/** Release rows with their project's name (what `toIR` needs). */
const releaseRows = (ctx: HubContext) =>
  ctx.db.selectFrom('releases').innerJoin('projects', 'projects.id', 'releases.project_id').selectAll('releases').select('projects.name as project_name');

/** A release by id (any project), or undefined. */
export async function getRelease(ctx: HubContext, releaseId: string): Promise<ReleaseIR | undefined> {
  if (typeof releaseId !== 'string' || !releaseId) return undefined;
  const row = await releaseRows(ctx).where('releases.id', '=', releaseId).executeTakeFirst();
  return row ? toIR(row, row.project_name) : undefined;
}

/** Every env's current release in one query (the sync snapshot's env states): env id → release. */
export async function currentReleasesByEnv(ctx: HubContext): Promise<Map<string, ReleaseIR>> {
  const rows = await releaseRows(ctx)
    .innerJoin('current_releases', 'current_releases.release_id', 'releases.id')
    .select('current_releases.env_id as current_env_id')
    .execute();
  return new Map(rows.map((r) => [r.current_env_id, toIR(r, r.project_name)]));
}

/** The env's current release, or undefined when nothing was applied there yet. */
export async function currentRelease(ctx: HubContext, envId: string): Promise<ReleaseIR | undefined> {
  const row = await releaseRows(ctx)
    .innerJoin('current_releases', 'current_releases.release_id', 'releases.id')
    .where('current_releases.env_id', '=', envId)
    .executeTakeFirst();
  return row ? toIR(row, row.project_name) : undefined;
}
