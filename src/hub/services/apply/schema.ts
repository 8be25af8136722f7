import {
  COLUMN_TYPES,
  FK_ACTIONS,
  ID_GENERATORS,
  type ColumnIR,
  type ColumnType,
  type DefaultIR,
  type FkAction,
  type IdGenerator,
  type IndexIR,
  type PrimaryKeyIR,
  type SchemaIR,
  type TableIR,
  type TypeSpec,
} from '../../../protocol/release.js';
import { IDENT_RE, NAME_RE } from '../../../protocol/names.js';
import { Problems, isPlainObject, own, parseYaml, show, unknownKeys } from './problems.js';
import { indexName, pgType, pkPgType, pkeyName, uniqueName } from './sql.js';

/**
 * `schema/*.yaml` → SchemaIR. Validates everything before any database is touched; every error
 * names the file, the table and the column. See docs/schema.md.
 *
 * Decisions the spec leaves open:
 * - a column without `nullable` is NOT NULL (`nullable: false`); write `nullable: true` for optional columns;
 * - `default: now` means now() on timestamp columns only (elsewhere it is the literal string "now");
 * - `references.onDelete`/`onUpdate` default to `restrict`;
 * - the table's connection defaults to `main`.
 */
export interface SchemaFile {
  file: string;
  content: string;
}

const TOP_KEYS = ['version', 'tables'] as const;
const TABLE_KEYS = ['connection', 'id', 'columns', 'indexes'] as const;
const ID_KEYS = ['name', 'generate', 'type'] as const;
const COLUMN_KEYS = ['type', 'items', 'nullable', 'unique', 'default', 'references'] as const;
const REF_KEYS = ['table', 'column', 'as', 'onDelete', 'onUpdate'] as const;
const INDEX_KEYS = ['columns', 'unique', 'name'] as const;
const MAX_ARRAY_DEPTH = 5;

/** Names that would collide with JavaScript object internals in the IR. */
const FORBIDDEN_NAMES = new Set(['__proto__']);

function identError(kind: string, name: string): string | null {
  if (!IDENT_RE.test(name)) return `invalid ${kind} name ${show(name)}: use letters, digits and '_', starting with a letter or '_', at most 63 characters`;
  if (FORBIDDEN_NAMES.has(name)) return `${kind} name ${show(name)} is reserved`;
  return null;
}

interface Located {
  file: string;
  table: TableIR;
  /** raw column references, resolved in the second pass */
  refs: Map<string, Record<string, unknown>>;
}

export function parseSchema(files: SchemaFile[]): SchemaIR {
  const problems = new Problems();
  if (files.length === 0) {
    problems.add('no schema files: put table definitions in schema/*.yaml');
    problems.fail('invalid schema');
  }
  const byName = new Map<string, Located>();
  for (const f of files) {
    const parsed = parseYaml(f.file, f.content, problems);
    if (!parsed.ok) continue;
    const doc = parsed.value;
    if (doc === null || doc === undefined) {
      problems.add(`${f.file}: empty file (expected "version: 1" and "tables:")`);
      continue;
    }
    if (!isPlainObject(doc)) {
      problems.add(`${f.file}: expected a mapping with "version: 1" and "tables:"`);
      continue;
    }
    for (const k of unknownKeys(doc, TOP_KEYS)) problems.add(`${f.file}: unknown top-level key ${show(k)} (allowed: ${TOP_KEYS.join(', ')})`);
    const version = own(doc, 'version');
    if (version !== undefined && version !== 1) problems.add(`${f.file}: unsupported version ${show(version)} (only version: 1)`);
    const tables = own(doc, 'tables');
    if (!isPlainObject(tables)) {
      problems.add(`${f.file}: "tables" must be a mapping of table name to definition`);
      continue;
    }
    for (const [name, def] of Object.entries(tables)) {
      const where = `${f.file}: table ${show(name)}`;
      const err = identError('table', name);
      if (err) {
        problems.add(`${f.file}: ${err}`);
        continue;
      }
      const prev = byName.get(name);
      if (prev) {
        problems.add(`table ${show(name)} is defined twice: in ${prev.file} and in ${f.file}`);
        continue;
      }
      const t = parseTable(name, def, where, problems);
      if (t) byName.set(name, { file: f.file, ...t });
    }
  }

  resolveReferences(byName, problems);
  checkRelationNames(byName, problems);
  problems.failIfAny('invalid schema');
  return { tables: Object.fromEntries([...byName.entries()].map(([n, l]) => [n, l.table])) };
}

