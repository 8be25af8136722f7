import { createHash } from 'node:crypto';
import { signedIn, type Actor } from './actor.js';
import type { Kysely } from 'kysely';
import { ulid } from '../../common/ulid.js';
import { badRequest, conflict, notFound } from '../../protocol/errors.js';
import type { PermissionsIR, ReleaseIR, SchemaIR } from '../../protocol/release.js';
import type { HubContext } from '../context.js';
import type { HubDatabase } from '../store/schema.js';
import { nowIso } from '../store/store.js';
import { isUniqueViolation } from './auth.js';
import { audit } from './audit.js';
import { notifyChanged, recordChange } from './events.js';
import { findEnv, requireProjectRole, type ProjectRef } from './rbac.js';
import { waitForBridges, type AckResult } from './sync/index.js';
import type { ApplyResponse, CurrentRelease, PlanStep, PromoteResponse, ReleaseDetail, ReleaseSummary, RollbackResponse } from '../../protocol/api/hub.js';
import { currentRelease, getRelease, toIR } from './release-store.js';
import { enqueueEvent } from './webhooks/queue.js';

export { currentRelease, getRelease };
import { compatibilityProblems, compileInputs, readApplyBody, syncSchema } from './apply/index.js';

/**
 * Releases: immutable snapshots of schema IR + permissions IR + connection names + ref, deduplicated
 * per project by a hash of those inputs (same inputs → same releaseId). Each env has one current
 * release; moving that pointer writes a `release` change event in the same transaction, which is how
 * Bridges learn about it.
 */

/** JSON with object keys sorted at every level (arrays keep their order): the hash input. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return '[' + v.map(canonicalJson).join(',') + ']';
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return (
      '{' +
      Object.keys(o)
        .filter((k) => o[k] !== undefined)
        .sort()
        .map((k) => JSON.stringify(k) + ':' + canonicalJson(o[k]))
        .join(',') +
      '}'
    );
  }
  return JSON.stringify(v);
}

export function releaseHash(x: { schema: SchemaIR; permissions: PermissionsIR; connections: string[]; ref: string | null }): string {
  return createHash('sha256')
    .update(canonicalJson({ v: 1, schema: x.schema, permissions: x.permissions, connections: [...x.connections].sort(), ref: x.ref }))
    .digest('hex');
}

/**
 * Points the env at a release. Returns whether the pointer moved (then a change event `seq` was
 * written, and a release.applied webhook event queued, in the same transaction).
 */
async function setCurrent(
  ctx: HubContext,
  actor: Actor,
  via: 'apply' | 'promote' | 'rollback',
  trx: Kysely<HubDatabase>,
  project: ProjectRef,
  env: { id: string; name: string },
  releaseId: string,
): Promise<{ moved: boolean; previous: string | null; seq: number | null }> {
  const cur = await trx.selectFrom('current_releases').select('release_id').where('env_id', '=', env.id).executeTakeFirst();
  if (cur?.release_id === releaseId) return { moved: false, previous: releaseId, seq: null };
  const now = nowIso();
  await trx
    .insertInto('current_releases')
    .values({ env_id: env.id, release_id: releaseId, updated_at: now })
    .onConflict((oc) => oc.column('env_id').doUpdateSet({ release_id: releaseId, updated_at: now }))
    .execute();
  const seq = await recordChange(trx, { project: project.name, env: env.name, kind: 'release', payload: { releaseId } });
  const op = actor.operator;
  await enqueueEvent(ctx, trx, {
    projectId: project.id,
    type: 'release.applied',
    at: now,
    data: {
      project: project.name,
      env: env.name,
      releaseId,
      previousReleaseId: cur?.release_id ?? null,
      via,
      actor: { type: op ? 'operator' : 'system', id: op?.id ?? null, email: op?.email ?? null },
    },
  });
  return { moved: true, previous: cur?.release_id ?? null, seq };
}

