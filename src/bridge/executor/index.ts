/**
 * The only module that talks to PostgreSQL (postgres.js). Pools, query execution with a timeout,
 * and the mapping of database failures to client-facing errors that never carry SQL text, bound
 * values or connection URLs.
 */
import postgres from 'postgres';
import type { FastifyBaseLogger } from 'fastify';
import { AppError } from '../../protocol/errors.js';
import type { Op } from '../../protocol/release.js';
import type { CompiledTable } from '../release-cache/compile.js';
import type { SqlQuery } from '../sql/build.js';

export type Row = Record<string, unknown>;
export type Rows = Row[] & { count: number };

export interface Pool {
  readonly name: string;
  readonly sql: postgres.Sql;
  /** SQL texts this pool prepares; beyond the cap new shapes run unprepared (bounds server memory) */
  readonly prepared: Set<string>;
  /** queries waiting or running */
  inflight: number;
  readonly maxInflight: number;
}

export interface PoolSettings {
  max: number;
  queryTimeoutMs: number;
}

const MAX_PREPARED_PER_POOL = 2000;

/**
 * postgres.js remembers the "origin" stack of every failed `unsafe()` query in a module-level Map
 * keyed by a fresh array, so each database error (a duplicate key, say) would leak an entry forever.
 * The Bridge never uses that origin, so the getter is replaced once by one that remembers nothing.
 */
let originPatched = false;
function patchOrigin(sql: postgres.Sql): void {
  if (originPatched) return;
  originPatched = true;
  const proto = Object.getPrototypeOf(sql.unsafe('select 1')) as object;
  const d = Object.getOwnPropertyDescriptor(proto, 'origin');
  if (d && d.get) Object.defineProperty(proto, 'origin', { get: () => '', configurable: true });
}

/** PostgreSQL's timestamptz text (the session runs in UTC) → ISO-8601, keeping microseconds. */
const PG_TS_UTC = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?)(?:\+00)?$/;
function parseTimestamp(x: string): string {
  const m = PG_TS_UTC.exec(x);
  if (m) return `${m[1]}T${m[2]}Z`;
  const d = new Date(x);
  return Number.isNaN(d.getTime()) ? x : d.toISOString();
}

/** Opens a pool for one (project, env, connection). Connects lazily, on first query. */
export function openPool(url: string, name: string, s: PoolSettings): Pool {
  const sql = postgres(url, {
    max: s.max,
    prepare: true,
    idle_timeout: 60,
    connect_timeout: Math.max(1, Math.min(10, Math.ceil(s.queryTimeoutMs / 1000))),
    fetch_types: false,
    onnotice: () => {},
    connection: {
      application_name: 'santokit-bridge',
      TimeZone: 'UTC',
      statement_timeout: s.queryTimeoutMs,
    },
    types: {
      // Parameters arrive as text already converted by sql/values.ts. postgres.js re-serializes a
      // prepared statement's parameters by the types the server describes, so those serializers must
      // pass strings through (its defaults would turn 'true' into 'f' and JSON text into a JSON string).
      stkBoolean: {
        to: 16,
        from: [16],
        serialize: (x: unknown) => (x === true || x === 'true' || x === 't' ? 't' : 'f'),
        parse: (x: string) => x === 't',
      },
      stkJson: {
        to: 3802,
        from: [114, 3802],
        serialize: (x: unknown) => (typeof x === 'string' ? x : JSON.stringify(x)),
        parse: (x: string) => JSON.parse(x) as unknown,
      },
      // bytea → base64 string, timestamptz/timestamp → ISO string: rows serialize to JSON as they come
      stkBytea: {
        to: 17,
        from: [17],
        serialize: (x: unknown) => (typeof x === 'string' ? x : '\\x' + Buffer.from(x as Uint8Array).toString('hex')),
        parse: (x: string) => Buffer.from(x.slice(2), 'hex').toString('base64'),
      },
      stkTimestamp: {
        to: 1184,
        from: [1114, 1184],
        serialize: (x: unknown) => (x instanceof Date ? x.toISOString() : String(x)),
        parse: parseTimestamp,
      },
    },
  });
  patchOrigin(sql);
  return { name, sql, prepared: new Set(), inflight: 0, maxInflight: Math.max(100, s.max * 50) };
}

export async function closePool(pool: Pool, timeoutSeconds = 5): Promise<void> {
  await pool.sql.end({ timeout: timeoutSeconds }).catch(() => {});
}

/** Where a query ran, to word its errors. */
export interface QueryContext {
  table: CompiledTable;
  tables: ReadonlyMap<string, CompiledTable>;
  op: Op;
  timeoutMs: number;
  log: FastifyBaseLogger;
}

/** Runs one statement. Failures become AppErrors (4xx for the caller's data, 503/504/500 otherwise). */
export async function execute(pool: Pool, q: SqlQuery, c: QueryContext): Promise<Rows> {
  if (pool.inflight >= pool.maxInflight) {
    throw new AppError('SERVICE_UNAVAILABLE', `too many concurrent queries on connection '${pool.name}'; retry later`);
  }
  let prepare = pool.prepared.has(q.text);
  if (!prepare && pool.prepared.size < MAX_PREPARED_PER_POOL) {
    pool.prepared.add(q.text);
    prepare = true;
  }
  pool.inflight++;
  const pending = pool.sql.unsafe(q.text, q.values as string[], { prepare });
  // statement_timeout bounds the server side; this bounds waiting for a connection or a dead network
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    void Promise.resolve(pending.cancel()).catch(() => {});
  }, c.timeoutMs + 1000);
  try {
    return (await pending) as unknown as Rows;
  } catch (err) {
    throw timedOut ? timeoutError(c) : dbError(err, c, pool.name);
  } finally {
    clearTimeout(timer);
    pool.inflight--;
  }
}

