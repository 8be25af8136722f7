/**
 * Caller params → plan nodes, validated against the compiled schema and the winning permission rule.
 * Pure (no I/O): everything here is unit-testable without a database. Caller-given names are only
 * ever used as Map keys into the schema; what reaches SQL is the schema's own quoted identifier.
 * Every failure is a 400 naming the offending parameter/column, except permission failures (403).
 */
import { CALL_PARAMS } from '../../protocol/call.js';
import { type AppError, badRequest, forbidden } from '../../protocol/errors.js';
import type { Op } from '../../protocol/release.js';
import type { Principal } from '../context.js';
import { appendRuleFilter, authorize, canRead, canWrite, termValue } from '../permissions/index.js';
import type { CompiledColumn, CompiledRelation, CompiledRule, CompiledTable } from '../release-cache/compile.js';
import { WHERE_OPS } from '../release-cache/compile.js';
import {
  DEFAULT,
  type CmpOp,
  type Cond,
  type InsertPlan,
  type InsertValue,
  type OrderTerm,
  type SelectPlan,
  type UpdatePlan,
  type DeletePlan,
} from './build.js';
import { idGenerator } from './ids.js';
import { INVALID, arrayLiteral, typeLabel } from './values.js';

export const LIMITS = {
  whereConditions: 50,
  inItems: 1000,
  insertRows: 1000,
  /** PostgreSQL's bind-parameter limit is 65,535 per statement */
  parameters: 65000,
} as const;

const PARAMS_BY_OP: Record<Op, ReadonlySet<string>> = {
  select: new Set(CALL_PARAMS.select),
  insert: new Set(CALL_PARAMS.insert),
  update: new Set(CALL_PARAMS.update),
  delete: new Set(CALL_PARAMS.delete),
};

const CMP: Record<string, CmpOp> = { $eq: '=', $ne: '<>', $gt: '>', $gte: '>=', $lt: '<', $lte: '<=' };

type Obj = Record<string, unknown>;
const isObject = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const hasOwn = Object.prototype.hasOwnProperty;

/** Rejects params the op does not know (a typo must not silently widen a query). */
export function checkParamNames(op: Op, params: Obj): void {
  const allowed = PARAMS_BY_OP[op];
  for (const k in params) {
    if (hasOwn.call(params, k) && !allowed.has(k)) throw badRequest(`unknown parameter '${k}' for ${op}; allowed: ${[...allowed].join(', ')}`);
  }
}

function columnOf(table: CompiledTable, name: string, where: string): CompiledColumn {
  const col = table.byName.get(name);
  if (!col) throw badRequest(`${where}: unknown column '${name}' in table '${table.name}'`);
  return col;
}

function convert(col: CompiledColumn, v: unknown, where: string): string {
  const out = col.conv(v);
  if (out === INVALID) throw badRequest(`${where}: column '${col.name}' expects ${typeLabel(col.spec)}`);
  return out;
}

/** A column may appear in a filter or ordering if the rule lets the caller read it; the primary key always may. */
function checkFilterable(rule: CompiledRule, col: CompiledColumn, where: string): void {
  if (!col.isPk && !canRead(rule, col))
    throw badRequest(`${where}: column '${col.name}' is outside this credential's column allow-list and cannot be filtered or sorted on`);
}

/**
 * Appends the caller's where conditions to `out`. Equality: `{col: value}` (null → IS NULL);
 * operators: `{col: {$op: value, …}}`. For json/array columns an object without `$` keys is a value.
 */
export function parseWhere(table: CompiledTable, rule: CompiledRule, where: unknown, out: Cond[], requireNonEmpty: boolean): void {
  if (where === undefined || where === null) {
    if (requireNonEmpty) throw badRequest('where is required and must not be empty (refusing to touch every row)');
    return;
  }
  if (!isObject(where)) throw badRequest('where must be an object of column conditions');
  let count = 0;
  for (const name in where) {
    if (!hasOwn.call(where, name)) continue;
    const col = columnOf(table, name, 'where');
    checkFilterable(rule, col, 'where');
    const v = where[name];
    const path = `where.${name}`;
    if (v === null) {
      out.push({ k: 'null', col, negate: false });
      count++;
    } else if (isObject(v) && !(isDocument(col) && !hasOperatorKey(v))) {
      let n = 0;
      for (const op in v) {
        if (!hasOwn.call(v, op)) continue;
        n++;
        appendOperator(col, op, v[op], `${path}.${op}`, out);
      }
      if (n === 0) throw badRequest(`${path}: empty condition object; use a value or an operator such as $eq`);
      count += n;
    } else {
      if (Array.isArray(v) && !isDocument(col)) throw badRequest(`${path}: an array is not a ${col.spec.type} value; use {"$in": [...]}`);
      out.push({ k: 'cmp', col, op: '=', value: convert(col, v, path) });
      count++;
    }
    if (count > LIMITS.whereConditions) throw badRequest(`where has more than ${LIMITS.whereConditions} conditions`);
  }
  if (requireNonEmpty && count === 0) throw badRequest('where is required and must not be empty (refusing to touch every row)');
}