/** Finds or creates the release for these inputs and makes it the env's current one. */
export async function publishRelease(
  ctx: HubContext,
  actor: Actor,
  project: ProjectRef,
  env: { id: string; name: string },
  x: { schema: SchemaIR; permissions: PermissionsIR; connections: string[]; ref: string | null },
): Promise<{ releaseId: string; reused: boolean; moved: boolean; previous: string | null; seq: number | null }> {
  const hash = releaseHash(x);
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await ctx.db.transaction().execute(async (trx) => {
        const existing = await trx.selectFrom('releases').select('id').where('project_id', '=', project.id).where('content_hash', '=', hash).executeTakeFirst();
        let releaseId = existing?.id;
        if (!releaseId) {
          releaseId = ulid();
          await trx
            .insertInto('releases')
            .values({
              id: releaseId,
              project_id: project.id,
              content_hash: hash,
              ref: x.ref,
              schema_json: JSON.stringify(x.schema),
              permissions_json: JSON.stringify(x.permissions),
              connections_json: JSON.stringify(x.connections),
              created_by: signedIn(actor).id,
              created_at: nowIso(),
            })
            .execute();
          await audit(
            ctx,
            actor,
            {
              action: 'release.create',
              project: project.name,
              env: env.name,
              detail: { releaseId, ref: x.ref, contentHash: hash, tables: Object.keys(x.schema.tables).length, connections: x.connections },
            },
            trx,
          );
        }
        const moved = await setCurrent(ctx, actor, 'apply', trx, project, env, releaseId);
        return { releaseId, reused: Boolean(existing), ...moved };
      });
      if (r.moved) notifyChanged(ctx);
      return r;
    } catch (e) {
      // two applies of the same inputs at once: the other one inserted it; take theirs
      if (attempt < 2 && isUniqueViolation(e)) continue;
      throw e;
    }
  }
}

/** After the env's release pointer moved: wait (bounded) until every connected Bridge serves it. */
async function bridgesAck(ctx: HubContext, seq: number | null): Promise<AckResult | null> {
  return seq === null ? null : waitForBridges(ctx, seq, undefined, 'release');
}

/** POST /api/projects/:project/envs/:env/apply */
export async function apply(ctx: HubContext, actor: Actor, projectName: string, envName: string, body: unknown): Promise<ApplyResponse> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'deployer');
  const env = await findEnv(ctx, project, envName);
  const input = readApplyBody(body);
  const compiled = compileInputs(input);
  const label = `${project.name}/${env.name}`;
  const withSchema = input.only.includes('schema');
  const withRelease = input.only.includes('release');
  const prev = await currentRelease(ctx, env.id);

  let plan: PlanStep[] = [];
  let drift: string[] = [];
  let notes: string[] = [];
  let adopted: string[] = [];
  if (withSchema || withRelease) {
    const r = await syncSchema(ctx, {
      envId: env.id,
      envLabel: label,
      schema: compiled.schema,
      previous: prev?.schema,
      execute: withSchema && !input.dryRun,
      force: input.force,
      adopt: input.adopt,
    });
    plan = withSchema ? r.plan : [];
    notes = r.notes;
    if (withSchema && !input.dryRun) adopted = r.unmanaged;
    // in a dry run with schema the plan would fix the differences; what remains is what it cannot fix
    drift = withSchema && input.dryRun ? r.drift.filter((d) => !r.plan.some((s) => d === `${s.connection}: ${s.description}`)) : r.drift;
    if (withRelease && !input.dryRun && drift.length) {
      throw conflict(
        `drift between the declared schema and ${label}: ${drift.slice(0, 5).join('; ')}${drift.length > 5 ? ` (and ${drift.length - 5} more)` : ''} — run 'stk apply --only schema' or fix the schema`,
      );
    }
  }

  let releaseId: string | null = null;
  let reused = false;
  let seq: number | null = null;
  if (withRelease && !input.dryRun) {
    const r = await publishRelease(ctx, actor, project, env, { ...compiled, ref: input.ref });
    releaseId = r.releaseId;
    reused = r.reused;
    seq = r.seq;
  }
  if (!input.dryRun) {
    await audit(ctx, actor, {
      action: 'apply.run',
      project: project.name,
      env: env.name,
      detail: {
        releaseId,
        reused,
        ref: input.ref,
        only: input.only,
        force: input.force,
        adopted,
        steps: plan.length,
        destructiveSteps: plan.filter((s) => s.destructive).length,
        tables: Object.keys(compiled.schema.tables).length,
        schemaFiles: input.schema.length,
      },
    });
  }
  const ack = await bridgesAck(ctx, seq);
  return { releaseId, reused, ref: input.ref, dryRun: input.dryRun, plan, drift, notes, ack };
}

async function envsWhereCurrent(ctx: HubContext, projectId: string): Promise<Map<string, string[]>> {
  const rows = await ctx.db
    .selectFrom('current_releases')
    .innerJoin('envs', 'envs.id', 'current_releases.env_id')
    .select(['current_releases.release_id', 'envs.name'])
    .where('envs.project_id', '=', projectId)
    .orderBy('envs.name')
    .execute();
  const m = new Map<string, string[]>();
  for (const r of rows) m.set(r.release_id, [...(m.get(r.release_id) ?? []), r.name]);
  return m;
}

