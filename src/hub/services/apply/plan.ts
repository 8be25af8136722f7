import type { ColumnIR, DefaultIR, IndexIR, TableIR, TypeSpec } from '../../../protocol/release.js';
import type { PlanStep } from '../../../protocol/api/hub.js';
import { parseLiveDefault, type LiveColumn, type LiveForeignKey, type LiveIndex, type LiveSchema, type LiveTable } from './introspect.js';
import { TABLE_SCHEMA as SCHEMA, qualified, quoteIdent } from '../../../common/quote-ident.js';
import {
  addForeignKeySql,
  addUniqueSql,
  columnDefinition,
  createIndexSql,
  createTableSql,
  defaultSql,
  isIdentityPk,
  markManagedSql,
  pgType,
  pkPgType,
} from './sql.js';

/**
 * Declared tables of one connection vs the live database → ordered DDL steps.
 *
 * Safe: create table, add column (nullable, with a default, or on an empty table), create index,
 * add unique/foreign key (fails if existing data violates it), relax NOT NULL, change a default.
 * Destructive (refused without --force): drop table/column/index/constraint, tighten to NOT NULL,
 * change a column type (only casts PostgreSQL does losslessly or to text; others are unsupported).
 * A declared table that already exists but was neither created by apply (its comment says so) nor
 * declared by the env's previous release is unmanaged: its steps are planned behind an "adopt" step,
 * and syncSchema refuses the plan unless --adopt is given.
 * The same diff run after the DDL is the drift check: anything still listed is drift.
 */
export type { PlanStep };

export interface ConnectionPlan {
  steps: PlanStep[];
  /** differences apply cannot fix (e.g. a primary key change or an unsupported cast), each with its reason */
  unsupported: string[];
  /** declared tables that exist but santokit neither created nor adopted: touched only with --adopt */
  unmanaged: string[];
}

export interface PlanInput {
  connection: string;
  /** declared tables that live on this connection */
  tables: TableIR[];
  /** tables the env's previous release put on this connection; those no longer declared are dropped */
  previouslyManaged: string[];
  live: LiveSchema;
  /** whether a live table holds rows (asked only before adding a NOT NULL column without default) */
  hasRows: (table: string) => Promise<boolean>;
}

enum Phase {
  AdoptTables,
  DropForeignKeys,
  DropIndexesAndUniques,
  CreateTables,
  AddColumns,
  AlterColumns,
  AddUniques,
  CreateIndexes,
  AddForeignKeys,
  DropColumns,
  DropTables,
}

/** Casts allowed for a type change (all destructive). Anything else is unsupported. */
const CASTS: Record<string, string[]> = {
  integer: ['bigint', 'numeric', 'double precision', 'text'],
  bigint: ['numeric', 'double precision', 'text'],
  numeric: ['double precision', 'text'],
  'double precision': ['numeric', 'text'],
  boolean: ['text'],
  'timestamp with time zone': ['text'],
  'timestamp without time zone': ['timestamp with time zone', 'text'],
  jsonb: ['text'],
  json: ['jsonb', 'text'],
  bytea: ['text'],
};

function castAllowed(from: string, to: string): boolean {
  if (/^(character varying|character)(\(\d+\))?$/.test(from)) return to === 'text';
  return CASTS[from]?.includes(to) ?? false;
}

const sameList = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

export async function planConnection(input: PlanInput): Promise<ConnectionPlan> {
  const { connection, live } = input;
  const steps: Array<PlanStep & { phase: Phase }> = [];
  const unsupported: string[] = [];
  const unmanaged: string[] = [];
  const add = (phase: Phase, sql: string, description: string, destructive = false) =>
    steps.push({ phase, connection, sql, destructive, description });

  const declared = new Map(input.tables.map((t) => [t.name, t]));
  for (const t of input.tables) {
    const lt = live.tables.get(t.name);
    if (!lt) {
      add(Phase.CreateTables, `${createTableSql(t)};\n${markManagedSql(t.name)}`, `create table ${t.name} (${t.columns.length + 1} columns)`);
      for (const c of t.columns) if (c.references) add(Phase.AddForeignKeys, addForeignKeySql(t.name, c), fkDescription(t.name, c));
      for (const i of t.indexes) add(Phase.CreateIndexes, createIndexSql(t.name, i), indexDescription(t.name, i));
      continue;
    }
    // a table of that name that apply did not create (nor the env's release declare): someone else's
    if (!lt.managed && !input.previouslyManaged.includes(t.name)) {
      unmanaged.push(t.name);
      add(Phase.AdoptTables, markManagedSql(t.name), `adopt table ${t.name}, which santokit did not create (needs --adopt)`);
    }
    await diffTable(t, lt, input, add, unsupported);
  }

  // tables a previous release managed here and that are no longer declared on this connection
  const gone = input.previouslyManaged.filter((n) => !declared.has(n) && live.tables.has(n)).sort();
  for (const group of dropOrder(gone, live)) {
    add(Phase.DropTables, `DROP TABLE ${group.map(qualified).join(', ')}`, `drop table${group.length > 1 ? 's' : ''} ${group.join(', ')} and all ${group.length > 1 ? 'their' : 'its'} rows`, true);
  }

  steps.sort((a, b) => a.phase - b.phase);
  return { steps: steps.map(({ phase: _p, ...s }) => s), unsupported, unmanaged };
}