function parseTable(name: string, def: unknown, where: string, problems: Problems): Omit<Located, 'file'> | undefined {
  if (!isPlainObject(def)) {
    problems.add(`${where}: expected a mapping with connection, id, columns, indexes`);
    return undefined;
  }
  for (const k of unknownKeys(def, TABLE_KEYS)) problems.add(`${where}: unknown key ${show(k)} (allowed: ${TABLE_KEYS.join(', ')})`);

  let connection = 'main';
  const conn = own(def, 'connection');
  if (conn !== undefined) {
    if (typeof conn !== 'string' || !NAME_RE.test(conn)) problems.add(`${where}: invalid connection name ${show(conn)}`);
    else connection = conn;
  }

  const primaryKey = parsePrimaryKey(own(def, 'id'), where, problems);

  const columns: ColumnIR[] = [];
  const refs = new Map<string, Record<string, unknown>>();
  const rawCols = own(def, 'columns');
  if (rawCols !== undefined && rawCols !== null && !isPlainObject(rawCols)) {
    problems.add(`${where}: "columns" must be a mapping of column name to definition`);
  } else if (rawCols) {
    for (const [cname, cdef] of Object.entries(rawCols)) {
      const cwhere = `${where}, column ${show(cname)}`;
      const err = identError('column', cname);
      if (err) {
        problems.add(`${where}: ${err}`);
        continue;
      }
      if (cname === primaryKey.name) {
        problems.add(`${cwhere}: this is the primary key; declare it under "id" only, not under "columns"`);
        continue;
      }
      const c = parseColumn(cname, cdef, cwhere, problems);
      if (!c) continue;
      columns.push(c.column);
      if (c.ref) refs.set(cname, c.ref);
    }
  }

  const indexes: IndexIR[] = [];
  const rawIdx = own(def, 'indexes');
  const colNames = new Set([primaryKey.name, ...columns.map((c) => c.name)]);
  if (rawIdx !== undefined && rawIdx !== null) {
    if (!Array.isArray(rawIdx)) problems.add(`${where}: "indexes" must be a list of {columns: [...], unique: bool}`);
    else
      rawIdx.forEach((raw, i) => {
        const iwhere = `${where}, index #${i + 1}`;
        const idx = parseIndex(name, raw, iwhere, colNames, problems);
        if (idx) indexes.push(idx);
      });
  }
  const seen = new Map<string, number>();
  indexes.forEach((idx, i) => {
    const key = `${idx.unique}:${idx.columns.join(',')}`;
    if (seen.has(key)) problems.add(`${where}: index #${i + 1} repeats index #${seen.get(key)! + 1} (same columns)`);
    else seen.set(key, i);
  });

  return { table: { name, connection, primaryKey, columns, indexes }, refs };
}

function parsePrimaryKey(raw: unknown, where: string, problems: Problems): PrimaryKeyIR {
  const pk: PrimaryKeyIR = { name: 'id', type: 'string', generate: 'ulid' };
  if (raw === undefined || raw === null) return pk;
  const w = `${where}, id`;
  if (!isPlainObject(raw)) {
    problems.add(`${w}: expected a mapping {name, generate, type} (a composite primary key is not supported)`);
    return pk;
  }
  for (const k of unknownKeys(raw, ID_KEYS)) problems.add(`${w}: unknown key ${show(k)} (allowed: ${ID_KEYS.join(', ')})`);
  const name = own(raw, 'name');
  if (name !== undefined) {
    const err = typeof name === 'string' ? identError('primary key column', name) : `invalid primary key column name ${show(name)}`;
    if (err) problems.add(`${w}: ${err}`);
    else pk.name = name as string;
  }
  const gen = own(raw, 'generate');
  if (gen !== undefined) {
    if (typeof gen !== 'string' || !(ID_GENERATORS as readonly string[]).includes(gen)) {
      problems.add(`${w}: unknown generate ${show(gen)} (use one of ${ID_GENERATORS.join(', ')})`);
    } else pk.generate = gen as IdGenerator;
  }
  const type = own(raw, 'type');
  if (pk.generate === 'auto_increment') {
    pk.type = 'bigint';
    if (type !== undefined && type !== 'bigint') problems.add(`${w}: generate auto_increment always has type bigint (got ${show(type)})`);
  } else if (pk.generate === 'client') {
    if (type === undefined || type === 'string') pk.type = 'string';
    else if (type === 'bigint') pk.type = 'bigint';
    else problems.add(`${w}: generate client allows type string or bigint (got ${show(type)})`);
  } else if (type !== undefined && type !== 'string') {
    problems.add(`${w}: generate ${pk.generate} always has type string (got ${show(type)})`);
  }
  return pk;
}

