import type { FkAction } from '../../../protocol/release.js';
import { TABLE_SCHEMA as SCHEMA, qualified } from '../../../common/quote-ident.js';
import { MANAGED_TABLE_COMMENT } from './sql.js';

/**
 * Reads what really exists in a PostgreSQL database (schema `public`) from pg_catalog: tables,
 * columns with their `format_type()`, nullability, identity and default expression, primary keys,
 * UNIQUE constraints, foreign keys and indexes. The planner and the drift check compare against this.
 */
export interface Queryable {
  query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<{ rows: R[] }>;
}

export interface LiveColumn {
  name: string;
  /** `format_type()`: text, integer, bigint, double precision, numeric, boolean, jsonb, timestamp with time zone, bytea, … */
  type: string;
  notNull: boolean;
  identity: boolean;
  generated: boolean;
  /** `pg_get_expr()` of the default, or null */
  default: string | null;
  /** the sequence a `nextval(…)` default draws from (a `serial` column), with its data type */
  sequence: { schema: string; name: string; type: string } | null;
}

export interface LiveConstraint {
  name: string;
  columns: string[];
}

export interface LiveForeignKey extends LiveConstraint {
  refSchema: string;
  refTable: string;
  refColumns: string[];
  onDelete: FkAction;
  onUpdate: FkAction;
  /** DEFERRABLE (initially immediate or deferred): its check can be moved to commit */
  deferrable: boolean;
}

export interface LiveIndex {
  name: string;
  columns: string[];
  unique: boolean;
  /** backs a PRIMARY KEY / UNIQUE / EXCLUDE constraint (then compared as a constraint, not an index) */
  constraint: boolean;
  partial: boolean;
  expression: boolean;
  method: string;
}

export interface LiveTable {
  name: string;
  /** carries the comment apply puts on the tables it created or adopted */
  managed: boolean;
  columns: LiveColumn[];
  primaryKey: LiveConstraint | null;
  uniques: LiveConstraint[];
  foreignKeys: LiveForeignKey[];
  indexes: LiveIndex[];
}

export interface LiveSchema {
  tables: Map<string, LiveTable>;
}

const FK_CHAR: Record<string, FkAction> = { a: 'no_action', r: 'restrict', c: 'cascade', n: 'set_null', d: 'set_default' };

