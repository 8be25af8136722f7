/**
 * `santokit/client`: a typed client for apps calling the Bridge's `POST /call`. No dependencies
 * beyond `fetch`. With types from `stk gen types` (a `Database`), tables, columns, values and the
 * operations a role may call are checked at compile time; without them every call is still sent and
 * the Bridge checks it.
 *
 *   import { createClient, SantokitError } from 'santokit/client';
 *   import type { Database } from './santokit-types.js';
 *   const stk = createClient<Database, 'reader'>({ url: 'http://localhost:3000', apiKey: process.env.STK_API_KEY! });
 *   const posts = await stk.db('posts').select({ where: { published: true }, orderBy: { created_at: 'desc' }, limit: 20, expand: ['author'] });
 *
 * A refused call throws `SantokitError` with the Bridge's catalogue `code`, the HTTP `status` and the
 * `requestId` to quote when asking about it.
 */
import { API_KEY_HEADER, type CallParams, type CallResults } from '../protocol/call.js';
import { codeForStatus, type ErrorCode } from '../protocol/errors.js';
import type { Op } from '../protocol/release.js';
import type { AnyDatabase, DatabaseTypes, RoleName, TableClient, TableName } from './types.js';

export type * from './types.js';
export type { CallParams, CallPath, CallRequest, CallResponse, CallResults, CallRow, Condition, Direction, Json, OrderBy, Where } from '../protocol/call.js';
export type { ErrorCode } from '../protocol/errors.js';

/** Codes the client itself reports: the Bridge could not be reached, or answered something that is not Santokit's. */
export type ClientErrorCode = 'NETWORK_ERROR' | 'INVALID_RESPONSE';

/** A call the Bridge refused (`status` ≥ 400, `code` from the error catalogue), or one that never got an answer (`status` 0). */
export class SantokitError extends Error {
  readonly code: ErrorCode | ClientErrorCode | (string & {});
  readonly status: number;
  /** the Bridge's request id (also in its logs); null when no answer came */
  readonly requestId: string | null;
  readonly details?: unknown;
  constructor(message: string, o: { code: SantokitError['code']; status: number; requestId: string | null; details?: unknown; cause?: unknown }) {
    super(message, o.cause === undefined ? undefined : { cause: o.cause });
    this.name = 'SantokitError';
    this.code = o.code;
    this.status = o.status;
    this.requestId = o.requestId;
    if (o.details !== undefined) this.details = o.details;
  }
}

export interface ClientOptions {
  /** the Bridge's base URL, e.g. `http://localhost:3000` */
  url: string;
  /** an API key (`stk apikey create`); sent as `X-Santokit-Api-Key`, never shown in errors */
  apiKey: string;
  /** extra headers on every call (e.g. `x-santokit-project`/`x-santokit-env` hints) */
  headers?: Record<string, string>;
  /** a fetch implementation (default: the global one) */
  fetch?: typeof fetch;
}

export interface Client<DB extends DatabaseTypes = AnyDatabase, R extends RoleName<DB> = RoleName<DB>> {
  /** one table's operations: those the roles `R` may call */
  db<T extends TableName<DB, R>>(table: T): TableClient<DB, R, T>;
  /** `POST /call` with a path and params as they go on the wire; answers `data` */
  call<O extends Op>(path: `db/${string}/${O}`, params?: CallParams[O]): Promise<CallResults[O]>;
}

/** The Bridge's base URL without query or trailing slash, for requests and messages (it may not hold credentials). */
function baseUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TypeError(`createClient: url must be an absolute http(s) URL such as http://localhost:3000`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TypeError(`createClient: url must be http or https, not ${u.protocol}`);
  if (u.username || u.password) throw new TypeError('createClient: url must not hold credentials; pass the API key as apiKey');
  return u.origin + u.pathname.replace(/\/+$/, '');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Creates a client for one Bridge and one API key. `DB` comes from `stk gen types`; `R` names the key's roles. */
export function createClient<DB extends DatabaseTypes = AnyDatabase, R extends RoleName<DB> = RoleName<DB>>(options: ClientOptions): Client<DB, R> {
  if (!isObject(options)) throw new TypeError('createClient: pass { url, apiKey }');
  if (typeof options.url !== 'string') throw new TypeError('createClient: url is required');
  if (typeof options.apiKey !== 'string' || options.apiKey.length === 0)
    throw new TypeError('createClient: apiKey is required (create one with stk apikey create)');
  const shown = baseUrl(options.url);
  const endpoint = `${shown}/call`;
  const doFetch = options.fetch ?? globalThis.fetch;
  if (typeof doFetch !== 'function') throw new TypeError('createClient: no fetch available (Node 18+, a browser, or pass options.fetch)');
  const headers: Record<string, string> = {
    ...options.headers,
    'content-type': 'application/json',
    accept: 'application/json',
    [API_KEY_HEADER]: options.apiKey,
  };

  async function call<O extends Op>(path: `db/${string}/${O}`, params?: CallParams[O]): Promise<CallResults[O]> {
    let res: Response;
    try {
      res = await doFetch(endpoint, { method: 'POST', headers, body: JSON.stringify(params === undefined ? { path } : { path, params }) });
    } catch (e) {
      const cause = (e as { cause?: { code?: unknown } }).cause?.code;
      throw new SantokitError(`cannot reach the Bridge at ${shown}${typeof cause === 'string' ? ` (${cause})` : ''}`, {
        code: 'NETWORK_ERROR',
        status: 0,
        requestId: null,
        cause: e,
      });
    }
    const requestId = res.headers.get('x-request-id');
    const text = await res.text();
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    if (!res.ok) {
      const e = isObject(body) && isObject(body.error) ? body.error : undefined;
      const code = typeof e?.code === 'string' ? e.code : codeForStatus(res.status);
      const message = typeof e?.message === 'string' ? e.message : `the Bridge answered ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
      const rid = typeof e?.requestId === 'string' ? e.requestId : requestId;
      throw new SantokitError(message, { code, status: res.status, requestId: rid, details: e?.details });
    }
    if (!isObject(body) || !('data' in body)) {
      throw new SantokitError(`the Bridge at ${shown} answered ${res.status} without {"data": …}`, { code: 'INVALID_RESPONSE', status: res.status, requestId });
    }
    return body.data as CallResults[O];
  }

  function table(name: string) {
    if (typeof name !== 'string' || name.length === 0) throw new TypeError('db(table): the table name must be a non-empty string');
    return {
      select: (options?: CallParams['select']) => call(`db/${name}/select`, options ?? {}),
      insert: (data: CallParams['insert']['data']) => call(`db/${name}/insert`, { data }),
      update: (options: CallParams['update']) => call(`db/${name}/update`, options),
      delete: (options: CallParams['delete']) => call(`db/${name}/delete`, options),
    };
  }

  return { db: table, call } as unknown as Client<DB, R>;
}