function parseType(raw: unknown, items: unknown, w: string, problems: Problems, depth = 0): TypeSpec | undefined {
  if (raw === 'file') {
    problems.add(`${w}: type "file" is not supported yet (use string for a storage path)`);
    return undefined;
  }
  if (typeof raw !== 'string' || !(COLUMN_TYPES as readonly string[]).includes(raw)) {
    problems.add(`${w}: unknown type ${show(raw)} (use one of ${COLUMN_TYPES.join(', ')})`);
    return undefined;
  }
  const type = raw as ColumnType;
  if (type !== 'array') {
    if (items !== undefined) problems.add(`${w}: "items" is only allowed on type array`);
    return { type };
  }
  if (depth >= MAX_ARRAY_DEPTH) {
    problems.add(`${w}: arrays nest at most ${MAX_ARRAY_DEPTH} deep`);
    return undefined;
  }
  if (items === undefined || items === null) {
    problems.add(`${w}: type array needs "items" (e.g. items: string)`);
    return undefined;
  }
  let inner: TypeSpec | undefined;
  if (typeof items === 'string') inner = parseType(items, undefined, `${w}, items`, problems, depth + 1);
  else if (isPlainObject(items)) {
    for (const k of unknownKeys(items, ['type', 'items'])) problems.add(`${w}, items: unknown key ${show(k)} (allowed: type, items)`);
    inner = parseType(own(items, 'type'), own(items, 'items'), `${w}, items`, problems, depth + 1);
  } else problems.add(`${w}: "items" must be a type name or {type, items}`);
  return inner ? { type, items: inner } : undefined;
}

function parseColumn(name: string, def: unknown, w: string, problems: Problems): { column: ColumnIR; ref?: Record<string, unknown> } | undefined {
  if (!isPlainObject(def)) {
    problems.add(`${w}: expected a mapping such as {type: string}`);
    return undefined;
  }
  for (const k of unknownKeys(def, COLUMN_KEYS)) problems.add(`${w}: unknown key ${show(k)} (allowed: ${COLUMN_KEYS.join(', ')})`);
  const spec = parseType(own(def, 'type'), own(def, 'items'), w, problems);
  const nullable = own(def, 'nullable');
  const unique = own(def, 'unique');
  if (nullable !== undefined && typeof nullable !== 'boolean') problems.add(`${w}: "nullable" must be true or false (got ${show(nullable)})`);
  if (unique !== undefined && typeof unique !== 'boolean') problems.add(`${w}: "unique" must be true or false (got ${show(unique)})`);
  if (!spec) return undefined;
  const column: ColumnIR = { name, ...spec, nullable: nullable === true, unique: unique === true };
  if (column.unique && (spec.type === 'json' || spec.type === 'array')) {
    // jsonb equality works but a unique index on documents is almost always a mistake; keep it explicit
    problems.add(`${w}: unique is not supported on ${spec.type} columns`);
  }
  const rawDefault = own(def, 'default');
  if (rawDefault !== undefined) {
    const d = parseDefault(rawDefault, spec, w, problems);
    if (d) column.default = d;
  }
  const ref = own(def, 'references');
  if (ref !== undefined) {
    if (!isPlainObject(ref)) {
      problems.add(`${w}: "references" must be a mapping {table, column, as, onDelete, onUpdate}`);
      return { column };
    }
    return { column, ref };
  }
  return { column };
}

const INT32 = { min: -2147483648, max: 2147483647 };
const BIGINT_RE = /^-?\d{1,19}$/;
const DECIMAL_RE = /^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/;

