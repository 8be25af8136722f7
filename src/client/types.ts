/**
 * Types that narrow `POST /call` (../protocol/call.ts) to one release's schema and one role's
 * permissions. `stk gen types` writes a `Database` of the `DatabaseTypes` shape; with it, a table,
 * a column, a value of the wrong type, or an operation the role may not call is a compile error.
 *
 * For a key with several roles, name them all (`createClient<Database, 'reader' | 'writer'>`): the
 * client then offers what any of them may do (the Bridge applies the first rule that matches one).
 */
import type { Condition, Direction, Json } from '../protocol/call.js';
import type { ColumnType } from '../protocol/release.js';

/** One table, as `stk gen types` writes it. */
export interface TableTypes {
  /** the primary key's name */
  Key: string;
  /** column → value as answered (bigint/decimal strings, ISO-8601 timestamps, base64 bytes; `| null` when nullable) */
  Row: object;
  /** column → non-null value accepted in data and where */
  Input: object;
  /** the insert row: required columns and optional ones (`?`) */
  Insert: object;
  /** column → its declared type (decides the where operators) */
  Kinds: object;
  /** relation name (`references … as:`) → target table */
  Relations: object;
}

/** What one role may do on one table: the columns each op reads or writes, relations it may expand. */
export interface Grant {
  select?: string;
  insert?: string;
  update?: string;
  delete?: true;
  expand?: string;
}

export interface DatabaseTypes {
  tables: { [table: string]: TableTypes };
  /** role → table → grant; `public` is what a key whose roles no rule names may do */
  roles: { [role: string]: { [table: string]: Grant } };
}

/** Without generated types: any table, any column, any op (the Bridge still checks everything). */
export type AnyDatabase = {
  tables: {
    [table: string]: {
      Key: string;
      Row: { [column: string]: Json };
      Input: { [column: string]: Json | Date };
      Insert: { [column: string]: Json | Date };
      Kinds: { [column: string]: ColumnType };
      Relations: { [relation: string]: string };
    };
  };
  roles: { [role: string]: { [table: string]: { select: string; insert: string; update: string; delete: true; expand: string } } };
};

export type RoleName<DB extends DatabaseTypes> = keyof DB['roles'] & string;

type Simplify<T> = { [K in keyof T]: T[K] } & {};
/** `Pick` without the constraint on K (K may name columns T lacks; they are left out) */
type PickOf<T, K> = { [P in keyof T as P extends K ? P : never]: T[P] };

/** The grants of the roles `R` on table `T` (a union: one member per role that has any). */
type Grants<DB extends DatabaseTypes, R, T> = R extends keyof DB['roles'] ? (T extends keyof DB['roles'][R] ? DB['roles'][R][T] : never) : never;
/** The ops any of the grants allows. */
type GrantedOps<G> = G extends unknown ? keyof G : never;
/** What any of the grants gives for `K` (columns of an op, relation names). */
type Granted<G, K extends PropertyKey> = G extends unknown ? (K extends keyof G ? G[K] : never) : never;

/** Tables the roles may call at least one op on. */
export type TableName<DB extends DatabaseTypes, R> = {
  [T in keyof DB['tables'] & string]: [Grants<DB, R, T>] extends [never] ? never : T;
}[keyof DB['tables'] & string];

type Tbl<DB extends DatabaseTypes, T> = T extends keyof DB['tables'] ? DB['tables'][T] : never;
type RowOf<DB extends DatabaseTypes, T> = Tbl<DB, T>['Row'];
type InputOf<DB extends DatabaseTypes, T> = Tbl<DB, T>['Input'];

/** Columns a select answers (and may filter or sort on, with the key). */
export type Readable<DB extends DatabaseTypes, R, T> = Granted<Grants<DB, R, T>, 'select'> & keyof RowOf<DB, T> & string;
export type Writable<DB extends DatabaseTypes, R, T, O extends 'insert' | 'update'> = Granted<Grants<DB, R, T>, O> & keyof InputOf<DB, T> & string;
type KeyOf<DB extends DatabaseTypes, T> = Tbl<DB, T>['Key'] & string;
/** Columns a where or orderBy may name: the readable ones and the primary key. */
type Filterable<DB extends DatabaseTypes, R, T> = Readable<DB, R, T> | KeyOf<DB, T>;
type Expandable<DB extends DatabaseTypes, R, T> = Granted<Grants<DB, R, T>, 'expand'> & keyof Tbl<DB, T>['Relations'] & string;