type Add = (phase: Phase, sql: string, description: string, destructive?: boolean) => void;

async function diffTable(t: TableIR, lt: LiveTable, input: PlanInput, add: Add, unsupported: string[]): Promise<void> {
  const T = qualified(t.name);
  const pk = t.primaryKey;

  // primary key: compared, never changed
  const livePkCol = lt.columns.find((c) => c.name === pk.name);
  if (!lt.primaryKey || !sameList(lt.primaryKey.columns, [pk.name])) {
    unsupported.push(
      `table ${t.name}: the primary key in the database is ${lt.primaryKey ? `(${lt.primaryKey.columns.join(', ')})` : 'missing'} but ${pk.name} is declared; changing the primary key is not supported`,
    );
  } else if (livePkCol && livePkCol.type !== pkPgType(pk)) {
    unsupported.push(`table ${t.name}: primary key ${pk.name} is ${livePkCol.type} in the database but ${pkPgType(pk)} is declared; changing the primary key type is not supported`);
  } else if (livePkCol && livePkCol.identity !== isIdentityPk(pk)) {
    unsupported.push(
      `table ${t.name}: primary key ${pk.name} is ${livePkCol.identity ? '' : 'not '}an identity column in the database but generate ${pk.generate} is declared; changing how ids are generated is not supported`,
    );
  }

  const keptFks = new Set<string>();
  const keptUniques = new Set<string>();
  for (const col of t.columns) {
    const lc = lt.columns.find((c) => c.name === col.name);
    if (!lc) {
      if (!col.nullable && !col.default && (await input.hasRows(t.name))) {
        unsupported.push(`table ${t.name}: cannot add NOT NULL column ${col.name} without a default: the table already has rows (add a default or nullable: true)`);
        continue;
      }
      add(Phase.AddColumns, `ALTER TABLE ${T} ADD COLUMN ${columnDefinition(col)}`, `add column ${t.name}.${col.name} (${typeLabel(col)}${col.nullable ? ', nullable' : ''})`);
      if (col.unique) add(Phase.AddUniques, addUniqueSql(t.name, col.name), `add unique constraint on ${t.name}.${col.name}`);
      if (col.references) add(Phase.AddForeignKeys, addForeignKeySql(t.name, col), fkDescription(t.name, col));
      continue;
    }
    diffColumn(t, col, lc, add, unsupported);

    const liveUnique = lt.uniques.find((u) => sameList(u.columns, [col.name]));
    if (col.unique) {
      if (liveUnique) keptUniques.add(liveUnique.name);
      else add(Phase.AddUniques, addUniqueSql(t.name, col.name), `add unique constraint on ${t.name}.${col.name} (fails if duplicates exist)`);
    }

    if (col.references) {
      const match = lt.foreignKeys.find((fk) => fkMatches(fk, col));
      if (match) keptFks.add(match.name);
      else add(Phase.AddForeignKeys, addForeignKeySql(t.name, col), fkDescription(t.name, col) + ' (fails if existing rows violate it)');
    }
  }

  const declaredCols = new Set([pk.name, ...t.columns.map((c) => c.name)]);
  for (const fk of lt.foreignKeys) {
    if (keptFks.has(fk.name)) continue;
    add(Phase.DropForeignKeys, `ALTER TABLE ${T} DROP CONSTRAINT ${quoteIdent(fk.name)}`, `drop foreign key ${fk.name} (${t.name}.${fk.columns.join(', ')} → ${fk.refTable})`, true);
  }
  for (const u of lt.uniques) {
    if (keptUniques.has(u.name)) continue;
    if (u.columns.some((c) => !declaredCols.has(c))) continue; // goes away with the dropped column
    add(Phase.DropIndexesAndUniques, `ALTER TABLE ${T} DROP CONSTRAINT ${quoteIdent(u.name)}`, `drop unique constraint ${u.name} on ${t.name} (${u.columns.join(', ')})`, true);
  }

  for (const idx of t.indexes) {
    const li = lt.indexes.find((i) => i.name === idx.name);
    if (li && !li.constraint && indexMatches(li, idx)) continue;
    if (li && li.constraint) {
      unsupported.push(`table ${t.name}: index name ${idx.name} is taken by a constraint in the database; name the index differently`);
      continue;
    }
    if (li) add(Phase.DropIndexesAndUniques, `DROP INDEX ${qualified(li.name)}`, `drop index ${li.name} (it differs from the declared one)`, true);
    add(Phase.CreateIndexes, createIndexSql(t.name, idx), indexDescription(t.name, idx));
  }
  const declaredIdx = new Set(t.indexes.map((i) => i.name));
  for (const li of lt.indexes) {
    if (li.constraint || declaredIdx.has(li.name)) continue;
    if (li.columns.some((c) => !declaredCols.has(c))) continue; // goes away with the dropped column
    add(Phase.DropIndexesAndUniques, `DROP INDEX ${qualified(li.name)}`, `drop index ${li.name} on ${t.name} (not declared)`, true);
  }

  for (const lc of lt.columns) {
    if (declaredCols.has(lc.name)) continue;
    add(Phase.DropColumns, `ALTER TABLE ${T} DROP COLUMN ${quoteIdent(lc.name)}`, `drop column ${t.name}.${lc.name} and its data`, true);
  }
}

