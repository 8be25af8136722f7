import type { ColumnIR, DefaultIR, FkAction, IndexIR, TableIR, TypeSpec } from '../../../protocol/release.js';
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
  fkActionSql,
  isIdentityPk,
  markManagedSql,
  pgType,
  pkPgType,
} from './sql.js';

/**
 * Declared tables of one connection vs the live database → ordered DDL steps.
 *
 * Safe: create table, add column (nullable, with a default, or on an empty table), create index,
 * add unique/foreign key (fails if existing data violates it), relax NOT NULL, change a default,
 * widen a column type losslessly (integer → bigint, varchar(n) → text, numeric(p,s) → numeric; WIDENINGS).
 * Destructive (refused without --force): drop table/column/index/constraint, tighten to NOT NULL,
 * any other type change (narrowing such as bigint → integer, or a cast to text: CASTS; others are unsupported).
 * Equivalent, left as it is and listed in the plan's notes: a live type the Bridge handles like the
 * declared one (timestamp for timestamptz: KEPT_TYPES), NO ACTION for RESTRICT on a non-deferrable
 * foreign key, a `serial` key for auto_increment, an index or unique index with the declared definition
 * under another name. Tables written by hand from the schema YAML thus apply without --force.
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
  /** live differences treated as equivalent and left as they are (a kept type, NO ACTION for RESTRICT, …) */
  notes: string[];
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

/**
 * How a live column type stands against the declared one (`format_type()` spellings both):
 * - `same`;
 * - `kept`: a different type the Bridge reads and writes exactly like the declared one; left as it is
 *   and named in the plan's notes (`timestamp without time zone` for `timestamp`: the Bridge's sessions
 *   run in UTC, so it writes and reads UTC wall-clock time; see docs/schema.md);
 * - `widen`: a lossless `ALTER … TYPE` to the declared type (every value kept exactly, order and equality
 *   unchanged): safe, no --force;
 * - `cast`: a change that can lose or reinterpret data (narrowing, or a cast to text): destructive;
 * - `unsupported`: no cast apply will run.
 */
export type TypeVerdict = 'same' | 'kept' | 'widen' | 'cast' | 'unsupported';

/** declared type → live types kept as they are */
export const KEPT_TYPES: Readonly<Record<string, readonly string[]>> = {
  'timestamp with time zone': ['timestamp without time zone'],
};

/** live type → declared types it widens to losslessly */
export const WIDENINGS: Readonly<Record<string, readonly string[]>> = {
  smallint: ['integer', 'bigint', 'numeric', 'double precision'],
  integer: ['bigint', 'numeric', 'double precision'],
  bigint: ['numeric'],
  'character varying': ['text'],
};

/** live type → declared types reached by a cast that may lose or reinterpret data (destructive) */
export const CASTS: Readonly<Record<string, readonly string[]>> = {
  smallint: ['text'],
  integer: ['text'],
  bigint: ['integer', 'double precision', 'text'],
  numeric: ['double precision', 'text'],
  'double precision': ['numeric', 'text'],
  boolean: ['text'],
  'timestamp with time zone': ['text'],
  'timestamp without time zone': ['text'],
  jsonb: ['text'],
  json: ['jsonb', 'text'],
  bytea: ['text'],
  character: ['text'],
};

/** `character varying(255)` → `character varying`, `numeric(10,2)` → `numeric` (a length or precision only narrows) */
const baseType = (t: string) => t.replace(/\(\d+(?:,\s*-?\d+)?\)$/, '');

export function compareTypes(live: string, declared: string): TypeVerdict {
  if (live === declared) return 'same';
  if (KEPT_TYPES[declared]?.includes(live)) return 'kept';
  const base = baseType(live);
  if (base === 'numeric' && declared === 'numeric') return 'widen'; // numeric(p,s) → numeric drops a limit, every value stays
  if (WIDENINGS[base]?.includes(declared)) return 'widen';
  if (CASTS[base]?.includes(declared)) return 'cast';
  return 'unsupported';
}

/**
 * NO ACTION and RESTRICT differ only in when the check runs (end of statement vs at once): on a key that
 * is not DEFERRABLE no single row change can tell them apart in practice, so either stands for the other.
 * A DEFERRABLE key is never equal to a declared one (declared keys are not deferrable): with
 * `SET CONSTRAINTS … DEFERRED` its check moves to commit, which is a real difference.
 */