type StringOps = '$eq' | '$ne' | '$gt' | '$gte' | '$lt' | '$lte' | '$in' | '$notIn' | '$like' | '$isNull' | '$isNotNull';
type OrderedOps = Exclude<StringOps, '$like'>;
type ScalarOps = '$eq' | '$ne' | '$in' | '$notIn' | '$isNull' | '$isNotNull';
type DocumentOps = '$eq' | '$ne' | '$isNull' | '$isNotNull';
type OpsFor<K> = K extends 'string'
  ? StringOps
  : K extends 'int' | 'bigint' | 'float' | 'decimal' | 'timestamp'
    ? OrderedOps
    : K extends 'boolean' | 'bytes'
      ? ScalarOps
      : DocumentOps;
type ColumnCondition<V, K> = Pick<Condition<V>, OpsFor<K>>;

/** `{column: value}` (null → IS NULL) or `{column: {$op: value}}`, over the columns `C`. */
export type WhereOf<T extends TableTypes, C extends PropertyKey> = {
  [K in C & keyof T['Input']]?: T['Input'][K] | null | ColumnCondition<T['Input'][K], K extends keyof T['Kinds'] ? T['Kinds'][K] : never>;
};
export type OrderByOf<C extends string> = { [K in C]?: Direction } | ReadonlyArray<{ [K in C]?: Direction }>;

/** `select: '*'` or column names (`'*'` inside the array means every readable column). */
type Selection<C extends string> = '*' | readonly (C | '*')[];
type Selected<C extends string, S> = S extends readonly (infer X)[] ? ('*' extends X ? C : X & C) : C;

/** An expanded relation: the target's row as the roles may read it, or null (no row, or hidden by the target's rule). */
type Expanded<DB extends DatabaseTypes, R, T, E> = {
  [A in E extends readonly (infer X)[] ? X & string : never]: A extends keyof Tbl<DB, T>['Relations']
    ? Simplify<PickOf<RowOf<DB, Tbl<DB, T>['Relations'][A]>, Readable<DB, R, Tbl<DB, T>['Relations'][A]>>> | null
    : never;
};

export interface SelectOptions<DB extends DatabaseTypes, R, T, S, E> {
  where?: WhereOf<Tbl<DB, T>, Filterable<DB, R, T>>;
  select?: S;
  orderBy?: OrderByOf<Filterable<DB, R, T>>;
  /** at most STK_SELECT_MAX_ROWS (10,000) */
  limit?: number;
  offset?: number;
  expand?: E;
}

export type SelectRow<DB extends DatabaseTypes, R, T, S = '*', E = []> = Simplify<
  PickOf<RowOf<DB, T>, Selected<Readable<DB, R, T>, S>> & Expanded<DB, R, T, E>
>;
/** What insert and update answer: the readable columns and the primary key. */
export type ReturnedRow<DB extends DatabaseTypes, R, T> = Simplify<PickOf<RowOf<DB, T>, Readable<DB, R, T> | KeyOf<DB, T>>>;
export type InsertRow<DB extends DatabaseTypes, R, T> = Simplify<
  PickOf<Tbl<DB, T>['Insert'], (Writable<DB, R, T, 'insert'> | KeyOf<DB, T>) & keyof Tbl<DB, T>['Insert']>
>;
export type UpdateData<DB extends DatabaseTypes, R, T> = {
  [K in Exclude<Writable<DB, R, T, 'update'>, KeyOf<DB, T>>]?: InputOf<DB, T>[K] | (null extends RowOf<DB, T>[K & keyof RowOf<DB, T>] ? null : never);
};

interface TableMethods<DB extends DatabaseTypes, R, T> {
  /** `db/<table>/select` */
  select<const S extends Selection<Readable<DB, R, T>> = '*', const E extends readonly Expandable<DB, R, T>[] = []>(
    options?: SelectOptions<DB, R, T, S, E>,
  ): Promise<Array<SelectRow<DB, R, T, S, E>>>;
  /** `db/<table>/insert`: one row → the row; an array (up to 1,000) → the rows */
  insert(row: InsertRow<DB, R, T>): Promise<ReturnedRow<DB, R, T>>;
  insert(rows: readonly InsertRow<DB, R, T>[]): Promise<Array<ReturnedRow<DB, R, T>>>;
  /** `db/<table>/update`: `where` is required and non-empty; answers the updated rows */
  update(options: { where: WhereOf<Tbl<DB, T>, Filterable<DB, R, T>>; data: UpdateData<DB, R, T> }): Promise<Array<ReturnedRow<DB, R, T>>>;
  /** `db/<table>/delete`: `where` is required and non-empty */
  delete(options: { where: WhereOf<Tbl<DB, T>, Filterable<DB, R, T>> }): Promise<{ affected: number }>;
}

/** The operations the roles may call on the table (the others are not there). */
export type TableClient<DB extends DatabaseTypes, R, T> = Pick<TableMethods<DB, R, T>, GrantedOps<Grants<DB, R, T>> & keyof TableMethods<DB, R, T>>;
