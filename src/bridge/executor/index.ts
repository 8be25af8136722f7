/**
 * The only module that talks to PostgreSQL (node-postgres `pg`). Pools, query execution with a
 * timeout, and the mapping of database failures to client-facing errors that never carry SQL text,
 * bound values or connection URLs.
 *
 * Why `pg` with a small pool of our own instead of postgres.js or `pg.Pool`: on the `/call` hot path
 * the driver is the largest share of the Bridge's CPU. `pg.Client` with a named prepared statement
 * per SQL text (parsed once per connection, then Bind/Execute/Sync in one write) costs ~18 µs of
 * client CPU per query here, postgres.js ~30 µs and `pg.Pool` ~20 µs (acquire/release promises and
 * an idle timer per query). The pool below hands out an idle client synchronously, queues callers
 * when every connection is busy, and closes connections idle for a minute.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { FastifyBaseLogger } from 'fastify';
import { AppError } from '../../protocol/errors.js';
import type { Op } from '../../protocol/release.js';
import type { CompiledTable } from '../release-cache/compile.js';
import type { SqlQuery } from '../sql/build.js';

export type Row = Record<string, unknown>;
export type Rows = Row[] & { count: number };

export interface Pool {
  readonly name: string;
  /** queries waiting or running */
  inflight: number;
  readonly maxInflight: number;
}

export interface PoolSettings {
  max: number;
  queryTimeoutMs: number;
}

/** SQL texts a pool prepares; beyond the cap new shapes run unnamed (bounds server memory) */
const MAX_PREPARED_PER_POOL = 2000;
const IDLE_TIMEOUT_MS = 60_000;
/** errors PostgreSQL raises when a prepared statement's plan no longer fits the schema: re-prepare once */
const REPREPARE_ROUTINES = new Set(['RevalidateCachedQuery', 'FetchPreparedStatement', 'transformAssignedExpr']);

// ---------------------------------------------------------------- result types

/** PostgreSQL's timestamptz text (the session runs in UTC) → ISO-8601, keeping microseconds. */
const PG_TS_UTC = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?)(?:\+00)?$/;
function parseTimestamp(x: string): string {
  const m = PG_TS_UTC.exec(x);
  if (m) return `${m[1]}T${m[2]}Z`;
  const d = new Date(x);
  return Number.isNaN(d.getTime()) ? x : d.toISOString();
}

const toNumber = (x: string) => +x;
const identity = (x: string) => x;
/**
 * Text-format result parsers by type OID. Rows serialize to JSON as they come: booleans, numbers
 * that fit a double (int2/int4/oid/float4/float8), parsed JSON, bytea as base64, timestamps as ISO
 * strings; int8 and numeric stay strings (no precision loss); anything else is PostgreSQL's text.
 */
const PARSERS = new Map<number, (x: string) => unknown>([
  [16, (x) => x === 't'],
  [17, (x) => Buffer.from(x.slice(2), 'hex').toString('base64')],
  [21, toNumber],
  [23, toNumber],
  [26, toNumber],
  [700, toNumber],
  [701, toNumber],
  [114, (x) => JSON.parse(x) as unknown],
  [3802, (x) => JSON.parse(x) as unknown],
  [1082, (x) => new Date(x)],
  [1114, parseTimestamp],
  [1184, parseTimestamp],
]);
const TYPES = { getTypeParser: (oid: number) => PARSERS.get(oid) ?? identity } as unknown as pg.CustomTypesConfig;

// ---------------------------------------------------------------- pool

/** A failure to open a connection (network, TLS, authentication): always "database unavailable". */
class ConnectError extends Error {
  constructor(cause: unknown) {
    super('connection failed', { cause });
  }
}

interface Waiter {
  resolve(c: Conn): void;
  reject(e: unknown): void;
  done: boolean;
}

interface Conn {
  client: pg.Client;
  lastUsed: number;
  broken: boolean;
  /**
   * prefix of this connection's statement names: unique per connection, because a session can be
   * shared (the embedded PostgreSQL of `stk dev` serves every connection from one session)
   */
  prefix: string;
}

interface InternalClient {
  processID: number | null;
  secretKey: number | null;
  connection: { stream: { destroy(): void } };
}

function clientConfig(url: string, s: PoolSettings): pg.ClientConfig {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error('connection URL is not a valid URL'); // never echo the URL: it carries the password
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') throw new Error('connection URL must start with postgres:// or postgresql://');
  // sslmode keeps libpq's meaning (require = encrypt without verifying the certificate), as before
  if (u.searchParams.has('sslmode') && !u.searchParams.has('uselibpqcompat')) u.searchParams.set('uselibpqcompat', 'true');
  return {
    connectionString: u.toString(),
    application_name: 'santokit-bridge',
    statement_timeout: s.queryTimeoutMs,
    options: '-c TimeZone=UTC',
    connectionTimeoutMillis: Math.max(1, Math.min(10, Math.ceil(s.queryTimeoutMs / 1000))) * 1000,
    keepAlive: true,
    keepAliveInitialDelayMillis: 60_000,
    types: TYPES,
  };
}