const isDocument = (col: CompiledColumn) => col.spec.type === 'json' || col.spec.type === 'array';

function hasOperatorKey(v: Obj): boolean {
  for (const k in v) if (k.charCodeAt(0) === 36 /* $ */) return true;
  return false;
}

function appendOperator(col: CompiledColumn, op: string, v: unknown, path: string, out: Cond[]): void {
  if (!WHERE_OPS.has(op)) throw badRequest(`${path}: unknown operator '${op}'; supported: ${[...WHERE_OPS].join(' ')}`);
  if (!col.ops.has(op)) throw badRequest(`${path}: operator ${op} is not supported for ${col.spec.type} column '${col.name}'`);
  switch (op) {
    case '$isNull':
    case '$isNotNull':
      if (typeof v !== 'boolean') throw badRequest(`${path}: expects true or false`);
      out.push({ k: 'null', col, negate: (op === '$isNotNull') === v });
      return;
    case '$in':
    case '$notIn': {
      if (!Array.isArray(v) || v.length === 0) throw badRequest(`${path}: expects a non-empty array`);
      if (v.length > LIMITS.inItems) throw badRequest(`${path}: at most ${LIMITS.inItems} items`);
      const items = new Array<string>(v.length);
      for (let i = 0; i < v.length; i++) {
        const x: unknown = v[i];
        if (x === null || typeof x === 'object') throw badRequest(`${path}: items must be non-null scalars`);
        items[i] = convert(col, x, path);
      }
      out.push({ k: 'any', col, negate: op === '$notIn', value: arrayLiteral(items) });
      return;
    }
    case '$like':
      if (typeof v !== 'string') throw badRequest(`${path}: expects a string pattern`);
      out.push({ k: 'like', col, value: convert(col, v, path) });
      return;
    default: {
      const cmp = CMP[op]!;
      if (v === null) {
        if (op === '$eq' || op === '$ne') {
          out.push({ k: 'null', col, negate: op === '$ne' });
          return;
        }
        throw badRequest(`${path}: null cannot be compared; use $isNull`);
      }
      if (Array.isArray(v) && !isDocument(col)) throw badRequest(`${path}: expects a single ${col.spec.type} value`);
      out.push({ k: 'cmp', col, op: cmp, value: convert(col, v, path) });
    }
  }
}

function nonNegativeInt(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw badRequest(`${name} must be a non-negative integer`);
  return v;
}

export interface SelectRequest {
  plan: SelectPlan;
  /** relations to expand after the main query */
  expand: CompiledRelation[];
  /** columns fetched only to resolve `expand`, removed from the rows before answering */
  strip: string[];
  /** without a caller limit the query asks for one row more than the cap, to detect an oversized result */
  capped: boolean;
}