/** `select 1` within the timeout. */
export async function ping(pool: Pool, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const q = pool.sql.unsafe('select 1');
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(() => {
        void Promise.resolve(q.cancel()).catch(() => {});
        rej(new Error('ping timeout'));
      }, timeoutMs);
    });
    await Promise.race([q, timeout]);
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

function timeoutError(c: QueryContext): AppError {
  return new AppError('GATEWAY_TIMEOUT', `query on '${c.table.name}' exceeded the ${formatSeconds(c.timeoutMs)} timeout`);
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'CONNECT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'SASL_SIGNATURE_MISMATCH',
  'AUTH_TYPE_NOT_IMPLEMENTED',
]);

interface PgErrorFields {
  name?: string;
  code?: string;
  detail?: string;
  column_name?: string;
  table_name?: string;
  constraint_name?: string;
  severity?: string;
  routine?: string;
  message?: string;
}

/** `Key (a, b)=(…)` → ['a','b'] when every name is a column of `table`; never returns the values. */
function keyColumns(detail: string | undefined, table: CompiledTable | undefined): string[] | null {
  if (!detail || !table || !detail.startsWith('Key (')) return null;
  const end = detail.indexOf(')=(');
  if (end < 0) return null;
  const names = detail.slice(5, end).split(', ').map((n) => (n.startsWith('"') && n.endsWith('"') ? n.slice(1, -1).replace(/""/g, '"') : n));
  return names.every((n) => table.byName.has(n)) ? names : null;
}

const names = (cols: string[]) => cols.map((n) => `'${n}'`).join(', ');

/** Maps a postgres.js failure to the error the caller sees. Details go to the log, never values or SQL. */
export function dbError(err: unknown, c: QueryContext, connection: string): AppError {
  const e = (err ?? {}) as PgErrorFields;
  const code = e.code ?? '';
  const t = c.table;
  const isPg = e.name === 'PostgresError';
  if (code === '57014') return timeoutError(c);
  if (isPg) {
    switch (code) {
      case '23505': {
        const cols = keyColumns(e.detail, c.tables.get(e.table_name ?? '') ?? t);
        return new AppError('CONFLICT', cols ? `duplicate value: '${e.table_name ?? t.name}' already has a row with this ${names(cols)}` : `duplicate value violates unique constraint '${e.constraint_name ?? ''}'`);
      }
      case '23502':
        return new AppError('BAD_REQUEST', `column '${e.column_name ?? '?'}' of '${e.table_name ?? t.name}' must not be null`);
      case '23503': {
        if (e.detail?.includes('still referenced')) {
          const from = c.tables.get(e.table_name ?? '');
          const refCols = from ? [...from.relations.values()].filter((r) => r.target.name === t.name).map((r) => r.column.name) : [];
          const via = refCols.length ? ` (${names(refCols)})` : '';
          return new AppError('CONFLICT', `row of '${t.name}' is still referenced from '${e.table_name ?? '?'}'${via}`);
        }
        const cols = keyColumns(e.detail, c.tables.get(e.table_name ?? '') ?? t);
        const col = cols?.[0] ? t.byName.get(cols[0]) : undefined;
        const rel = col ? [...t.relations.values()].find((r) => r.column === col) : undefined;
        return new AppError('BAD_REQUEST', cols ? `${names(cols)} must reference an existing row${rel ? ` of '${rel.target.name}'` : ''}` : `foreign key constraint '${e.constraint_name ?? ''}' violated`);
      }
      case '23514':
        return new AppError('BAD_REQUEST', `row violates check constraint '${e.constraint_name ?? ''}'`);
      case '22001':
        return new AppError('BAD_REQUEST', `value too long for a column of '${t.name}'`);
      case '22003':
        return new AppError('BAD_REQUEST', `numeric value out of range for a column of '${t.name}'`);
      case '22007':
      case '22008':
        return new AppError('BAD_REQUEST', `invalid date/time value for a column of '${t.name}'`);
      case '22P05':
      case '22021':
        return new AppError('BAD_REQUEST', 'text contains a NUL character or an invalid byte sequence');
      case '40001':
      case '40P01':
        return new AppError('SERVICE_UNAVAILABLE', 'transient database conflict; retry the request');
    }
    if (code.startsWith('22')) return new AppError('BAD_REQUEST', `invalid value for a column of '${t.name}'`);
    if (code.startsWith('08') || code.startsWith('28') || code.startsWith('53') || code === '3D000' || code.startsWith('57P')) {
      c.log.warn({ pgCode: code, connection, table: t.name, op: c.op }, 'database unavailable');
      return new AppError('SERVICE_UNAVAILABLE', `database of connection '${connection}' is unavailable`);
    }
    if (code === '42P01' || code === '42703') {
      c.log.error({ pgCode: code, connection, table: t.name, op: c.op, pgTable: e.table_name, pgColumn: e.column_name }, 'database schema does not match the release');
      return new AppError('INTERNAL_ERROR', `database schema of connection '${connection}' does not match the release (missing table or column); run stk apply`);
    }
    c.log.error({ pgCode: code, severity: e.severity, routine: e.routine, constraint: e.constraint_name, connection, table: t.name, op: c.op, pgMessage: e.message }, 'database error');
    return new AppError('INTERNAL_ERROR', 'database error');
  }
  if (CONNECTION_CODES.has(code)) {
    c.log.warn({ errCode: code, connection, table: t.name, op: c.op }, 'database unreachable');
    return new AppError('SERVICE_UNAVAILABLE', `database of connection '${connection}' is unavailable`);
  }
  c.log.error({ errCode: code, errName: e.name, connection, table: t.name, op: c.op }, 'database driver error');
  return new AppError('INTERNAL_ERROR', 'database error');
}