function parseDefault(raw: unknown, spec: TypeSpec, w: string, problems: Problems): DefaultIR | undefined {
  const bad = (why: string) => {
    problems.add(`${w}: invalid default ${show(raw)}: ${why}`);
    return undefined;
  };
  if (raw === null) return bad('use nullable: true instead of a null default');
  if (raw instanceof Date) raw = raw.toISOString(); // YAML 1.1 timestamps (not produced by the core schema, but be safe)
  switch (spec.type) {
    case 'timestamp':
      if (raw === 'now') return { kind: 'now' };
      if (typeof raw === 'string' && /^\d{4}-\d\d-\d\d/.test(raw) && !Number.isNaN(Date.parse(raw)))
        return { kind: 'literal', value: new Date(raw).toISOString() };
      return bad('a timestamp default is `now` or an ISO-8601 date-time string');
    case 'string':
      if (typeof raw === 'string') return { kind: 'literal', value: raw };
      return bad('a string column needs a string default (quote it in YAML)');
    case 'boolean':
      if (typeof raw === 'boolean') return { kind: 'literal', value: raw };
      return bad('a boolean column needs true or false');
    case 'int':
      if (typeof raw === 'number' && Number.isInteger(raw) && raw >= INT32.min && raw <= INT32.max) return { kind: 'literal', value: raw };
      return bad('an int column needs a whole number within 32 bits');
    case 'bigint':
      if (typeof raw === 'number' && Number.isSafeInteger(raw)) return { kind: 'literal', value: raw };
      if (typeof raw === 'string' && BIGINT_RE.test(raw) && BigInt(raw) <= 9223372036854775807n && BigInt(raw) >= -9223372036854775808n) {
        return { kind: 'literal', value: raw };
      }
      return bad('a bigint column needs a whole number (as a string when beyond 2^53)');
    case 'float':
      if (typeof raw === 'number' && Number.isFinite(raw)) return { kind: 'literal', value: raw };
      return bad('a float column needs a finite number');
    case 'decimal':
      if (typeof raw === 'number' && Number.isFinite(raw)) return { kind: 'literal', value: raw };
      if (typeof raw === 'string' && DECIMAL_RE.test(raw)) return { kind: 'literal', value: raw };
      return bad('a decimal column needs a number or a numeric string');
    default:
      return bad(`defaults are not supported on ${spec.type} columns`);
  }
}

function parseIndex(table: string, raw: unknown, w: string, cols: Set<string>, problems: Problems): IndexIR | undefined {
  if (!isPlainObject(raw)) {
    problems.add(`${w}: expected {columns: [...], unique: bool}`);
    return undefined;
  }
  for (const k of unknownKeys(raw, INDEX_KEYS)) problems.add(`${w}: unknown key ${show(k)} (allowed: ${INDEX_KEYS.join(', ')})`);
  const columns = own(raw, 'columns');
  const unique = own(raw, 'unique');
  const name = own(raw, 'name');
  let ok = true;
  if (!Array.isArray(columns) || columns.length === 0 || !columns.every((c) => typeof c === 'string')) {
    problems.add(`${w}: "columns" must be a non-empty list of column names`);
    return undefined;
  }
  for (const c of columns as string[]) {
    if (!cols.has(c)) {
      problems.add(`${w}: unknown column ${show(c)}`);
      ok = false;
    }
  }
  if (new Set(columns).size !== columns.length) {
    problems.add(`${w}: a column is listed twice`);
    ok = false;
  }
  if (unique !== undefined && typeof unique !== 'boolean') {
    problems.add(`${w}: "unique" must be true or false`);
    ok = false;
  }
  let idxName = indexName(table, columns as string[], unique === true);
  if (name !== undefined) {
    const err = typeof name === 'string' ? identError('index', name) : `invalid index name ${show(name)}`;
    if (err) {
      problems.add(`${w}: ${err}`);
      ok = false;
    } else idxName = name as string;
  }
  return ok ? { name: idxName, columns: columns as string[], unique: unique === true } : undefined;
}

