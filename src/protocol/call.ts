/**
 * The Bridge's `POST /call` on the wire: `{"path":"db/<table>/<op>","params":{…}}` → `{"data": …}`, or
 * the error envelope (./errors.ts). The Bridge checks a request with its own planner
 * (src/bridge/sql/params.ts) against these names; the app client (src/client/) and the tests send
 * them. Types here are schema-free; src/client/types.ts narrows them to a generated `Database`.
 * docs/bridge-api.md describes each parameter.
 */
import type { Op } from './release.js';

export const API_KEY_HEADER = 'x-santokit-api-key';
/** optional hints; when sent they must name the credential's own project and env (else 403) */
export const PROJECT_HINT_HEADER = 'x-santokit-project';
export const ENV_HINT_HEADER = 'x-santokit-env';

/** `db/<table>/<op>` */
export type CallPath = `db/${string}/${Op}`;

/** where operators: `{"col": {"$gt": 3}}` */
export const WHERE_OPERATORS = ['$eq', '$ne', '$gt', '$gte', '$lt', '$lte', '$in', '$notIn', '$like', '$isNull', '$isNotNull'] as const;
export type WhereOperator = (typeof WHERE_OPERATORS)[number];

/** the params each op accepts; any other name is a 400 (a typo must not silently widen a query) */
export const CALL_PARAMS = {
  select: ['where', 'select', 'orderBy', 'limit', 'offset', 'expand'],
  insert: ['data', 'values'],
  update: ['where', 'data'],
  delete: ['where'],
} as const satisfies Record<Op, readonly string[]>;

export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** A row as sent or answered: bigint and decimal as strings, timestamps ISO-8601 (UTC), bytes base64. */
export type CallRow = Record<string, Json>;

/** `{"$op": value, …}` for one column, all ANDed. */
export interface Condition<V = Json> {
  $eq?: V | null;
  $ne?: V | null;
  $gt?: V;
  $gte?: V;
  $lt?: V;
  $lte?: V;
  /** a non-empty array of at most 1,000 scalars */
  $in?: readonly V[];
  $notIn?: readonly V[];
  $like?: string;
  $isNull?: boolean;
  $isNotNull?: boolean;
}

/** `{"col": value}` is equality (`null` → IS NULL); `{"col": {"$op": value}}` an operator. At most 50 conditions. */
export type Where = Record<string, Json | Condition>;

export type Direction = 'asc' | 'desc';
/** `{col: "asc"|"desc"}`, or an array of them in order */
export type OrderBy = Record<string, Direction> | ReadonlyArray<Record<string, Direction>>;

export interface SelectParams {
  where?: Where;
  /** `"*"` or column names */
  select?: '*' | readonly string[];
  orderBy?: OrderBy;
  limit?: number;
  offset?: number;
  /** relation names (`references … as:`) */
  expand?: string | readonly string[];
}

export interface InsertParams {
  /** one row, or an array of up to 1,000 */
  data?: CallRow | readonly CallRow[];
  /** an alias of data */
  values?: CallRow | readonly CallRow[];
}

export interface UpdateParams {
  /** required and non-empty */
  where: Where;
  data: CallRow;
}

export interface DeleteParams {
  /** required and non-empty */
  where: Where;
}

export interface CallParams {
  select: SelectParams;
  insert: InsertParams;
  update: UpdateParams;
  delete: DeleteParams;
}

export interface CallRequest<O extends Op = Op> {
  path: `db/${string}/${O}`;
  params?: CallParams[O];
}

/** What `data` holds per op: insert answers one row for one object and an array for an array. */
export interface CallResults {
  select: CallRow[];
  insert: CallRow | CallRow[];
  update: CallRow[];
  delete: { affected: number };
}

export interface CallResponse<O extends Op = Op> {
  data: CallResults[O];
}
