import type { PermissionsIR, SchemaIR } from '../../../protocol/release.js';
import { AppError, badRequest, conflict } from '../../../protocol/errors.js';
import type { HubContext } from '../../context.js';
import { connectionUrls } from '../connections.js';
import { beginApply, close, connect, statementError, type DbConnection } from './database.js';
import { introspect, tableHasRows, type LiveSchema } from './introspect.js';
import { compareTypes, planConnection, type ConnectionPlan, type PlanStep } from './plan.js';
import { parsePermissions } from './permissions.js';
import { parseSchema, type SchemaFile } from './schema.js';
import { pgType, pkPgType } from './sql.js';

export type { PlanStep } from './plan.js';
export type { SchemaFile } from './schema.js';
export { parseSchema } from './schema.js';
export { parsePermissions, compileCondition } from './permissions.js';

export const APPLY_STAGES = ['schema', 'permissions', 'release'] as const;
export type ApplyStage = (typeof APPLY_STAGES)[number];

export interface ApplyInput {
  schema: SchemaFile[];
  permissions: string | null;
  ref: string | null;
  dryRun: boolean;
  force: boolean;
  /** let apply manage declared tables that exist but santokit did not create */
  adopt: boolean;
  only: ApplyStage[];
}

const MAX_FILES = 500;
const MAX_REF = 200;

/** Validates the JSON body of POST …/apply (400 on any shape error). */
export function readApplyBody(body: unknown): ApplyInput {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw badRequest('expected a JSON object {schema, permissions, ref?, dryRun?, force?, adopt?, only?}');
  const b = body as Record<string, unknown>;
  const allowed = ['schema', 'permissions', 'ref', 'dryRun', 'force', 'adopt', 'only'];
  const extra = Object.keys(b).filter((k) => !allowed.includes(k));
  if (extra.length) throw badRequest(`unknown field ${JSON.stringify(extra[0]!.slice(0, 40))} (allowed: ${allowed.join(', ')})`);
  if (!Array.isArray(b.schema)) throw badRequest('"schema" must be a list of {file, content}');
  if (b.schema.length > MAX_FILES) throw badRequest(`at most ${MAX_FILES} schema files`);
  const schema: SchemaFile[] = b.schema.map((f, i) => {
    const o = f as Record<string, unknown> | null;
    if (typeof o !== 'object' || o === null || typeof o.file !== 'string' || typeof o.content !== 'string' || !o.file) {
      throw badRequest(`schema[${i}] must be {file: string, content: string}`);
    }
    // eslint-disable-next-line no-control-regex -- control characters are dropped from the shown name
    return { file: o.file.replace(/[\u0000-\u001f]/g, '').slice(0, 200), content: o.content };
  });
  const seen = new Set<string>();
  for (const f of schema) {
    if (seen.has(f.file)) throw badRequest(`schema file ${JSON.stringify(f.file)} is listed twice`);
    seen.add(f.file);
  }
  if (b.permissions !== undefined && b.permissions !== null && typeof b.permissions !== 'string')
    throw badRequest('"permissions" must be the text of config/permissions.yaml, or null');
  let ref: string | null = null;
  if (b.ref !== undefined && b.ref !== null) {
    // eslint-disable-next-line no-control-regex -- control characters are what it refuses
    if (typeof b.ref !== 'string' || b.ref.length === 0 || b.ref.length > MAX_REF || /[\u0000-\u001f\u007f]/.test(b.ref)) {
      throw badRequest(`"ref" must be a printable string of 1-${MAX_REF} characters (e.g. a commit SHA)`);
    }
    ref = b.ref;
  }
  for (const k of ['dryRun', 'force', 'adopt'] as const) if (b[k] !== undefined && typeof b[k] !== 'boolean') throw badRequest(`"${k}" must be true or false`);
  let only: ApplyStage[] = [...APPLY_STAGES];
  if (b.only !== undefined && b.only !== null) {
    if (!Array.isArray(b.only) || b.only.length === 0 || !b.only.every((s) => (APPLY_STAGES as readonly unknown[]).includes(s))) {
      throw badRequest(`"only" must be a non-empty list of ${APPLY_STAGES.join(', ')}`);
    }
    only = [...new Set(b.only as ApplyStage[])];
  }
  return {
    schema,
    permissions: (b.permissions as string | null | undefined) ?? null,
    ref,
    dryRun: b.dryRun === true,
    force: b.force === true,
    adopt: b.adopt === true,
    only,
  };
}