function summary(r: ReleaseIR, envs: string[]): ReleaseSummary {
  return { releaseId: r.releaseId, ref: r.ref, createdAt: r.createdAt, connections: r.connections, tables: Object.keys(r.schema.tables).sort(), envs };
}

/** GET /api/projects/:project/releases */
export async function listReleases(ctx: HubContext, actor: Actor, projectName: string, limitRaw: unknown): Promise<{ items: ReleaseSummary[] }> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'viewer');
  let limit = 50;
  if (limitRaw !== undefined) {
    const n = Number(limitRaw);
    if (!Number.isInteger(n) || n < 1 || n > 500) throw badRequest('limit must be a whole number from 1 to 500');
    limit = n;
  }
  const rows = await ctx.db
    .selectFrom('releases')
    .selectAll()
    .where('project_id', '=', project.id)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
  const envs = await envsWhereCurrent(ctx, project.id);
  return { items: rows.map((r) => summary(toIR(r, project.name), envs.get(r.id) ?? [])) };
}

async function releaseOfProject(ctx: HubContext, project: ProjectRef, releaseId: unknown): Promise<ReleaseIR> {
  if (typeof releaseId !== 'string' || !/^[0-9A-Za-z]{1,64}$/.test(releaseId)) throw badRequest('releaseId must be a release id (from stk release list)');
  const r = await getRelease(ctx, releaseId.toUpperCase());
  if (!r || r.project !== project.name) throw notFound(`release ${releaseId} not found in project ${project.name}`);
  return r;
}

/** GET /api/projects/:project/releases/:releaseId → the full release plus where it is current. */
export async function showRelease(ctx: HubContext, actor: Actor, projectName: string, releaseId: string): Promise<ReleaseIR & ReleaseDetail> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'viewer');
  const r = await releaseOfProject(ctx, project, releaseId);
  const envs = (await envsWhereCurrent(ctx, project.id)).get(r.releaseId) ?? [];
  return { ...r, envs };
}

/** GET /api/projects/:project/envs/:env/releases/current */
export async function showCurrent(ctx: HubContext, actor: Actor, projectName: string, envName: string): Promise<CurrentRelease> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'viewer');
  const env = await findEnv(ctx, project, envName);
  const r = await currentRelease(ctx, env.id);
  if (!r) throw notFound(`${project.name}/${env.name} has no release yet (run stk apply)`);
  const ptr = await ctx.db.selectFrom('current_releases').select('updated_at').where('env_id', '=', env.id).executeTakeFirstOrThrow();
  const envs = (await envsWhereCurrent(ctx, project.id)).get(r.releaseId) ?? [];
  return { ...summary(r, envs), env: env.name, since: ptr.updated_at };
}

function readBodyObject(body: unknown, allowed: string[]): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('expected a JSON object');
  const b = body as Record<string, unknown>;
  const extra = Object.keys(b).filter((k) => !allowed.includes(k));
  if (extra.length) throw badRequest(`unknown field ${JSON.stringify(extra[0]!.slice(0, 40))} (allowed: ${allowed.join(', ')})`);
  for (const k of ['force', 'adopt', 'dryRun']) if (b[k] !== undefined && typeof b[k] !== 'boolean') throw badRequest(`"${k}" must be true or false`);
  return b;
}

/**
 * POST /api/projects/:project/releases/promote {from, to, releaseId?, force?, adopt?, dryRun?}: applies
 * the release's schema to the target env's connections (refusing on drift, without force destructive
 * steps, without adopt tables santokit did not create), then points the target env at the release.
 */