export function fkActionsEquivalent(live: FkAction, declared: FkAction, deferrable: boolean): boolean {
  if (live === declared) return true;
  if (deferrable) return false;
  const loose = (a: FkAction) => a === 'no_action' || a === 'restrict';
  return loose(live) && loose(declared);
}

const sameList = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

export async function planConnection(input: PlanInput): Promise<ConnectionPlan> {
  const { connection, live } = input;
  const steps: Array<PlanStep & { phase: Phase }> = [];
  const unsupported: string[] = [];
  const unmanaged: string[] = [];
  const notes: string[] = [];
  const out: Out = {
    add: (phase, sql, description, destructive = false) => steps.push({ phase, connection, sql, destructive, description }),
    unsupported: (why) => unsupported.push(why),
    note: (what) => notes.push(what),
  };

  const declared = new Map(input.tables.map((t) => [t.name, t]));
  for (const t of input.tables) {
    const lt = live.tables.get(t.name);
    if (!lt) {
      out.add(Phase.CreateTables, `${createTableSql(t)};\n${markManagedSql(t.name)}`, `create table ${t.name} (${t.columns.length + 1} columns)`);
      for (const c of t.columns) if (c.references) out.add(Phase.AddForeignKeys, addForeignKeySql(t.name, c), fkDescription(t.name, c));
      for (const i of t.indexes) out.add(Phase.CreateIndexes, createIndexSql(t.name, i), indexDescription(t.name, i));
      continue;
    }
    // a table of that name that apply did not create (nor the env's release declare): someone else's
    if (!lt.managed && !input.previouslyManaged.includes(t.name)) {
      unmanaged.push(t.name);
      out.add(Phase.AdoptTables, markManagedSql(t.name), `adopt table ${t.name}, which santokit did not create (needs --adopt)`);
    }
    await diffTable(t, lt, input, out);
  }

  // tables a previous release managed here and that are no longer declared on this connection
  const gone = input.previouslyManaged.filter((n) => !declared.has(n) && live.tables.has(n)).sort();
  for (const group of dropOrder(gone, live)) {
    out.add(
      Phase.DropTables,
      `DROP TABLE ${group.map(qualified).join(', ')}`,
      `drop table${group.length > 1 ? 's' : ''} ${group.join(', ')} and all ${group.length > 1 ? 'their' : 'its'} rows`,
      true,
    );
  }

  steps.sort((a, b) => a.phase - b.phase);
  return { steps: steps.map(({ phase: _p, ...s }) => s), unsupported, unmanaged, notes };
}

interface Out {
  add(phase: Phase, sql: string, description: string, destructive?: boolean): void;
  unsupported(why: string): void;
  /** a difference the plan leaves as it is because it is equivalent (see KEPT_TYPES, fkActionsEquivalent) */
  note(what: string): void;
}