/** Validates select params into a plan. `maxRows` is STK_SELECT_MAX_ROWS. */
export function planSelect(table: CompiledTable, rule: CompiledRule, principal: Principal, params: Obj, maxRows: number): SelectRequest {
  const where: Cond[] = [];
  appendRuleFilter(rule, principal, where);
  parseWhere(table, rule, params.where, where, false);

  let columns: readonly CompiledColumn[] = rule.readable;
  let list = rule.readableList;
  const sel = params.select;
  if (sel !== undefined && sel !== '*') {
    if (!Array.isArray(sel) || sel.length === 0) throw badRequest('select must be "*" or a non-empty array of column names');
    const wanted = new Set<string>();
    for (const name of sel) {
      if (typeof name !== 'string') throw badRequest('select must contain column names (strings)');
      if (name === '*') {
        for (const c of rule.readable) wanted.add(c.name);
        continue;
      }
      const col = columnOf(table, name, 'select');
      if (canRead(rule, col)) wanted.add(col.name); // disallowed columns are dropped silently
    }
    columns = table.columns.filter((c) => wanted.has(c.name));
    list = columns.map((c) => c.q).join(', ');
  }

  const expand: CompiledRelation[] = [];
  const strip: string[] = [];
  if (params.expand !== undefined) {
    const ex = typeof params.expand === 'string' ? [params.expand] : params.expand;
    if (!Array.isArray(ex)) throw badRequest('expand must be an array of relation names');
    for (const name of ex) {
      if (typeof name !== 'string') throw badRequest('expand must contain relation names (strings)');
      const rel = table.relations.get(name);
      if (!rel) {
        const known = [...table.relations.keys()];
        throw badRequest(
          `expand: unknown relation '${name}' on table '${table.name}'${known.length ? `; known: ${known.join(', ')}` : ' (it has no relations)'}`,
        );
      }
      if (expand.includes(rel)) continue;
      if (!canRead(rule, rel.column)) throw forbidden(`expand '${name}' needs column '${rel.column.name}', which is not readable for this credential`);
      const target = authorize(principal, rel.target, 'select');
      if (!target.ok) throw forbidden(`expand '${name}': ${target.reason}`);
      if (!columns.includes(rel.column)) {
        strip.push(rel.column.name);
        columns = [...columns, rel.column];
        list = list ? `${list}, ${rel.column.q}` : rel.column.q;
      }
      expand.push(rel);
    }
  }

  const orderBy: OrderTerm[] = [];
  if (params.orderBy !== undefined) {
    const terms = Array.isArray(params.orderBy) ? params.orderBy : [params.orderBy];
    for (const term of terms) {
      if (!isObject(term)) throw badRequest('orderBy must be an object {column: "asc"|"desc"} (or an array of them)');
      for (const name in term) {
        if (!hasOwn.call(term, name)) continue;
        const col = columnOf(table, name, 'orderBy');
        checkFilterable(rule, col, 'orderBy');
        const dir = term[name];
        const d = typeof dir === 'string' ? dir.toLowerCase() : dir;
        if (d !== 'asc' && d !== 'desc') throw badRequest(`orderBy.${name}: direction must be "asc" or "desc"`);
        if (isDocument(col)) throw badRequest(`orderBy.${name}: cannot sort on ${col.spec.type} column`);
        orderBy.push({ col, desc: d === 'desc' });
      }
    }
  }

  let limit: number | null = null;
  let capped = false;
  if (params.limit !== undefined && params.limit !== null) {
    limit = nonNegativeInt(params.limit, 'limit');
    if (limit > maxRows) throw badRequest(`limit must be at most ${maxRows}`);
  } else {
    limit = maxRows + 1;
    capped = true;
  }
  const offset = params.offset !== undefined && params.offset !== null ? nonNegativeInt(params.offset, 'offset') : null;

  return { plan: { table: table.q, list, where, orderBy, limit, offset }, expand, strip, capped };
}

/** The rule's row filter for an expand target, plus `targetColumn = ANY(values)`. */
export function planExpand(rel: CompiledRelation, principal: Principal, values: string[]): { plan: SelectPlan; strip: boolean } {
  const d = authorize(principal, rel.target, 'select');
  if (!d.ok) throw forbidden(`expand '${rel.as}': ${d.reason}`);
  const rule = d.rule;
  const where: Cond[] = [];
  appendRuleFilter(rule, principal, where);
  where.push({ k: 'any', col: rel.targetColumn, negate: false, value: arrayLiteral(values) });
  const readable = canRead(rule, rel.targetColumn);
  const list = readable ? rule.readableList : rule.readableList ? `${rule.readableList}, ${rel.targetColumn.q}` : rel.targetColumn.q;
  return { plan: { table: rel.target.q, list, where, orderBy: [], limit: null, offset: null }, strip: !readable };
}

function checkWritable(rule: CompiledRule, col: CompiledColumn, path: string): void {
  if (!canWrite(rule, col)) throw badRequest(`${path}: column '${col.name}' is not writable for this credential`);
}

function ruleViolation(rule: CompiledRule, table: CompiledTable, op: Op): AppError {
  return forbidden(`row does not satisfy the ${op} condition of table '${table.name}'${rule.conditionSource ? ` (${rule.conditionSource})` : ''}`);
}