function resolveReferences(byName: Map<string, Located>, problems: Problems): void {
  for (const [tname, loc] of byName) {
    const relationNames = new Map<string, string>();
    for (const col of loc.table.columns) {
      const raw = loc.refs.get(col.name);
      if (!raw) continue;
      const w = `${loc.file}: table ${show(tname)}, column ${show(col.name)}, references`;
      for (const k of unknownKeys(raw, REF_KEYS)) problems.add(`${w}: unknown key ${show(k)} (allowed: ${REF_KEYS.join(', ')})`);
      const target = own(raw, 'table');
      if (typeof target !== 'string' || !target) {
        problems.add(`${w}: "table" is required`);
        continue;
      }
      const tgt = byName.get(target);
      if (!tgt) {
        problems.add(`${w}: unknown table ${show(target)}`);
        continue;
      }
      if (tgt.table.connection !== loc.table.connection) {
        problems.add(
          `${w}: table ${show(target)} lives on connection ${show(tgt.table.connection)}, not ${show(loc.table.connection)} (foreign keys cannot cross connections)`,
        );
        continue;
      }
      const rawCol = own(raw, 'column');
      const targetCol = rawCol === undefined ? tgt.table.primaryKey.name : rawCol;
      if (typeof targetCol !== 'string') {
        problems.add(`${w}: "column" must be a column name`);
        continue;
      }
      let targetType: string | undefined;
      let targetUnique = false;
      if (targetCol === tgt.table.primaryKey.name) {
        targetType = pkPgType(tgt.table.primaryKey);
        targetUnique = true;
      } else {
        const tc = tgt.table.columns.find((c) => c.name === targetCol);
        if (tc) {
          targetType = pgType(tc);
          targetUnique = tc.unique || tgt.table.indexes.some((i) => i.unique && i.columns.length === 1 && i.columns[0] === targetCol);
        }
      }
      if (!targetType) {
        problems.add(`${w}: table ${show(target)} has no column ${show(targetCol)}`);
        continue;
      }
      if (!targetUnique) {
        problems.add(`${w}: ${target}.${targetCol} must be the primary key or unique to be referenced`);
        continue;
      }
      if (targetType !== pgType(col)) {
        problems.add(`${w}: type mismatch: this column is ${col.type} (${pgType(col)}) but ${target}.${targetCol} is ${targetType}`);
        continue;
      }
      const as = own(raw, 'as') ?? target;
      if (typeof as !== 'string' || identError('relation', as)) {
        problems.add(`${w}: invalid "as" ${show(as)}: use letters, digits and '_'`);
        continue;
      }
      const clash = relationNames.get(as);
      if (clash) {
        problems.add(`${w}: relation name ${show(as)} is already used by column ${show(clash)}; give one of them a distinct "as"`);
        continue;
      }
      relationNames.set(as, col.name);
      const onDelete = fkAction(own(raw, 'onDelete'), `${w}, onDelete`, problems);
      const onUpdate = fkAction(own(raw, 'onUpdate'), `${w}, onUpdate`, problems);
      if (!onDelete || !onUpdate) continue;
      for (const [k, a] of [
        ['onDelete', onDelete],
        ['onUpdate', onUpdate],
      ] as const) {
        if (a === 'set_null' && !col.nullable) problems.add(`${w}: ${k}: set_null needs the column to be nullable: true`);
        if (a === 'set_default' && !col.default && !col.nullable) problems.add(`${w}: ${k}: set_default needs a default on the column`);
      }
      col.references = { table: target, column: targetCol, as, onDelete, onUpdate };
    }
  }
}

function fkAction(raw: unknown, w: string, problems: Problems): FkAction | undefined {
  if (raw === undefined) return 'restrict';
  if (typeof raw === 'string' && (FK_ACTIONS as readonly string[]).includes(raw)) return raw as FkAction;
  problems.add(`${w}: unknown action ${show(raw)} (use one of ${FK_ACTIONS.join(', ')})`);
  return undefined;
}

/** Tables, indexes and UNIQUE constraints share one namespace per database schema: names must not collide. */
function checkRelationNames(byName: Map<string, Located>, problems: Problems): void {
  const perConn = new Map<string, Map<string, string>>();
  const claim = (conn: string, name: string, what: string) => {
    let m = perConn.get(conn);
    if (!m) perConn.set(conn, (m = new Map<string, string>()));
    const prev = m.get(name);
    if (prev) problems.add(`name clash on connection ${show(conn)}: ${what} and ${prev} are both named ${show(name)}`);
    else m.set(name, what);
  };
  for (const [tname, { file, table }] of byName) {
    claim(table.connection, tname, `table ${show(tname)} (${file})`);
    claim(table.connection, pkeyName(tname), `the primary key of ${show(tname)}`);
    for (const c of table.columns) if (c.unique) claim(table.connection, uniqueName(tname, c.name), `the unique constraint of ${tname}.${c.name}`);
    for (const i of table.indexes) claim(table.connection, i.name, `index (${i.columns.join(', ')}) of ${show(tname)} (${file})`);
  }
}