export async function introspect(db: Queryable): Promise<LiveSchema> {
  const tables = new Map<string, LiveTable>();
  const byOid = new Map<number, LiveTable>();
  const t = await db.query<{ oid: number; name: string; comment: string | null }>(
    `SELECT c.oid::int AS oid, c.relname::text AS name, obj_description(c.oid, 'pg_class') AS comment
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')`,
    [SCHEMA],
  );
  for (const r of t.rows) {
    const lt: LiveTable = {
      name: r.name,
      managed: r.comment === MANAGED_TABLE_COMMENT,
      columns: [],
      primaryKey: null,
      uniques: [],
      foreignKeys: [],
      indexes: [],
    };
    tables.set(r.name, lt);
    byOid.set(r.oid, lt);
  }
  if (tables.size === 0) return { tables };

  const cols = await db.query<{
    oid: number;
    name: string;
    type: string;
    not_null: boolean;
    identity: string;
    generated: string;
    default: string | null;
    seq_schema: string | null;
    seq_name: string | null;
    seq_type: string | null;
  }>(
    `SELECT a.attrelid::int AS oid, a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type,
            a.attnotnull AS not_null, a.attidentity::text AS identity, a.attgenerated::text AS generated,
            pg_get_expr(d.adbin, d.adrelid) AS default,
            seq.schema AS seq_schema, seq.name AS seq_name, seq.type AS seq_type
       FROM pg_attribute a
       JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
       LEFT JOIN LATERAL (
         SELECT sn.nspname::text AS schema, s.relname::text AS name, format_type(sq.seqtypid, NULL) AS type
           FROM pg_depend dep
           JOIN pg_class s ON s.oid = dep.refobjid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
           JOIN pg_sequence sq ON sq.seqrelid = s.oid
          WHERE dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid AND dep.refclassid = 'pg_class'::regclass
          ORDER BY s.oid LIMIT 1) seq ON true
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attrelid, a.attnum`,
    [SCHEMA],
  );
  for (const r of cols.rows) {
    byOid.get(r.oid)?.columns.push({
      name: r.name,
      type: r.type,
      notNull: r.not_null,
      identity: r.identity !== '',
      generated: r.generated !== '',
      default: r.generated !== '' ? null : r.default,
      sequence: r.seq_name && r.default && /^nextval\(/.test(r.default) ? { schema: r.seq_schema ?? '', name: r.seq_name, type: r.seq_type ?? '' } : null,
    });
  }

  const cons = await db.query<{
    oid: number;
    name: string;
    type: string;
    columns: string[];
    ref_schema: string | null;
    ref_table: string | null;
    ref_columns: string[];
    on_delete: string;
    on_update: string;
    deferrable: boolean;
  }>(
    `SELECT con.conrelid::int AS oid, con.conname::text AS name, con.contype::text AS type,
            ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
                    JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord) AS columns,
            fn.nspname::text AS ref_schema, fc.relname::text AS ref_table,
            ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
                    JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord) AS ref_columns,
            con.confdeltype::text AS on_delete, con.confupdtype::text AS on_update, con.condeferrable AS deferrable
       FROM pg_constraint con
       JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_class fc ON fc.oid = con.confrelid LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace
      WHERE n.nspname = $1 AND con.contype IN ('p', 'u', 'f')
      ORDER BY con.conname`,
    [SCHEMA],
  );
  for (const r of cons.rows) {
    const lt = byOid.get(r.oid);
    if (!lt) continue;
    if (r.type === 'p') lt.primaryKey = { name: r.name, columns: r.columns };
    else if (r.type === 'u') lt.uniques.push({ name: r.name, columns: r.columns });
    else if (r.type === 'f') {
      lt.foreignKeys.push({
        name: r.name,
        columns: r.columns,
        refSchema: r.ref_schema ?? '',
        refTable: r.ref_table ?? '',
        refColumns: r.ref_columns,
        onDelete: FK_CHAR[r.on_delete] ?? 'no_action',
        onUpdate: FK_CHAR[r.on_update] ?? 'no_action',
        deferrable: r.deferrable,
      });
    }
  }

  const idx = await db.query<{
    oid: number;
    name: string;
    unique: boolean;
    partial: boolean;
    expression: boolean;
    columns: string[];
    constraint: boolean;
    method: string;
  }>(
    `SELECT i.indrelid::int AS oid, ic.relname::text AS name, i.indisunique AS unique,
            (i.indpred IS NOT NULL) AS partial, (i.indexprs IS NOT NULL) AS expression,
            ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(num, ord)
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num ORDER BY k.ord) AS columns,
            EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                       AND con.contype IN ('p', 'u', 'x')) AS constraint,
            am.amname::text AS method
       FROM pg_index i
       JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
       JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
      ORDER BY ic.relname`,
    [SCHEMA],
  );
  for (const r of idx.rows) {
    byOid.get(r.oid)?.indexes.push({
      name: r.name,
      columns: r.columns,
      unique: r.unique,
      constraint: r.constraint,
      partial: r.partial,
      expression: r.expression,
      method: r.method,
    });
  }
  return { tables };
}

/** True when the table holds at least one row (adding a NOT NULL column without default needs an empty table). */
export async function tableHasRows(db: Queryable, table: string): Promise<boolean> {
  const r = await db.query<{ any: boolean }>(`SELECT EXISTS (SELECT 1 FROM ${qualified(table)}) AS any`);
  return Boolean(r.rows[0]?.any);
}

export type LiveDefault = { kind: 'none' } | { kind: 'now' } | { kind: 'literal'; text: string } | { kind: 'other'; expr: string };

const NOW_RE = /^(now\(\)|CURRENT_TIMESTAMP|transaction_timestamp\(\))(::timestamp with time zone)?$/i;
/** the current time as UTC wall-clock time: `now() at time zone 'utc'` as PostgreSQL 15 and older print it */
const UTC_NOW_RE = /^(\(now\(\) AT TIME ZONE 'utc'::text\)|timezone\('utc'::text, now\(\)\))$/i;

/**
 * Reads a default expression as PostgreSQL prints it: `now()`, `true`, `5`, `'x'::text`, `'-1.5'::numeric`, …
 * On a `timestamp without time zone` column (`liveType`), `LOCALTIMESTAMP` and `now() AT TIME ZONE 'utc'`
 * are `now` too: the Bridge's and apply's sessions run in UTC, where they store what `now()` stores.
 */
export function parseLiveDefault(expr: string | null, liveType?: string): LiveDefault {
  if (expr === null) return { kind: 'none' };
  const e = expr.trim();
  if (NOW_RE.test(e)) return { kind: 'now' };
  if (liveType === 'timestamp without time zone' && (/^LOCALTIMESTAMP$/i.test(e) || UTC_NOW_RE.test(e))) return { kind: 'now' };
  if (e === 'true' || e === 'false') return { kind: 'literal', text: e };
  const num = /^\(?(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\)?(?:::[a-z ]+)?$/.exec(e);
  if (num) return { kind: 'literal', text: num[1]! };
  const str = /^'((?:[^']|'')*)'(?:::[a-z ]+(?:\(\d+(?:,\s*\d+)?\))?)?$/.exec(e);
  if (str) return { kind: 'literal', text: str[1]!.replace(/''/g, "'") };
  return { kind: 'other', expr: e };
}