class PgPool implements Pool {
  inflight = 0;
  readonly maxInflight: number;
  readonly #config: pg.ClientConfig;
  readonly #max: number;
  /** every open (or opening) connection */
  readonly #all = new Set<Conn>();
  /** idle connections, most recently used last (reused first: a few connections stay warm) */
  readonly #idle: Conn[] = [];
  #opening = 0;
  readonly #waiters: Waiter[] = [];
  /** SQL text → prepared statement number (named `<connection prefix><number>` on each connection) */
  readonly #names = new Map<string, string>();
  #statementSeq = 0;
  #closed = false;
  #reaper: NodeJS.Timeout | undefined;

  constructor(
    readonly name: string,
    url: string,
    s: PoolSettings,
  ) {
    this.#config = clientConfig(url, s);
    this.#max = Math.max(1, s.max);
    this.maxInflight = Math.max(100, this.#max * 50);
  }

  /**
   * Hands a connection to `give`: at once when one is idle, else when one frees up or a new one
   * opens (under max). `fail` gets a connection failure. Returns the queue entry (to drop on timeout).
   */
  acquire(give: (c: Conn) => void, fail: (e: unknown) => void): Waiter | undefined {
    if (this.#closed) {
      fail(connectionEnded());
      return undefined;
    }
    const c = this.#idle.pop();
    if (c) {
      give(c);
      return undefined;
    }
    const w: Waiter = { resolve: give, reject: fail, done: false };
    this.#waiters.push(w);
    if (this.#all.size + this.#opening < this.#max) this.#open();
    return w;
  }

  /** Gives a connection back (to the first waiter, or the idle list); broken ones are closed. */
  release(c: Conn): void {
    if (c.broken || this.#closed) {
      this.#discard(c);
      this.#pump();
      return;
    }
    c.lastUsed = Date.now();
    const w = this.#nextWaiter();
    if (w) w.resolve(c);
    else this.#idle.push(c);
  }

  /** The statement name for `text` on `c`, or undefined (run unnamed) once the pool's cap is reached. */
  statementName(c: Conn, text: string): string | undefined {
    let n = this.#names.get(text);
    if (n === undefined) {
      if (this.#names.size >= MAX_PREPARED_PER_POOL) return undefined;
      n = (this.#statementSeq++).toString(36);
      this.#names.set(text, n);
    }
    return c.prefix + n;
  }

  /** After a plan-invalidation error: the text gets a fresh number, so every connection re-parses it. */
  renameStatement(c: Conn, text: string): string | undefined {
    if (!this.#names.has(text)) return undefined;
    const n = (this.#statementSeq++).toString(36);
    this.#names.set(text, n);
    return c.prefix + n;
  }

  /** Breaks a connection whose query is stuck (dead network): asks the server to cancel, then closes it. */
  kill(c: Conn): void {
    c.broken = true;
    const ic = c.client as unknown as InternalClient;
    if (ic.processID !== null && ic.secretKey !== null) {
      const canceller = new pg.Client(this.#config);
      const cc = canceller as unknown as { cancel(client: pg.Client, query: unknown): void; connection: pg.Connection };
      canceller.on('error', () => {});
      cc.connection.on('error', () => {});
      try {
        cc.cancel(c.client, (c.client as unknown as { activeQuery: unknown }).activeQuery);
        setTimeout(() => cc.connection.end(), 2000).unref();
      } catch {
        /* best effort */
      }
    }
    try {
      ic.connection.stream.destroy();
    } catch {
      /* already gone */
    }
  }

  #nextWaiter(): Waiter | undefined {
    let w = this.#waiters.shift();
    while (w && w.done) w = this.#waiters.shift();
    if (w) w.done = true;
    return w;
  }

  #open(): void {
    this.#opening++;
    const client = new pg.Client(this.#config);
    const conn: Conn = { client, lastUsed: Date.now(), broken: false, prefix: `stk${randomBytes(4).toString('hex')}_` };
    // an idle connection that dies (server restart, network) must not crash the process
    client.on('error', () => {
      conn.broken = true;
      this.#removeIdle(conn);
    });
    client.on('end', () => {
      conn.broken = true;
      this.#removeIdle(conn);
      this.#all.delete(conn);
    });
    client.connect((err: Error | null) => {
      this.#opening--;
      if (err) {
        conn.broken = true;
        const w = this.#nextWaiter();
        if (w) w.reject(new ConnectError(err));
        void client.end().catch(() => {});
        this.#pump();
        return;
      }
      if (this.#closed) {
        void client.end().catch(() => {});
        return;
      }
      this.#all.add(conn);
      this.#startReaper();
      this.release(conn);
    });
  }

  /** Opens connections for waiters nobody is opening one for. */
  #pump(): void {
    let pending = 0;
    for (const w of this.#waiters) if (!w.done) pending++;
    while (pending > this.#opening && this.#all.size + this.#opening < this.#max && !this.#closed) this.#open();
  }

  #removeIdle(c: Conn): void {
    const i = this.#idle.indexOf(c);
    if (i >= 0) this.#idle.splice(i, 1);
  }

  #discard(c: Conn): void {
    this.#removeIdle(c);
    this.#all.delete(c);
    void c.client.end().catch(() => {});
  }

  #startReaper(): void {
    if (this.#reaper) return;
    this.#reaper = setInterval(() => {
      const cutoff = Date.now() - IDLE_TIMEOUT_MS;
      for (let i = this.#idle.length - 1; i >= 0; i--) {
        const c = this.#idle[i]!;
        if (c.lastUsed < cutoff) this.#discard(c);
      }
      if (this.#all.size === 0 && this.#reaper) {
        clearInterval(this.#reaper);
        this.#reaper = undefined;
      }
    }, IDLE_TIMEOUT_MS / 4);
    this.#reaper.unref();
  }

  /** Stops taking queries; waits up to `timeoutMs` for running ones, then closes every connection. */
  async close(timeoutMs: number): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#reaper) clearInterval(this.#reaper);
    for (let w = this.#nextWaiter(); w; w = this.#nextWaiter()) w.reject(connectionEnded());
    const deadline = Date.now() + timeoutMs;
    while (this.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await Promise.all(
      [...this.#all].map(async (c) => {
        const ended = c.client.end().catch(() => {});
        const t = setTimeout(() => (c.client as unknown as InternalClient).connection.stream.destroy(), Math.max(0, deadline - Date.now()));
        await ended;
        clearTimeout(t);
      }),
    );
    this.#all.clear();
    this.#idle.length = 0;
  }
}

function connectionEnded(): Error {
  return Object.assign(new Error('pool closed'), { code: 'CONNECTION_ENDED' });
}

/** Opens a pool for one (project, env, connection). Connects lazily, on first query. Throws on an unusable URL. */
export function openPool(url: string, name: string, s: PoolSettings): Pool {
  return new PgPool(name, url, s);
}

export async function closePool(pool: Pool, timeoutSeconds = 5): Promise<void> {
  await (pool as PgPool).close(timeoutSeconds * 1000).catch(() => {});
}

// ---------------------------------------------------------------- execution

/** Where a query ran, to word its errors. */
export interface QueryContext {
  table: CompiledTable;
  tables: ReadonlyMap<string, CompiledTable>;
  op: Op;
  timeoutMs: number;
  log: FastifyBaseLogger;
}

interface PgResult {
  rows: Row[];
  rowCount: number | null;
}

const TIMED_OUT = Symbol('timeout');

const isReprepare = (err: unknown) => err instanceof pg.DatabaseError && REPREPARE_ROUTINES.has(err.routine ?? '');

/**
 * Runs `text` on a pooled connection within `limitMs` (waiting for a connection included); rejects
 * with TIMED_OUT past it. statement_timeout bounds the server side; this timer bounds waiting for a
 * connection or a dead network, and breaks the connection a query was stuck on. One promise and one
 * timer per query; the rest is callbacks.
 */
function runPooled(pool: PgPool, text: string, values: Array<string | null>, limitMs: number, prepare: boolean): Promise<PgResult> {
  return new Promise<PgResult>((resolve, reject) => {
    let settled = false;
    let conn: Conn | undefined;
    let retried = false;
    let name: string | undefined;
    const timer = setTimeout(() => {
      settled = true;
      if (conn) pool.kill(conn); // its callback still fires (connection terminated) and releases it
      else if (waiter) waiter.done = true;
      reject(TIMED_OUT);
    }, limitMs);
    const onResult = (err: Error | null, res: PgResult) => {
      const c = conn!;
      if (!settled && err && name !== undefined && !retried && isReprepare(err)) {
        retried = true;
        name = pool.renameStatement(c, text);
        c.client.query({ name, text, values }, onResult);
        return;
      }
      conn = undefined;
      pool.release(c);
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(res);
    };
    const waiter = pool.acquire(
      (c) => {
        if (settled) {
          pool.release(c);
          return;
        }
        conn = c;
        name = prepare ? pool.statementName(c, text) : undefined;
        c.client.query({ name, text, values }, onResult);
      },
      (e) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/** Runs one statement. Failures become AppErrors (4xx for the caller's data, 503/504/500 otherwise). */
export async function execute(p: Pool, q: SqlQuery, c: QueryContext): Promise<Rows> {
  const pool = p as PgPool;
  if (pool.inflight >= pool.maxInflight) {
    throw new AppError('SERVICE_UNAVAILABLE', `too many concurrent queries on connection '${pool.name}'; retry later`);
  }
  pool.inflight++;
  try {
    const res = await runPooled(pool, q.text, q.values, c.timeoutMs + 1000, true);
    const rows = res.rows as Rows;
    rows.count = res.rowCount ?? rows.length;
    return rows;
  } catch (err) {
    throw err === TIMED_OUT ? timeoutError(c) : dbError(err, c, pool.name);
  } finally {
    pool.inflight--;
  }
}

/** `select 1` within the timeout. */
export async function ping(p: Pool, timeoutMs: number): Promise<boolean> {
  try {
    await runPooled(p as PgPool, 'select 1', [], timeoutMs, false);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- errors

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
  'CONNECTION_ENDED',
]);

/** The fields of a PostgreSQL error the mapping reads (pg's DatabaseError). */
interface PgErrorFields {
  code?: string;
  detail?: string;
  column?: string;
  table?: string;
  constraint?: string;
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

/** Maps a driver failure to the error the caller sees. Details go to the log, never values or SQL. */
export function dbError(err: unknown, c: QueryContext, connection: string): AppError {
  const t = c.table;
  if (err instanceof ConnectError) {
    const cause = (err.cause ?? {}) as PgErrorFields & { name?: string };
    c.log.warn({ errCode: cause.code, pgCode: err.cause instanceof pg.DatabaseError ? cause.code : undefined, connection, table: t.name, op: c.op }, 'database unreachable');
    return new AppError('SERVICE_UNAVAILABLE', `database of connection '${connection}' is unavailable`);
  }
  const e = (err ?? {}) as PgErrorFields & { name?: string };
  const code = e.code ?? '';
  if (code === '57014') return timeoutError(c);
  if (err instanceof pg.DatabaseError) {
    const table = e.table ?? '';
    switch (code) {
      case '23505': {
        const cols = keyColumns(e.detail, c.tables.get(table) ?? t);
        return new AppError('CONFLICT', cols ? `duplicate value: '${table || t.name}' already has a row with this ${names(cols)}` : `duplicate value violates unique constraint '${e.constraint ?? ''}'`);
      }
      case '23502':
        return new AppError('BAD_REQUEST', `column '${e.column ?? '?'}' of '${table || t.name}' must not be null`);
      case '23503': {
        if (e.detail?.includes('still referenced')) {
          const from = c.tables.get(table);
          const refCols = from ? [...from.relations.values()].filter((r) => r.target.name === t.name).map((r) => r.column.name) : [];
          const via = refCols.length ? ` (${names(refCols)})` : '';
          return new AppError('CONFLICT', `row of '${t.name}' is still referenced from '${table || '?'}'${via}`);
        }
        const cols = keyColumns(e.detail, c.tables.get(table) ?? t);
        const col = cols?.[0] ? t.byName.get(cols[0]) : undefined;
        const rel = col ? [...t.relations.values()].find((r) => r.column === col) : undefined;
        return new AppError('BAD_REQUEST', cols ? `${names(cols)} must reference an existing row${rel ? ` of '${rel.target.name}'` : ''}` : `foreign key constraint '${e.constraint ?? ''}' violated`);
      }
      case '23514':
        return new AppError('BAD_REQUEST', `row violates check constraint '${e.constraint ?? ''}'`);
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
      c.log.error({ pgCode: code, connection, table: t.name, op: c.op, pgTable: e.table, pgColumn: e.column }, 'database schema does not match the release');
      return new AppError('INTERNAL_ERROR', `database schema of connection '${connection}' does not match the release (missing table or column); run stk apply`);
    }
    c.log.error({ pgCode: code, severity: e.severity, routine: e.routine, constraint: e.constraint, connection, table: t.name, op: c.op, pgMessage: e.message }, 'database error');
    return new AppError('INTERNAL_ERROR', 'database error');
  }
  // not a server error: the connection broke under the query (reset, terminated, pool closing)
  if (CONNECTION_CODES.has(code) || isConnectionLoss(e.message)) {
    c.log.warn({ errCode: code || undefined, connection, table: t.name, op: c.op }, 'database unreachable');
    return new AppError('SERVICE_UNAVAILABLE', `database of connection '${connection}' is unavailable`);
  }
  c.log.error({ errCode: code, errName: e.name, connection, table: t.name, op: c.op }, 'database driver error');
  return new AppError('INTERNAL_ERROR', 'database error');
}

/** pg's own messages for a connection that died under a query. */
function isConnectionLoss(message: string | undefined): boolean {
  return !!message && /^(Connection terminated|Client has encountered a connection error|Client was closed|Connection closed)/.test(message);
}