async function diffTable(t: TableIR, lt: LiveTable, input: PlanInput, out: Out): Promise<void> {
  const T = qualified(t.name);
  const pk = t.primaryKey;

  // primary key: compared; only a lossless widening of its type is planned
  const livePkCol = lt.columns.find((c) => c.name === pk.name);
  if (!lt.primaryKey || !sameList(lt.primaryKey.columns, [pk.name])) {
    out.unsupported(
      `table ${t.name}: the primary key in the database is ${lt.primaryKey ? `(${lt.primaryKey.columns.join(', ')})` : 'missing'} but ${pk.name} is declared; changing the primary key is not supported`,
    );
  } else if (livePkCol) {
    diffPrimaryKey(t, livePkCol, out);
  }

  const keptFks = new Set<string>();
  const keptUniques = new Set<string>();
  /** live indexes that stand for a declared index or unique column */
  const keptIndexes = new Set<string>();
  const declaredIdxNames = new Set(t.indexes.map((i) => i.name));
  /** a live plain index, under another name than any declared one, with exactly this definition */
  const equivalentIndex = (idx: Pick<IndexIR, 'columns' | 'unique'>) =>
    lt.indexes.find((i) => !i.constraint && !keptIndexes.has(i.name) && !declaredIdxNames.has(i.name) && indexMatches(i, idx));
  /** reasons a live FK on the column differs from its declaration, for the description of its drop */
  const fkReasons = new Map<string, string>();

  for (const col of t.columns) {
    const lc = lt.columns.find((c) => c.name === col.name);
    if (!lc) {
      if (!col.nullable && !col.default && (await input.hasRows(t.name))) {
        out.unsupported(
          `table ${t.name}: cannot add NOT NULL column ${col.name} without a default: the table already has rows (add a default or nullable: true)`,
        );
        continue;
      }
      out.add(
        Phase.AddColumns,
        `ALTER TABLE ${T} ADD COLUMN ${columnDefinition(col)}`,
        `add column ${t.name}.${col.name} (${typeLabel(col)}${col.nullable ? ', nullable' : ''})`,
      );
      if (col.unique) out.add(Phase.AddUniques, addUniqueSql(t.name, col.name), `add unique constraint on ${t.name}.${col.name}`);
      if (col.references) out.add(Phase.AddForeignKeys, addForeignKeySql(t.name, col), fkDescription(t.name, col));
      continue;
    }
    diffColumn(t, col, lc, out);

    if (col.unique) {
      const liveUnique = lt.uniques.find((u) => sameList(u.columns, [col.name]));
      const uniqueIndex = liveUnique ? undefined : equivalentIndex({ columns: [col.name], unique: true });
      if (liveUnique) keptUniques.add(liveUnique.name);
      else if (uniqueIndex) {
        keptIndexes.add(uniqueIndex.name);
        out.note(`${t.name}.${col.name}: unique index ${uniqueIndex.name} stands for the declared unique constraint (kept as it is)`);
      } else out.add(Phase.AddUniques, addUniqueSql(t.name, col.name), `add unique constraint on ${t.name}.${col.name} (fails if duplicates exist)`);
    }

    if (col.references) {
      const r = col.references;
      const sameTarget = lt.foreignKeys.filter(
        (fk) => sameList(fk.columns, [col.name]) && fk.refSchema === SCHEMA && fk.refTable === r.table && sameList(fk.refColumns, [r.column]),
      );
      const match = sameTarget.find((fk) => fkMatches(fk, col));
      if (match) {
        keptFks.add(match.name);
        const loose = (['onDelete', 'onUpdate'] as const).filter((k) => match[k] !== r[k]);
        if (loose.length) {
          out.note(
            `${t.name}.${col.name}: foreign key ${match.name} has ${loose.map((k) => `${k === 'onDelete' ? 'on delete' : 'on update'} ${fkActionSql(match[k])}`).join(', ')} where ` +
              `${loose.map((k) => fkActionSql(r[k])).join(', ')} is declared: the same on a key that is not DEFERRABLE (kept as it is)`,
          );
        }
      } else {
        for (const fk of sameTarget) fkReasons.set(fk.name, fkDifference(fk, col));
        out.add(Phase.AddForeignKeys, addForeignKeySql(t.name, col), fkDescription(t.name, col) + ' (fails if existing rows violate it)');
      }
    }
  }

  const declaredCols = new Set([pk.name, ...t.columns.map((c) => c.name)]);
  for (const fk of lt.foreignKeys) {
    if (keptFks.has(fk.name)) continue;
    const why = fkReasons.get(fk.name);
    out.add(
      Phase.DropForeignKeys,
      `ALTER TABLE ${T} DROP CONSTRAINT ${quoteIdent(fk.name)}`,
      `drop foreign key ${fk.name} (${t.name}.${fk.columns.join(', ')} → ${fk.refTable})${why ? `: ${why}` : ''}`,
      true,
    );
  }
  for (const u of lt.uniques) {
    if (keptUniques.has(u.name)) continue;
    if (u.columns.some((c) => !declaredCols.has(c))) continue; // goes away with the dropped column
    out.add(
      Phase.DropIndexesAndUniques,
      `ALTER TABLE ${T} DROP CONSTRAINT ${quoteIdent(u.name)}`,
      `drop unique constraint ${u.name} on ${t.name} (${u.columns.join(', ')})`,
      true,
    );
  }

  for (const idx of t.indexes) {
    const li = lt.indexes.find((i) => i.name === idx.name);
    if (li && !li.constraint && indexMatches(li, idx)) {
      keptIndexes.add(li.name);
      continue;
    }
    if (li && li.constraint) {
      out.unsupported(`table ${t.name}: index name ${idx.name} is taken by a constraint in the database; name the index differently`);
      continue;
    }
    const same = li ? undefined : equivalentIndex(idx);
    if (same) {
      keptIndexes.add(same.name);
      out.note(`${t.name}: index ${same.name} (${same.columns.join(', ')}) stands for the declared ${idx.name} (kept under its name)`);
      continue;
    }
    if (li) out.add(Phase.DropIndexesAndUniques, `DROP INDEX ${qualified(li.name)}`, `drop index ${li.name} (it differs from the declared one)`, true);
    out.add(Phase.CreateIndexes, createIndexSql(t.name, idx), indexDescription(t.name, idx));
  }
  for (const li of lt.indexes) {
    if (li.constraint || declaredIdxNames.has(li.name) || keptIndexes.has(li.name)) continue;
    if (li.columns.some((c) => !declaredCols.has(c))) continue; // goes away with the dropped column
    out.add(Phase.DropIndexesAndUniques, `DROP INDEX ${qualified(li.name)}`, `drop index ${li.name} on ${t.name} (not declared)`, true);
  }

  for (const lc of lt.columns) {
    if (declaredCols.has(lc.name)) continue;
    out.add(Phase.DropColumns, `ALTER TABLE ${T} DROP COLUMN ${quoteIdent(lc.name)}`, `drop column ${t.name}.${lc.name} and its data`, true);
  }
}

