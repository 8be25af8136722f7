/**
 * Release IR → the in-memory form the Bridge executes. Done once when a release arrives, never per
 * request: column lookups are Maps, converters are prebuilt closures, select/returning lists are
 * precomputed strings, permission terms carry their quoted column and pre-converted literal values.
 */
import { WHERE_OPERATORS, type WhereOperator } from '../../protocol/call.js';
import type { ColumnIR, ConditionTerm, Op, PermissionRule, ReleaseIR, TableIR, TypeSpec } from '../../protocol/release.js';
import type { ColRef } from '../sql/build.js';
import { qualified, quoteIdent } from '../../common/quote-ident.js';
import { INVALID, converter, pgType, type Converter } from '../sql/values.js';

type WhereOp = WhereOperator;
export const WHERE_OPS: ReadonlySet<string> = new Set<WhereOp>(WHERE_OPERATORS);

const ORDERED_OPS: WhereOp[] = ['$eq', '$ne', '$gt', '$gte', '$lt', '$lte', '$in', '$notIn', '$isNull', '$isNotNull'];
const SCALAR_OPS: WhereOp[] = ['$eq', '$ne', '$in', '$notIn', '$isNull', '$isNotNull'];
const DOCUMENT_OPS: WhereOp[] = ['$eq', '$ne', '$isNull', '$isNotNull'];

export interface CompiledColumn extends ColRef {
  readonly name: string;
  readonly spec: TypeSpec;
  readonly nullable: boolean;
  readonly hasDefault: boolean;
  readonly isPk: boolean;
  /** position in `CompiledTable.columns` (the primary key is 0) */
  readonly index: number;
  /** non-null caller value → parameter text, or INVALID */
  readonly conv: Converter;
  /** where operators this column's type supports */
  readonly ops: ReadonlySet<string>;
}

export type RuleTerm = { col: CompiledColumn; kind: 'authSub' } | { col: CompiledColumn; kind: 'literal'; value: string | null };

export interface CompiledRule {
  /** position in the op's rule list (for messages/logs) */
  readonly index: number;
  readonly matchesAny: boolean;
  readonly matchesEndUser: boolean;
  readonly roles: readonly string[];
  readonly terms: readonly RuleTerm[];
  readonly conditionSource: string | null;
  /** null = every column */
  readonly allowed: ReadonlySet<string> | null;
  /** the table's columns this rule lets the caller see, in table order */
  readonly readable: readonly CompiledColumn[];
  readonly readableList: string;
  /** readable ∪ primary key: what insert/update return */
  readonly returning: readonly CompiledColumn[];
  readonly returningList: string;
}

export interface CompiledRelation {
  readonly as: string;
  readonly column: CompiledColumn;
  readonly target: CompiledTable;
  readonly targetColumn: CompiledColumn;
}

export interface CompiledTable {
  readonly name: string;
  readonly q: string;
  readonly connection: string;
  readonly pk: CompiledColumn;
  readonly generate: TableIR['primaryKey']['generate'];
  /** primary key first, then the declared columns in order */
  readonly columns: readonly CompiledColumn[];
  readonly byName: ReadonlyMap<string, CompiledColumn>;
  readonly relations: Map<string, CompiledRelation>;
  readonly rules: Readonly<Record<Op, readonly CompiledRule[]>>;
  /** the unrestricted rule used when STK_DISABLE_AUTH skips permission checks */
  readonly devRule: CompiledRule;
  /** non-null columns without a default that an insert must supply */
  readonly required: readonly CompiledColumn[];
}

export interface CompiledRelease {
  readonly releaseId: string;
  readonly tables: ReadonlyMap<string, CompiledTable>;
  /** `db/<table>/<op>` → table + op, so a request resolves its path with one Map lookup */
  readonly paths: ReadonlyMap<string, { table: CompiledTable; op: Op }>;
  /** connection names the schema uses */
  readonly connections: readonly string[];
}

function opsFor(spec: TypeSpec): ReadonlySet<string> {
  switch (spec.type) {
    case 'string':
      return new Set<string>([...ORDERED_OPS, '$like']);
    case 'int':
    case 'bigint':
    case 'float':
    case 'decimal':
    case 'timestamp':
      return new Set<string>(ORDERED_OPS);
    case 'boolean':
    case 'bytes':
      return new Set<string>(SCALAR_OPS);
    case 'json':
    case 'array':
      return new Set<string>(DOCUMENT_OPS);
  }
}