function diffColumn(t: TableIR, col: ColumnIR, lc: LiveColumn, add: Add, unsupported: string[]): void {
  const T = qualified(t.name);
  const C = quoteIdent(col.name);
  const where = `${t.name}.${col.name}`;
  if (lc.identity || lc.generated) {
    unsupported.push(`column ${where} is ${lc.identity ? 'an identity' : 'a generated'} column in the database; only plain columns are supported`);
    return;
  }
  const want = pgType(col);
  let liveDefault = lc.default;
  if (lc.type !== want) {
    if (!castAllowed(lc.type, want)) {
      unsupported.push(
        `column ${where}: cannot change type from ${lc.type} to ${want} (${typeLabel(col)}): no safe cast; add a new column and migrate the data by hand, or drop and re-add it`,
      );
      return;
    }
    if (lc.default !== null) add(Phase.AlterColumns, `ALTER TABLE ${T} ALTER COLUMN ${C} DROP DEFAULT`, `drop default of ${where} before its type change`, true);
    add(Phase.AlterColumns, `ALTER TABLE ${T} ALTER COLUMN ${C} TYPE ${want} USING ${C}::${want}`, `change type of ${where} from ${lc.type} to ${want}`, true);
    liveDefault = null;
  }
  if (col.nullable && lc.notNull) add(Phase.AlterColumns, `ALTER TABLE ${T} ALTER COLUMN ${C} DROP NOT NULL`, `allow NULL in ${where}`);
  if (!col.nullable && !lc.notNull) {
    add(Phase.AlterColumns, `ALTER TABLE ${T} ALTER COLUMN ${C} SET NOT NULL`, `make ${where} NOT NULL (fails if it holds NULLs)`, true);
  }
  if (!defaultsEqual(col.default, liveDefault, col)) {
    if (col.default) add(Phase.AlterColumns, `ALTER TABLE ${T} ALTER COLUMN ${C} SET DEFAULT ${defaultSql(col.default, col)}`, `set default of ${where}`);
    else add(Phase.AlterColumns, `ALTER TABLE ${T} ALTER COLUMN ${C} DROP DEFAULT`, `drop default of ${where}`);
  }
}

/** Declared default vs the live default expression, compared by value for the column's type. */
export function defaultsEqual(d: DefaultIR | undefined, liveExpr: string | null, col: TypeSpec): boolean {
  const live = parseLiveDefault(liveExpr);
  if (!d) return live.kind === 'none';
  if (d.kind === 'now') return live.kind === 'now';
  if (live.kind !== 'literal') return false;
  const want = String(d.value);
  switch (col.type) {
    case 'int':
    case 'bigint':
      try {
        return BigInt(live.text) === BigInt(want);
      } catch {
        return false;
      }
    case 'float':
    case 'decimal':
      return Number(live.text) === Number(want);
    case 'timestamp': {
      const iso = live.text.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00');
      return Date.parse(iso) === Date.parse(want);
    }
    default:
      return live.text === want;
  }
}

function fkMatches(fk: LiveForeignKey, col: ColumnIR): boolean {
  const r = col.references!;
  return (
    sameList(fk.columns, [col.name]) &&
    fk.refSchema === SCHEMA &&
    fk.refTable === r.table &&
    sameList(fk.refColumns, [r.column]) &&
    fk.onDelete === r.onDelete &&
    fk.onUpdate === r.onUpdate
  );
}

function indexMatches(li: LiveIndex, idx: IndexIR): boolean {
  return !li.partial && !li.expression && li.method === 'btree' && li.unique === idx.unique && sameList(li.columns, idx.columns);
}

/** Referencing tables first, so each DROP TABLE succeeds; tables in a reference cycle are dropped by one statement. */
function dropOrder(names: string[], live: LiveSchema): string[][] {
  const out: string[][] = [];
  const left = new Set(names);
  const referenced = (n: string) => [...left].some((o) => o !== n && live.tables.get(o)?.foreignKeys.some((fk) => fk.refTable === n));
  while (left.size) {
    const next = [...left].find((n) => !referenced(n));
    const group = next ? [next] : [...left];
    out.push(group);
    for (const n of group) left.delete(n);
  }
  return out;
}

function typeLabel(t: TypeSpec): string {
  return t.type === 'array' && t.items ? `array of ${typeLabel(t.items)}` : t.type;
}

function fkDescription(table: string, col: ColumnIR): string {
  const r = col.references!;
  return `add foreign key ${table}.${col.name} → ${r.table}.${r.column} (as ${r.as}, on delete ${r.onDelete}, on update ${r.onUpdate})`;
}

function indexDescription(table: string, i: IndexIR): string {
  return `create ${i.unique ? 'unique ' : ''}index ${i.name} on ${table} (${i.columns.join(', ')})`;
}
