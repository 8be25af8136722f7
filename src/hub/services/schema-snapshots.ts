import type { Actor } from './actor.js';
import { ulid } from '../../common/ulid.js';
import { TABLE_SCHEMA } from '../../common/quote-ident.js';
import { AppError, badRequest, notFound } from '../../protocol/errors.js';
import type { RecordedSnapshot, SchemaChange, SchemaDrift, SchemaSummary, SnapshotTable } from '../../protocol/api/hub.js';
import type { HubContext } from '../context.js';
import { nowIso } from '../store/store.js';
import { audit } from './audit.js';
import { connectionUrls } from './connection-urls.js';
import { close, connect, statementError, type DbConnection } from './apply/database.js';
import { introspect, type LiveTable } from './apply/introspect.js';
import { findEnv, requireProjectRole } from './rbac.js';

/**
 * `stk schema snapshot` / `stk schema drift`: the live schema of every connection of an env (tables,
 * columns with type, nullability and default, keys, foreign keys, indexes), recorded in the store, and
 * later compared with the live schema again. Read in one read-only transaction per database, bounded
 * in size and time; the newest SNAPSHOTS_KEPT per env are kept.
 */

/** more than this across an env's databases is refused (409) before the catalog is read in full */
export const MAX_SNAPSHOT_TABLES = 1000;
export const MAX_SNAPSHOT_COLUMNS = 20_000;
/** indexes and keys (primary, unique, foreign) together: a table may hold any number of them */
export const MAX_SNAPSHOT_INDEXES = 20_000;
export const SNAPSHOTS_KEPT = 20;
/** each catalog query of a snapshot */
const STATEMENT_TIMEOUT = '15s';
/** a default expression longer than this is kept cut (with its length) */
const MAX_DEFAULT = 500;

type ConnectionSchema = { name: string; tables: SnapshotTable[] };

/** The live schema of one database, as a snapshot stores it (tables sorted by name). */
export function snapshotTables(live: Map<string, LiveTable>): SnapshotTable[] {
  return [...live.values()]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((t) => ({
      name: t.name,
      managed: t.managed,
      columns: t.columns.map((c) => ({
        name: c.name,
        type: c.type,
        nullable: !c.notNull,
        default: c.identity
          ? 'identity'
          : c.default === null
            ? null
            : c.default.length > MAX_DEFAULT
              ? `${c.default.slice(0, MAX_DEFAULT)}… (${c.default.length} characters)`
              : c.default,
      })),
      primaryKey: t.primaryKey?.columns ?? null,
      uniques: t.uniques.map((u) => u.columns),
      foreignKeys: t.foreignKeys.map((f) => ({
        columns: f.columns,
        refTable: f.refSchema === TABLE_SCHEMA ? f.refTable : `${f.refSchema}.${f.refTable}`,
        refColumns: f.refColumns,
        onDelete: f.onDelete,
        onUpdate: f.onUpdate,
      })),
      indexes: t.indexes.filter((i) => !i.constraint).map((i) => ({ name: i.name, columns: i.columns, unique: i.unique })),
    }));
}

const summaryOf = (conns: ConnectionSchema[]): SchemaSummary => ({
  connections: conns.length,
  tables: conns.reduce((n, c) => n + c.tables.length, 0),
  columns: conns.reduce((n, c) => n + c.tables.reduce((m, t) => m + t.columns.length, 0), 0),
});