function column(c: ColumnIR | null, t: TableIR, index: number): CompiledColumn {
  if (c === null) {
    const spec: TypeSpec = { type: t.primaryKey.type === 'bigint' ? 'bigint' : 'string' };
    return {
      name: t.primaryKey.name,
      q: quoteIdent(t.primaryKey.name),
      cast: pgType(spec.type),
      spec,
      nullable: false,
      hasDefault: t.primaryKey.generate === 'auto_increment',
      isPk: true,
      index,
      conv: converter(spec),
      ops: opsFor(spec),
    };
  }
  const spec: TypeSpec = c.items ? { type: c.type, items: c.items } : { type: c.type };
  return {
    name: c.name,
    q: quoteIdent(c.name),
    cast: pgType(c.type),
    spec,
    nullable: c.nullable,
    hasDefault: c.default !== undefined,
    isPk: false,
    index,
    conv: converter(spec),
    ops: opsFor(spec),
  };
}

const list = (cols: readonly CompiledColumn[]) => cols.map((c) => c.q).join(', ');

function compileTerm(term: ConditionTerm, byName: ReadonlyMap<string, CompiledColumn>): RuleTerm | null {
  const col = byName.get(term.column);
  if (!col) return null;
  if (term.equals.kind === 'authSub') return { col, kind: 'authSub' };
  const v = col.conv(term.equals.value);
  // a literal that can never equal a value of this column's type: the rule matches no rows
  return { col, kind: 'literal', value: v === INVALID ? null : v };
}

function compileRule(
  r: PermissionRule,
  index: number,
  t: { columns: readonly CompiledColumn[]; byName: ReadonlyMap<string, CompiledColumn>; pk: CompiledColumn },
): CompiledRule {
  const everything = r.columns === null || r.columns.includes('*');
  const allowed = everything ? null : new Set(r.columns);
  const readable = allowed ? t.columns.filter((c) => allowed.has(c.name)) : t.columns;
  const returning = allowed && !allowed.has(t.pk.name) ? [t.pk, ...readable] : readable;
  const terms: RuleTerm[] = [];
  let impossible = false;
  for (const term of r.condition?.terms ?? []) {
    const ct = compileTerm(term, t.byName);
    if (!ct)
      impossible = true; // a term on a column the schema lacks can never hold
    else terms.push(ct);
  }
  if (impossible) terms.push({ col: t.pk, kind: 'literal', value: null });
  return {
    index,
    matchesAny: r.roles.includes('public'),
    matchesEndUser: r.roles.includes('authenticated'),
    roles: r.roles.filter((x) => x !== 'public' && x !== 'authenticated'),
    terms,
    conditionSource: r.condition?.source ?? null,
    allowed,
    readable,
    readableList: list(readable),
    returning,
    returningList: list(returning),
  };
}

/** Compiles a release. Throws only on an internally inconsistent IR (the Hub validated it). */
export function compileRelease(release: ReleaseIR): CompiledRelease {
  const tables = new Map<string, CompiledTable>();
  const pending: Array<{ table: CompiledTable; col: CompiledColumn; ref: NonNullable<ColumnIR['references']> }> = [];
  for (const t of Object.values(release.schema.tables)) {
    const pk = column(null, t, 0);
    const columns = [pk, ...t.columns.filter((c) => c.name !== pk.name).map((c, i) => column(c, t, i + 1))];
    const byName = new Map(columns.map((c) => [c.name, c]));
    const shape = { columns, byName, pk };
    const ops = release.permissions.tables[t.name] ?? {};
    const rules = {
      select: (ops.select ?? []).map((r, i) => compileRule(r, i, shape)),
      insert: (ops.insert ?? []).map((r, i) => compileRule(r, i, shape)),
      update: (ops.update ?? []).map((r, i) => compileRule(r, i, shape)),
      delete: (ops.delete ?? []).map((r, i) => compileRule(r, i, shape)),
    };
    const table: CompiledTable = {
      name: t.name,
      q: qualified(t.name),
      connection: t.connection,
      pk,
      generate: t.primaryKey.generate,
      columns,
      byName,
      relations: new Map(),
      rules,
      devRule: compileRule({ roles: [], columns: null }, -1, shape),
      required: columns.filter((c) => !c.isPk && !c.nullable && !c.hasDefault),
    };
    tables.set(t.name, table);
    for (const c of t.columns) {
      const col = byName.get(c.name);
      if (c.references && col) pending.push({ table, col, ref: c.references });
    }
  }
  for (const p of pending) {
    const target = tables.get(p.ref.table);
    if (!target || target.connection !== p.table.connection) continue; // expand is same-connection only
    const targetColumn = target.byName.get(p.ref.column);
    if (!targetColumn) continue;
    const as = p.ref.as || target.name;
    if (p.table.relations.has(as)) continue;
    p.table.relations.set(as, { as, column: p.col, target, targetColumn });
  }
  const paths = new Map<string, { table: CompiledTable; op: Op }>();
  for (const table of tables.values()) {
    for (const op of ['select', 'insert', 'update', 'delete'] as const) paths.set(`db/${table.name}/${op}`, { table, op });
  }
  const connections = [...new Set([...release.connections, ...[...tables.values()].map((t) => t.connection)])];
  return { releaseId: release.releaseId, tables, paths, connections };
}