/**
 * The primary key column: its type may only be the declared one or widen to it (integer → bigint,
 * varchar(n) → text); `generate: auto_increment` is an identity column or a `serial` one (a default
 * drawing from a sequence: the database generates the ids either way), whose sequence widens with it.
 */
function diffPrimaryKey(t: TableIR, lc: LiveColumn, out: Out): void {
  const pk = t.primaryKey;
  const where = `${t.name}.${pk.name}`;
  const want = pkPgType(pk);
  const verdict = compareTypes(lc.type, want);
  if (verdict !== 'same' && verdict !== 'widen') {
    out.unsupported(
      `table ${t.name}: primary key ${pk.name} is ${lc.type} in the database but ${want} is declared; changing the primary key type is not supported`,
    );
    return;
  }
  const serial = !lc.identity && lc.sequence !== null;
  if (isIdentityPk(pk) ? !lc.identity && !serial : lc.identity) {
    out.unsupported(
      `table ${t.name}: primary key ${pk.name} is ${lc.identity ? '' : 'not '}an identity column in the database but generate ${pk.generate} is declared; changing how ids are generated is not supported`,
    );
    return;
  }
  if (verdict === 'widen') out.add(Phase.AlterColumns, alterTypeSql(t.name, pk.name, want), widening(`primary key ${where}`, lc.type, want));
  if (isIdentityPk(pk) && serial) {
    const seq = lc.sequence!;
    out.note(`${where}: serial column (default nextval of sequence ${seq.name}) stands for generate auto_increment (kept as it is)`);
    if (seq.type !== 'bigint') {
      out.add(
        Phase.AlterColumns,
        `ALTER SEQUENCE ${quoteIdent(seq.schema)}.${quoteIdent(seq.name)} AS bigint`,
        `widen sequence ${seq.name} of ${where} from ${seq.type} to bigint (loses nothing)`,
      );
    }
  }
}

/**
 * A widening's plan line. Dropping a limit (`varchar(n)` → `text`, `numeric(p,s)` → `numeric`) changes
 * only the catalog; any other widening makes PostgreSQL rewrite the whole table and its indexes under
 * an exclusive lock, which the line says: on a big table, reads and writes of it wait that long.
 */
function widening(what: string, live: string, want: string): string {
  const base = baseType(live);
  const inPlace = (base === 'character varying' && want === 'text') || (base === 'numeric' && want === 'numeric');
  return `widen ${what} from ${live} to ${want} (loses nothing${inPlace ? '' : '; rewrites the table: reads and writes of it wait until done'})`;
}

const alterTypeSql = (table: string, column: string, type: string) => {
  const C = quoteIdent(column);
  return `ALTER TABLE ${qualified(table)} ALTER COLUMN ${C} TYPE ${type} USING ${C}::${type}`;
};

/** why a kept live type is as good as the declared one (KEPT_TYPES) */
const KEPT_BECAUSE: Readonly<Record<string, string>> = {
  'timestamp without time zone': 'the Bridge writes and reads it as UTC time',
};