/** Validates insert data (one object or an array of up to 1,000) into a plan. */
export function planInsert(table: CompiledTable, rule: CompiledRule, principal: Principal, params: Obj): { plan: InsertPlan; many: boolean } {
  if (params.data !== undefined && params.values !== undefined) throw badRequest('send either data or values (an alias), not both');
  const data = params.data !== undefined ? params.data : params.values;
  if (data === undefined || data === null) throw badRequest('insert needs data: an object or an array of objects');
  const many = Array.isArray(data);
  const rows = many ? (data as unknown[]) : [data];
  if (rows.length === 0) throw badRequest('data must not be an empty array');
  if (rows.length > LIMITS.insertRows) throw badRequest(`at most ${LIMITS.insertRows} rows per insert`);

  const gen = idGenerator(table.generate);
  const pk = table.pk;
  // values per row keyed by column position; the plan's column set is the union, in table order
  const width = table.columns.length;
  const used = new Array<boolean>(width).fill(false);
  const matrix = new Array<Array<string | null | undefined>>(rows.length);
  const termCols = rule.terms;

  for (let r = 0; r < rows.length; r++) {
    const row = rows[r];
    const at = many ? `data[${r}]` : 'data';
    if (!isObject(row)) throw badRequest(`${at} must be an object of column values`);
    const vals = new Array<string | null | undefined>(width);
    for (const name in row) {
      if (!hasOwn.call(row, name)) continue;
      const col = columnOf(table, name, at);
      const v = row[name];
      if (col.isPk) {
        if (table.generate !== 'client') throw badRequest(`${at}.${name}: the primary key is generated (${table.generate}); do not send it`);
        if (v === null) throw badRequest(`${at}.${name}: the primary key must not be null`);
      } else checkWritable(rule, col, `${at}.${name}`);
      const idx = col.index;
      if (v === null) {
        if (!col.nullable) throw badRequest(`${at}.${name}: column '${name}' must not be null`);
        vals[idx] = null;
      } else vals[idx] = convert(col, v, `${at}.${name}`);
    }
    if (gen) vals[0] = gen();
    else if (table.generate === 'client' && vals[0] === undefined) throw badRequest(`${at}: the primary key '${pk.name}' is required (generate: client)`);
    for (let i = 0; i < termCols.length; i++) {
      const t = termCols[i]!;
      const want = termValue(t, principal);
      if (want === null) throw ruleViolation(rule, table, 'insert');
      const idx = t.col.index;
      const have = vals[idx];
      if (have === undefined) vals[idx] = want;
      else if (have !== want) throw ruleViolation(rule, table, 'insert');
    }
    for (const col of table.required) {
      if (vals[col.index] === undefined) throw badRequest(`${at}: column '${col.name}' is required`);
    }
    for (let i = 0; i < width; i++) if (vals[i] !== undefined) used[i] = true;
    matrix[r] = vals;
  }

  const cols: CompiledColumn[] = [];
  const idxs: number[] = [];
  for (let i = 0; i < width; i++) {
    if (used[i]) {
      cols.push(table.columns[i]!);
      idxs.push(i);
    }
  }
  if (cols.length * rows.length > LIMITS.parameters)
    throw badRequest(`insert too large: ${cols.length * rows.length} values (at most ${LIMITS.parameters} per request)`);
  if (cols.length === 0 && rows.length > 1) {
    // every row is all defaults: name the key column and let the database fill it
    cols.push(pk);
    idxs.push(0);
  }
  const planRows = new Array<InsertValue[]>(rows.length);
  for (let r = 0; r < rows.length; r++) {
    const vals = matrix[r]!;
    const out = new Array<InsertValue>(idxs.length);
    for (let j = 0; j < idxs.length; j++) {
      const v = vals[idxs[j]!];
      out[j] = v === undefined ? DEFAULT : v;
    }
    planRows[r] = out;
  }
  return { plan: { table: table.q, columns: cols, rows: planRows, returning: rule.returningList }, many };
}

/** Validates update params (`where` required, `data` non-empty) into a plan. */
export function planUpdate(table: CompiledTable, rule: CompiledRule, principal: Principal, params: Obj): UpdatePlan {
  const data = params.data;
  if (!isObject(data)) throw badRequest('update needs data: an object of column values');
  const set: UpdatePlan['set'] = [];
  for (const name in data) {
    if (!hasOwn.call(data, name)) continue;
    const col = columnOf(table, name, 'data');
    if (col.isPk) throw badRequest(`data.${name}: the primary key cannot be updated`);
    checkWritable(rule, col, `data.${name}`);
    const v = data[name];
    let value: string | null;
    if (v === null) {
      if (!col.nullable) throw badRequest(`data.${name}: column '${name}' must not be null`);
      value = null;
    } else value = convert(col, v, `data.${name}`);
    set.push({ col, value });
  }
  if (set.length === 0) throw badRequest('update needs data with at least one column');
  const where: Cond[] = [];
  parseWhere(table, rule, params.where, where, true);
  appendRuleFilter(rule, principal, where);
  return { table: table.q, set, where, returning: rule.returningList };
}

/** Validates delete params (`where` required) into a plan. */
export function planDelete(table: CompiledTable, rule: CompiledRule, principal: Principal, params: Obj): DeletePlan {
  const where: Cond[] = [];
  parseWhere(table, rule, params.where, where, true);
  appendRuleFilter(rule, principal, where);
  return { table: table.q, where };
}