/** Reads every connection of the env: one read-only, repeatable-read transaction each (a consistent catalog). */
async function readLiveSchema(ctx: HubContext, envId: string, label: string): Promise<ConnectionSchema[]> {
  const urls = await connectionUrls(ctx, envId);
  const names = Object.keys(urls).sort();
  if (names.length === 0) throw badRequest(`${label} has no connections: add one with 'stk connections set'`);
  const out: ConnectionSchema[] = [];
  let tables = 0;
  let columns = 0;
  let indexes = 0;
  for (const name of names) {
    let db: DbConnection | undefined;
    try {
      db = await connect(name, urls[name]!, ctx.config.connectionAllow);
      const run = async <R>(what: string, text: string, values?: unknown[]) => {
        try {
          return await db!.query<R>(text, values);
        } catch (e) {
          throw statementError(name, what, e);
        }
      };
      await run('start a read-only transaction', 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      await run('set the statement timeout', `SET LOCAL statement_timeout = '${STATEMENT_TIMEOUT}'`);
      // counted before anything is loaded: a database with a million tables is refused, not read
      const size = await run<{ tables: number; columns: number; indexes: number }>(
        'count the tables',
        `WITH t AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relkind IN ('r', 'p'))
         SELECT (SELECT count(*) FROM t)::int AS tables,
                (SELECT count(*) FROM pg_attribute a JOIN t ON a.attrelid = t.oid WHERE a.attnum > 0 AND NOT a.attisdropped)::int AS columns,
                ((SELECT count(*) FROM pg_index i JOIN t ON i.indrelid = t.oid)
                 + (SELECT count(*) FROM pg_constraint con JOIN t ON con.conrelid = t.oid WHERE con.contype IN ('p', 'u', 'f')))::int AS indexes`,
        [TABLE_SCHEMA],
      );
      tables += size.rows[0]?.tables ?? 0;
      columns += size.rows[0]?.columns ?? 0;
      indexes += size.rows[0]?.indexes ?? 0;
      if (tables > MAX_SNAPSHOT_TABLES || columns > MAX_SNAPSHOT_COLUMNS || indexes > MAX_SNAPSHOT_INDEXES) {
        throw new AppError(
          'CONFLICT',
          `${label} holds too much schema to snapshot (at least ${tables} tables, ${columns} columns and ${indexes} indexes and keys in schema ${TABLE_SCHEMA}, counted up to connection ${name}); the limit is ${MAX_SNAPSHOT_TABLES} tables, ${MAX_SNAPSHOT_COLUMNS} columns and ${MAX_SNAPSHOT_INDEXES} indexes and keys`,
        );
      }
      let live;
      try {
        live = await introspect(db);
      } catch (e) {
        throw statementError(name, 'read the database catalog', e);
      }
      out.push({ name, tables: snapshotTables(live.tables) });
    } finally {
      await close(db, true);
    }
  }
  return out;
}

const list = (cols: string[]) => cols.join(', ');
const colText = (c: SnapshotTable['columns'][number]) =>
  `${c.type}${c.nullable ? ', nullable' : ', not null'}${c.default !== null ? `, default ${c.default}` : ''}`;

/** What differs between two recorded schemas (before → after), connection by connection. */
export function diffSchemas(before: ConnectionSchema[], after: ConnectionSchema[]): SchemaChange[] {
  const changes: SchemaChange[] = [];
  const add = (connection: string, table: string | null, object: SchemaChange['object'], change: SchemaChange['change'], description: string) =>
    changes.push({ connection, table, object, change, description });
  // every lookup by name through a Map: one pass over each list, however many tables, columns or indexes
  const byKey = <T>(xs: T[], key: (x: T) => string) => {
    const m = new Map<string, T>();
    for (const x of xs) if (!m.has(key(x))) m.set(key(x), x); // the first of equal keys, as a search would find
    return m;
  };
  const byName = <T extends { name: string }>(xs: T[]) => byKey(xs, (x) => x.name);
  const beforeConns = byName(before);
  const afterConns = byName(after);
  const names = [...new Set([...beforeConns.keys(), ...afterConns.keys()])].sort();
  for (const conn of names) {
    const b = beforeConns.get(conn);
    const a = afterConns.get(conn);
    if (!b || !a) {
      add(conn, null, 'connection', b ? 'removed' : 'added', `connection ${conn} ${b ? 'removed' : 'added'} (${(a ?? b)!.tables.length} tables)`);
      continue;
    }
    const beforeTables = byName(b.tables);
    const afterTables = byName(a.tables);
    const tables = [...new Set([...beforeTables.keys(), ...afterTables.keys()])].sort();
    for (const name of tables) {
      const bt = beforeTables.get(name);
      const at = afterTables.get(name);
      if (!bt || !at) {
        add(conn, name, 'table', bt ? 'removed' : 'added', `table ${name} ${bt ? 'removed' : `added (${at!.columns.length} columns)`}`);
        continue;
      }
      const beforeColumns = byName(bt.columns);
      const afterColumns = byName(at.columns);
      for (const bc of bt.columns) {
        const ac = afterColumns.get(bc.name);
        if (!ac) add(conn, name, 'column', 'removed', `column ${name}.${bc.name} removed (was ${colText(bc)})`);
        else if (colText(ac) !== colText(bc)) add(conn, name, 'column', 'changed', `column ${name}.${bc.name} changed: ${colText(bc)} → ${colText(ac)}`);
      }
      for (const ac of at.columns) if (!beforeColumns.has(ac.name)) add(conn, name, 'column', 'added', `column ${name}.${ac.name} added (${colText(ac)})`);
      if (list(bt.primaryKey ?? []) !== list(at.primaryKey ?? [])) {
        add(
          conn,
          name,
          'primary key',
          'changed',
          `primary key of ${name}: ${bt.primaryKey ? `(${list(bt.primaryKey)})` : 'none'} → ${at.primaryKey ? `(${list(at.primaryKey)})` : 'none'}`,
        );
      }
      const bu = new Set(bt.uniques.map(list));
      const au = new Set(at.uniques.map(list));
      for (const u of bu) if (!au.has(u)) add(conn, name, 'unique', 'removed', `unique (${u}) on ${name} removed`);
      for (const u of au) if (!bu.has(u)) add(conn, name, 'unique', 'added', `unique (${u}) on ${name} added`);
      // foreign keys by their columns (hand-made ones have generated names)
      const fkText = (f: SnapshotTable['foreignKeys'][number]) =>
        `→ ${f.refTable}(${list(f.refColumns)}) on delete ${f.onDelete.replace('_', ' ')}, on update ${f.onUpdate.replace('_', ' ')}`;
      const afterFks = byKey(at.foreignKeys, (f) => list(f.columns));
      const beforeFks = new Set(bt.foreignKeys.map((f) => list(f.columns)));
      for (const bf of bt.foreignKeys) {
        const af = afterFks.get(list(bf.columns));
        if (!af) add(conn, name, 'foreign key', 'removed', `foreign key ${name}(${list(bf.columns)}) ${fkText(bf)} removed`);
        else if (fkText(af) !== fkText(bf))
          add(conn, name, 'foreign key', 'changed', `foreign key ${name}(${list(bf.columns)}): ${fkText(bf)} → ${fkText(af)}`);
      }
      for (const af of at.foreignKeys) {
        if (!beforeFks.has(list(af.columns))) add(conn, name, 'foreign key', 'added', `foreign key ${name}(${list(af.columns)}) ${fkText(af)} added`);
      }
      const idxText = (i: SnapshotTable['indexes'][number]) => `${i.unique ? 'unique ' : ''}on (${list(i.columns)})`;
      const beforeIndexes = byName(bt.indexes);
      const afterIndexes = byName(at.indexes);
      for (const bi of bt.indexes) {
        const ai = afterIndexes.get(bi.name);
        if (!ai) add(conn, name, 'index', 'removed', `index ${bi.name} ${idxText(bi)} removed`);
        else if (idxText(ai) !== idxText(bi)) add(conn, name, 'index', 'changed', `index ${bi.name}: ${idxText(bi)} → ${idxText(ai)}`);
      }
      for (const ai of at.indexes) if (!beforeIndexes.has(ai.name)) add(conn, name, 'index', 'added', `index ${ai.name} ${idxText(ai)} added`);
    }
  }
  return changes;
}

async function latestSnapshot(ctx: HubContext, envId: string) {
  return ctx.db
    .selectFrom('schema_snapshots')
    .selectAll()
    .where('env_id', '=', envId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
}

/** Records the env's live schema (project deployer) and says what changed since the previous snapshot. */
export async function takeSnapshot(ctx: HubContext, actor: Actor, projectName: string, envName: string): Promise<RecordedSnapshot> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'deployer');
  const env = await findEnv(ctx, project, envName);
  const label = `${project.name}/${env.name}`;
  const connections = await readLiveSchema(ctx, env.id, label);
  const summary = summaryOf(connections);
  const current = await ctx.db.selectFrom('current_releases').select('release_id').where('env_id', '=', env.id).executeTakeFirst();
  const releaseId = current?.release_id ?? null;
  const op = actor.operator;
  const snapshotId = ulid();
  const takenAt = nowIso();
  const previous = await ctx.db.transaction().execute(async (trx) => {
    const prev = await trx
      .selectFrom('schema_snapshots')
      .select(['id', 'schema_json'])
      .where('env_id', '=', env.id)
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(1)
      .executeTakeFirst();
    await trx
      .insertInto('schema_snapshots')
      .values({
        id: snapshotId,
        project_id: project.id,
        env_id: env.id,
        release_id: releaseId,
        schema_json: JSON.stringify(connections),
        tables: summary.tables,
        columns: summary.columns,
        created_by: op?.id ?? null,
        created_at: takenAt,
      })
      .execute();
    // only the newest few are kept
    const old = await trx
      .selectFrom('schema_snapshots')
      .select('id')
      .where('env_id', '=', env.id)
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .offset(SNAPSHOTS_KEPT)
      .limit(1000)
      .execute();
    if (old.length)
      await trx
        .deleteFrom('schema_snapshots')
        .where(
          'id',
          'in',
          old.map((r) => r.id),
        )
        .execute();
    await audit(ctx, actor, { action: 'schema.snapshot', project: project.name, env: env.name, detail: { snapshotId, releaseId, ...summary } }, trx);
    return prev;
  });
  const changes = previous ? diffSchemas(JSON.parse(previous.schema_json) as ConnectionSchema[], connections) : [];
  return {
    snapshotId,
    project: project.name,
    env: env.name,
    takenAt,
    takenBy: op?.email ?? null,
    releaseId,
    summary,
    connections,
    previousSnapshotId: previous?.id ?? null,
    changes,
  };
}

/** How the live schema differs from the env's latest snapshot (project deployer); records nothing. */
export async function schemaDrift(ctx: HubContext, actor: Actor, projectName: string, envName: string): Promise<SchemaDrift> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'deployer');
  const env = await findEnv(ctx, project, envName);
  const label = `${project.name}/${env.name}`;
  const snap = await latestSnapshot(ctx, env.id);
  if (!snap) throw notFound(`no schema snapshot of ${label} yet: record one with 'stk schema snapshot --project ${project.name} --env ${env.name}'`);
  const live = await readLiveSchema(ctx, env.id, label);
  return {
    snapshotId: snap.id,
    takenAt: snap.created_at,
    releaseId: snap.release_id,
    checkedAt: nowIso(),
    summary: summaryOf(live),
    changes: diffSchemas(JSON.parse(snap.schema_json) as ConnectionSchema[], live),
  };
}