function diffColumn(t: TableIR, col: ColumnIR, lc: LiveColumn, out: Out): void {
  const T = qualified(t.name);
  const C = quoteIdent(col.name);
  const where = `${t.name}.${col.name}`;
  if (lc.identity || lc.generated) {
    out.unsupported(`column ${where} is ${lc.identity ? 'an identity' : 'a generated'} column in the database; only plain columns are supported`);
    return;
  }
  const want = pgType(col);
  /** the column's type once the plan ran: the declared one, or a kept live one */
  let type = want;
  let liveDefault = lc.default;
  switch (compareTypes(lc.type, want)) {
    case 'same':
      break;
    case 'kept':
      type = lc.type;
      out.note(
        `${where} is ${lc.type} in the database where ${typeLabel(col)} (${want}) is declared: ${KEPT_BECAUSE[lc.type] ?? 'equivalent'} (kept as it is)`,
      );
      break;
    case 'widen':
      // PostgreSQL converts the default with the column: it stays
      out.add(Phase.AlterColumns, alterTypeSql(t.name, col.name, want), widening(where, lc.type, want));
      break;
    case 'cast':
      if (lc.default !== null)
        out.add(Phase.AlterColumns, `ALTER TABLE ${T} ALTER COLUMN ${C} DROP DEFAULT`, `drop default of ${where} before its type change`, true);
      out.add(
        Phase.AlterColumns,
        alterTypeSql(t.name, col.name, want),
        `change type of ${where} from ${lc.type} to ${want} (fails if a value does not convert)`,
        true,
      );
      liveDefault = null;
      break;
    case 'unsupported':
      out.unsupported(
        `column ${where}: cannot change type from ${lc.type} to ${want} (${typeLabel(col)}): no safe cast; add a new column and migrate the data by hand, or drop and re-add it`,
      );
      return;
  }
  if (col.nullable && lc.notNull) out.add(Phase.AlterColumns, `ALTER TABLE ${T} ALTER COLUMN ${C} DROP NOT NULL`, `allow NULL in ${where}`);
  if (!col.nullable && !lc.notNull) {
    out.add(Phase.AlterColumns, `ALTER TABLE ${T} ALTER COLUMN ${C} SET NOT NULL`, `make ${where} NOT NULL (fails if it holds NULLs)`, true);
  }
  if (!defaultsEqual(col.default, liveDefault, col, type)) {
    if (col.default)
      out.add(Phase.AlterColumns, `ALTER TABLE ${T} ALTER COLUMN ${C} SET DEFAULT ${defaultSql(col.default, col, type)}`, `set default of ${where}`);
    else out.add(Phase.AlterColumns, `ALTER TABLE ${T} ALTER COLUMN ${C} DROP DEFAULT`, `drop default of ${where}`);
  }
}

/** Declared default vs the live default expression (on a column of `liveType`), compared by value for the column's type. */
export function defaultsEqual(d: DefaultIR | undefined, liveExpr: string | null, col: TypeSpec, liveType?: string): boolean {
  const live = parseLiveDefault(liveExpr, liveType);
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
      // timestamptz prints its offset (+00 in apply's UTC session); a timestamp without time zone holds UTC time
      let iso = live.text.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00');
      if (!/(Z|[+-]\d\d:\d\d)$/i.test(iso)) iso += 'Z';
      return Date.parse(iso) === Date.parse(want);
    }
    default:
      return live.text === want;
  }
}

/** Same columns and target, and actions equal or equivalent (fkActionsEquivalent); never a DEFERRABLE key. */
function fkMatches(fk: LiveForeignKey, col: ColumnIR): boolean {
  const r = col.references!;
  return (
    sameList(fk.columns, [col.name]) &&
    fk.refSchema === SCHEMA &&
    fk.refTable === r.table &&
    sameList(fk.refColumns, [r.column]) &&
    !fk.deferrable &&
    fkActionsEquivalent(fk.onDelete, r.onDelete, fk.deferrable) &&
    fkActionsEquivalent(fk.onUpdate, r.onUpdate, fk.deferrable)
  );
}

/** How a live FK with the declared column and target differs from the declaration. */
function fkDifference(fk: LiveForeignKey, col: ColumnIR): string {
  const r = col.references!;
  const why: string[] = [];
  if (fk.deferrable) why.push('it is DEFERRABLE, declared keys are not');
  for (const k of ['onDelete', 'onUpdate'] as const) {
    if (!fkActionsEquivalent(fk[k], r[k], fk.deferrable))
      why.push(`${k === 'onDelete' ? 'on delete' : 'on update'} ${fkActionSql(fk[k])} in the database, ${fkActionSql(r[k])} declared`);
  }
  return why.join('; ');
}

function indexMatches(li: LiveIndex, idx: Pick<IndexIR, 'columns' | 'unique'>): boolean {
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