export async function promote(ctx: HubContext, actor: Actor, projectName: string, body: unknown): Promise<PromoteResponse> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'deployer');
  const b = readBodyObject(body, ['from', 'to', 'releaseId', 'force', 'adopt', 'dryRun']);
  if (typeof b.to !== 'string') throw badRequest('"to" (the target env) is required');
  if (b.from === undefined && b.releaseId === undefined) throw badRequest('give "from" (the source env) or "releaseId"');
  if (b.from !== undefined && typeof b.from !== 'string') throw badRequest('"from" must be an env name');
  const to = await findEnv(ctx, project, b.to);
  let release: ReleaseIR;
  let from: string | null = null;
  if (b.releaseId !== undefined) release = await releaseOfProject(ctx, project, b.releaseId);
  if (typeof b.from === 'string') {
    const fromEnv = await findEnv(ctx, project, b.from);
    from = fromEnv.name;
    if (fromEnv.id === to.id) throw badRequest('"from" and "to" are the same env');
    if (b.releaseId === undefined) {
      const cur = await currentRelease(ctx, fromEnv.id);
      if (!cur) throw notFound(`${project.name}/${fromEnv.name} has no release to promote (run stk apply there first)`);
      release = cur;
    }
  }
  const rel = release!;
  const prev = await currentRelease(ctx, to.id);
  const dryRun = b.dryRun === true;
  const sync = await syncSchema(ctx, {
    envId: to.id,
    envLabel: `${project.name}/${to.name}`,
    schema: rel.schema,
    previous: prev?.schema,
    execute: !dryRun,
    force: b.force === true,
    adopt: b.adopt === true,
  });
  if (dryRun) {
    const drift = sync.drift.filter((d) => !sync.plan.some((s) => d === `${s.connection}: ${s.description}`));
    return {
      releaseId: rel.releaseId,
      from,
      to: to.name,
      previousReleaseId: prev?.releaseId ?? null,
      dryRun,
      moved: false,
      plan: sync.plan,
      drift,
      notes: sync.notes,
      ack: null,
    };
  }
  const r = await ctx.db.transaction().execute(async (trx) => {
    const moved = await setCurrent(ctx, actor, 'promote', trx, project, to, rel.releaseId);
    await audit(
      ctx,
      actor,
      {
        action: 'release.promote',
        project: project.name,
        env: to.name,
        detail: {
          releaseId: rel.releaseId,
          ref: rel.ref,
          from,
          to: to.name,
          previousReleaseId: moved.previous,
          moved: moved.moved,
          steps: sync.plan.length,
          adopted: sync.unmanaged,
        },
      },
      trx,
    );
    return moved;
  });
  if (r.moved) notifyChanged(ctx);
  const ack = await bridgesAck(ctx, r.seq);
  return {
    releaseId: rel.releaseId,
    from,
    to: to.name,
    previousReleaseId: prev?.releaseId ?? null,
    dryRun,
    moved: r.moved,
    plan: sync.plan,
    drift: [],
    notes: sync.notes,
    ack,
  };
}

/**
 * POST /api/projects/:project/envs/:env/rollback {releaseId}: moves the pointer only. Schema changes
 * are forward-only, so this is refused (409) when the live databases lack a table or column the
 * release needs, or hold it with another type.
 */
export async function rollback(ctx: HubContext, actor: Actor, projectName: string, envName: string, body: unknown): Promise<RollbackResponse> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'deployer');
  const env = await findEnv(ctx, project, envName);
  const b = readBodyObject(body, ['releaseId']);
  const rel = await releaseOfProject(ctx, project, b.releaseId);
  const problems = await compatibilityProblems(ctx, env.id, rel.schema);
  if (problems.length) {
    throw conflict(
      `release ${rel.releaseId} does not fit the live database of ${project.name}/${env.name} (schema changes are forward-only): ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? ` (and ${problems.length - 5} more)` : ''}`,
    );
  }
  const r = await ctx.db.transaction().execute(async (trx) => {
    const moved = await setCurrent(ctx, actor, 'rollback', trx, project, env, rel.releaseId);
    await audit(
      ctx,
      actor,
      {
        action: 'release.rollback',
        project: project.name,
        env: env.name,
        detail: { releaseId: rel.releaseId, ref: rel.ref, previousReleaseId: moved.previous, moved: moved.moved },
      },
      trx,
    );
    return moved;
  });
  if (r.moved) notifyChanged(ctx);
  const ack = await bridgesAck(ctx, r.seq);
  return { releaseId: rel.releaseId, env: env.name, previousReleaseId: r.previous, moved: r.moved, ack };
}

/** GET /internal/releases/:project/:env/current (service token checked by app.ts). */
export async function internalCurrent(ctx: HubContext, projectName: string, envName: string): Promise<ReleaseIR> {
  const project = await ctx.db
    .selectFrom('projects')
    .innerJoin('envs', 'envs.project_id', 'projects.id')
    .select(['envs.id as env_id'])
    .where('projects.name', '=', projectName)
    .where('envs.name', '=', envName)
    .executeTakeFirst();
  if (!project) throw notFound(`no env ${envName.slice(0, 80)} in project ${projectName.slice(0, 80)}`);
  const r = await currentRelease(ctx, project.env_id);
  if (!r) throw notFound(`${projectName.slice(0, 80)}/${envName.slice(0, 80)} has no release`);
  return r;
}
