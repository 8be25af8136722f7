/**
 * Plan nodes → `{text, values}`. Pure string assembly over identifiers that were quoted once, at
 * release compile time, by src/common/quote-ident.ts (`ColRef.q`; tables schema-qualified). Every
 * caller value is a bind parameter (`$n::type`); nothing the caller sent is ever spliced into the text.
 */

/** A column as the SQL builder sees it: its quoted identifier and the PostgreSQL type for casts. */
export interface ColRef {
  readonly q: string;
  readonly cast: string;
}

export type CmpOp = '=' | '<>' | '>' | '>=' | '<' | '<=';

export type Cond =
  | { readonly k: 'cmp'; readonly col: ColRef; readonly op: CmpOp; readonly value: string }
  /** `col = ANY($n::type[])`, or `col <> ALL(...)` when negated; `value` is an array literal */
  | { readonly k: 'any'; readonly col: ColRef; readonly negate: boolean; readonly value: string }
  | { readonly k: 'like'; readonly col: ColRef; readonly value: string }
  | { readonly k: 'null'; readonly col: ColRef; readonly negate: boolean }
  /** matches nothing (a permission term whose value cannot match the column's type) */
  | { readonly k: 'false' };

export interface OrderTerm {
  readonly col: ColRef;
  readonly desc: boolean;
}

export interface SelectPlan {
  /** quoted table name */
  table: string;
  /** precomputed, comma-separated quoted column list */
  list: string;
  where: Cond[];
  orderBy: OrderTerm[];
  limit: number | null;
  offset: number | null;
}

export const DEFAULT: unique symbol = Symbol('DEFAULT');
export type InsertValue = string | null | typeof DEFAULT;

export interface InsertPlan {
  table: string;
  /** empty → `DEFAULT VALUES` (single row only) */
  columns: ColRef[];
  rows: InsertValue[][];
  returning: string;
}

export interface UpdatePlan {
  table: string;
  set: Array<{ col: ColRef; value: string | null }>;
  where: Cond[];
  returning: string;
}

export interface DeletePlan {
  table: string;
  where: Cond[];
}

export interface SqlQuery {
  text: string;
  values: Array<string | null>;
}

function whereClause(where: Cond[], values: Array<string | null>): string {
  if (where.length === 0) return '';
  let s = ' WHERE ';
  for (let i = 0; i < where.length; i++) {
    if (i) s += ' AND ';
    const c = where[i]!;
    switch (c.k) {
      case 'cmp':
        values.push(c.value);
        s += `${c.col.q} ${c.op} $${values.length}::${c.col.cast}`;
        break;
      case 'any':
        values.push(c.value);
        s += c.negate ? `${c.col.q} <> ALL($${values.length}::${c.col.cast}[])` : `${c.col.q} = ANY($${values.length}::${c.col.cast}[])`;
        break;
      case 'like':
        values.push(c.value);
        s += `${c.col.q} LIKE $${values.length}::text`;
        break;
      case 'null':
        s += c.negate ? `${c.col.q} IS NOT NULL` : `${c.col.q} IS NULL`;
        break;
      case 'false':
        s += 'FALSE';
        break;
    }
  }
  return s;
}

export function buildSelect(p: SelectPlan): SqlQuery {
  const values: Array<string | null> = [];
  let text = `SELECT ${p.list} FROM ${p.table}` + whereClause(p.where, values);
  if (p.orderBy.length) {
    text += ' ORDER BY ';
    for (let i = 0; i < p.orderBy.length; i++) {
      const o = p.orderBy[i]!;
      text += (i ? ', ' : '') + o.col.q + (o.desc ? ' DESC' : ' ASC');
    }
  }
  if (p.limit !== null) {
    values.push(String(p.limit));
    text += ` LIMIT $${values.length}::bigint`;
  }
  if (p.offset !== null) {
    values.push(String(p.offset));
    text += ` OFFSET $${values.length}::bigint`;
  }
  return { text, values };
}

export function buildInsert(p: InsertPlan): SqlQuery {
  const values: Array<string | null> = [];
  if (p.columns.length === 0) {
    if (p.rows.length !== 1) throw new Error('an insert without columns must have exactly one row');
    return { text: `INSERT INTO ${p.table} DEFAULT VALUES RETURNING ${p.returning}`, values };
  }
  let text = `INSERT INTO ${p.table} (`;
  for (let i = 0; i < p.columns.length; i++) text += (i ? ', ' : '') + p.columns[i]!.q;
  text += ') VALUES ';
  for (let r = 0; r < p.rows.length; r++) {
    const row = p.rows[r]!;
    text += r ? ', (' : '(';
    for (let i = 0; i < p.columns.length; i++) {
      const v = row[i];
      if (i) text += ', ';
      if (v === DEFAULT || v === undefined) text += 'DEFAULT';
      else {
        values.push(v);
        text += `$${values.length}::${p.columns[i]!.cast}`;
      }
    }
    text += ')';
  }
  text += ` RETURNING ${p.returning}`;
  return { text, values };
}

export function buildUpdate(p: UpdatePlan): SqlQuery {
  if (p.set.length === 0) throw new Error('an update needs at least one column');
  if (p.where.length === 0) throw new Error('an update needs a where clause');
  const values: Array<string | null> = [];
  let text = `UPDATE ${p.table} SET `;
  for (let i = 0; i < p.set.length; i++) {
    const s = p.set[i]!;
    values.push(s.value);
    text += (i ? ', ' : '') + `${s.col.q} = $${values.length}::${s.col.cast}`;
  }
  text += whereClause(p.where, values) + ` RETURNING ${p.returning}`;
  return { text, values };
}

export function buildDelete(p: DeletePlan): SqlQuery {
  if (p.where.length === 0) throw new Error('a delete needs a where clause');
  const values: Array<string | null> = [];
  const text = `DELETE FROM ${p.table}` + whereClause(p.where, values);
  return { text, values };
}