/** Parses and validates both files (400 naming file/table/column/rule), before any database is touched. */
export function compileInputs(input: Pick<ApplyInput, 'schema' | 'permissions'>): { schema: SchemaIR; permissions: PermissionsIR; connections: string[] } {
  const schema = parseSchema(input.schema);
  const permissions = parsePermissions(input.permissions, schema);
  return { schema, permissions, connections: schemaConnections(schema) };
}

export const schemaConnections = (s: SchemaIR) => [...new Set(Object.values(s.tables).map((t) => t.connection))].sort();

export interface SyncOptions {
  envId: string;
  envLabel: string;
  schema: SchemaIR;
  /** the env's current release schema: its tables on a connection count as managed there (dropped when undeclared) */
  previous?: SchemaIR;
  /** false: only plan and report (dry run, or a release without schema apply) */
  execute: boolean;
  force: boolean;
  /** allow steps on declared tables that exist but santokit did not create (they get its comment) */
  adopt: boolean;
}

export interface SyncResult {
  plan: PlanStep[];
  /** differences left between declared and live schema (empty after a successful execute) */
  drift: string[];
  /** `connection: table` of the unmanaged tables the plan touches (adopted when executed with adopt) */
  unmanaged: string[];
  /** `connection: …` differences treated as equivalent and left as they are (see plan.ts) */
  notes: string[];
}

/**
 * Brings every connection the schema uses in line with it. Plans all connections first (each in its own
 * transaction, under an advisory lock), refuses unsupported or (without `force`) destructive steps before
 * any DDL, runs the DDL, re-introspects and re-plans inside the same transactions: anything left is drift
 * and everything is rolled back. Only then are all transactions committed.
 */
export async function syncSchema(ctx: HubContext, o: SyncOptions): Promise<SyncResult> {
  const names = schemaConnections(o.schema);
  const urls = await connectionUrls(ctx, o.envId);
  const missing = names.filter((n) => !Object.hasOwn(urls, n));
  if (missing.length) {
    const users = (n: string) =>
      Object.values(o.schema.tables)
        .filter((t) => t.connection === n)
        .map((t) => t.name);
    throw badRequest(
      missing.map((n) => `connection ${JSON.stringify(n)} (used by ${users(n).join(', ')}) does not exist in ${o.envLabel}`).join('; ') +
        ` — create it with 'stk connections set'`,
    );
  }
  const dbs: DbConnection[] = [];
  let committed = false;
  try {
    const plans = new Map<string, ConnectionPlan>();
    for (const name of names) {
      const db = await connect(name, urls[name]!, ctx.config.connectionAllow);
      dbs.push(db);
      await beginApply(db);
      plans.set(name, await planFor(db, o, name));
    }
    const allSteps = [...plans.values()].flatMap((p) => p.steps);
    const unsupported = [...plans.entries()].flatMap(([n, p]) => p.unsupported.map((u) => `${n}: ${u}`));
    const unmanaged = [...plans.entries()].flatMap(([n, p]) => p.unmanaged.map((t) => `${n}: ${t}`));
    const notes = [...plans.entries()].flatMap(([n, p]) => p.notes.map((x) => `${n}: ${x}`));
    if (!o.execute) return { plan: allSteps, drift: [...unsupported, ...allSteps.map((s) => `${s.connection}: ${s.description}`)], unmanaged, notes };

    if (unsupported.length) throw badRequest(`the schema cannot be applied: ${unsupported.join('; ')}`, { unsupported, plan: allSteps });
    // before --force is even looked at: --force alone never changes a table santokit did not create
    if (unmanaged.length && !o.adopt) {
      const many = unmanaged.length > 1;
      const named = [...plans.entries()].flatMap(([n, p]) => p.unmanaged.map((t) => `${t} (on connection ${n})`));
      throw new AppError(
        'CONFLICT',
        `table${many ? 's' : ''} ${named.join(', ')} already exist${many ? '' : 's'} and ${many ? 'were' : 'was'} not created by santokit; nothing was applied. ` +
          `Re-run with --adopt to let apply manage ${many ? 'them' : 'it'} (the plan then changes ${many ? 'them' : 'it'} like its own tables), or rename the declared table`,
        { details: { unmanaged, plan: allSteps, notes } },
      );
    }
    const destructive = allSteps.filter((s) => s.destructive);
    if (destructive.length && !o.force) {
      throw new AppError(
        'CONFLICT',
        `the plan has ${destructive.length} destructive step${destructive.length > 1 ? 's' : ''} (${destructive.map((s) => s.description).join('; ')}); re-run with --force to apply them`,
        {
          details: { plan: allSteps, notes },
        },
      );
    }
    for (const db of dbs) {
      for (const step of plans.get(db.name)!.steps) {
        try {
          await db.client.query(step.sql);
        } catch (e) {
          throw statementError(db.name, step.description, e);
        }
      }
    }
    const drift: string[] = [];
    for (const db of dbs) {
      const after = await planFor(db, o, db.name);
      drift.push(...after.unsupported.map((u) => `${db.name}: ${u}`), ...after.steps.map((s) => `${db.name}: ${s.description}`));
    }
    if (drift.length) throw conflict(`drift remains after applying the schema, nothing was changed: ${drift.slice(0, 5).join('; ')}`);
    for (const db of dbs) {
      try {
        await db.client.query('COMMIT');
      } catch (e) {
        throw statementError(db.name, 'commit', e);
      }
    }
    committed = true;
    return { plan: allSteps, drift: [], unmanaged, notes };
  } finally {
    for (const db of dbs) await close(db, !committed);
  }
}

async function planFor(db: DbConnection, o: SyncOptions, name: string): Promise<ConnectionPlan> {
  let live: LiveSchema;
  try {
    live = await introspect(db);
  } catch (e) {
    throw statementError(name, 'read the database catalog', e);
  }
  return planConnection({
    connection: name,
    tables: Object.values(o.schema.tables).filter((t) => t.connection === name),
    previouslyManaged: o.previous
      ? Object.values(o.previous.tables)
          .filter((t) => t.connection === name)
          .map((t) => t.name)
      : [],
    live,
    hasRows: async (t) => {
      try {
        return await tableHasRows(db, t);
      } catch (e) {
        throw statementError(name, `inspect table ${t}`, e);
      }
    },
  });
}

/**
 * Whether a release can serve against the live databases (rollback check): every table and column it
 * declares must exist with the same type, or one the planner keeps as equivalent (KEPT_TYPES). Extra
 * columns or tables are fine. Returns the problems found.
 */
export async function compatibilityProblems(ctx: HubContext, envId: string, schema: SchemaIR): Promise<string[]> {
  const urls = await connectionUrls(ctx, envId);
  const problems: string[] = [];
  for (const name of schemaConnections(schema)) {
    if (!Object.hasOwn(urls, name)) {
      problems.push(`connection ${name} does not exist`);
      continue;
    }
    let db: DbConnection | undefined;
    let live: LiveSchema;
    try {
      db = await connect(name, urls[name]!, ctx.config.connectionAllow);
      live = await introspect(db).catch((e) => {
        throw statementError(name, 'read the database catalog', e);
      });
    } finally {
      await close(db);
    }
    for (const t of Object.values(schema.tables).filter((x) => x.connection === name)) {
      const lt = live.tables.get(t.name);
      if (!lt) {
        problems.push(`${name}: table ${t.name} is missing`);
        continue;
      }
      const need = [{ name: t.primaryKey.name, type: pkPgType(t.primaryKey) }, ...t.columns.map((c) => ({ name: c.name, type: pgType(c) }))];
      for (const c of need) {
        const lc = lt.columns.find((x) => x.name === c.name);
        if (!lc) problems.push(`${name}: column ${t.name}.${c.name} is missing`);
        else if (!['same', 'kept'].includes(compareTypes(lc.type, c.type)))
          problems.push(`${name}: column ${t.name}.${c.name} is ${lc.type}, the release needs ${c.type}`);
      }
    }
  }
  return problems;
}
