/**
 * The only module that talks to PostgreSQL (node-postgres `pg`). Pools, query execution with a
 * timeout, and the mapping of database failures to client-facing errors that never carry SQL text,
 * bound values or connection URLs.
 *
 * Cost model (measured on the benchmark machine, see docs/performance.md): a socket write that wakes
 * another process is the most expensive thing a request does, more than all of its JavaScript. So:
 *  - `pg.Client` with a named prepared statement per SQL text: parsed once per connection, then one
 *    Bind/Describe/Execute/Sync; ~18 µs of client CPU per query against ~30 µs for postgres.js and
 *    ~20 µs for `pg.Pool` (acquire/release promises and an idle timer per query);
 *  - connections run in pipeline mode, and the queries started in the same event-loop turn go to
 *    one connection whose socket stays corked until the turn ends (setImmediate): N concurrent
 *    requests cost one write and one database wake-up instead of N. Each query still has its own Sync,
 *    so an error or a statement_timeout stays with its own query.
 * Pipelining must not make a fast request wait behind a slow one, so a query is only ever queued
 * behind statements this pool has seen to be fast (moving average of their service time under
 * FAST_MS). A new or slow statement can end a batch but nothing is queued after it; the next query
 * takes an idle connection, a new one (up to max), or waits for one. Also no connection holds more
 * than PIPELINE_DEPTH queries, and nothing is queued behind a query that has run for HOL_MS (a fast
 * statement that is stuck on a lock, say).
 *
 * Answer bytes are counted as they arrive (./response-budget.ts): a walker in front of pg's parser reads
 * the header of every message on a connection's socket (type and length, before pg buffers the body)
 * and charges each DataRow to the query it belongs to. A read whose answer passes its budget is stopped
 * there: its connection is closed, so the rest of its rows is never received, buffered or parsed.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { FastifyBaseLogger } from 'fastify';
import { parseDbUrl, pgConnectionConfig } from '../../common/db-url.js';
import type { HostPolicy } from '../../common/net-policy.js';
import { AppError } from '../../protocol/errors.js';
import type { Op } from '../../protocol/release.js';
import type { CompiledTable } from '../release-cache/compile.js';
import type { SqlQuery } from '../sql/build.js';
import { Overflow, type ResponseBudget } from './response-budget.js';
import type { HistogramCell } from '../../common/metric-cells.js';
import type { TraceSpan } from '../../common/tracing.js';

export { ResponseGauge, type ResponseBudget, type ResponseLimits } from './response-budget.js';

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
  /** loopback/link-local/metadata hosts the operator allows (STK_CONNECTION_ALLOW_HOSTS) */
  allow: HostPolicy;
  /** with /metrics on: every `/call` query's duration in seconds (waiting for a connection included) */
  queryTimes?: HistogramCell;
}

/** A pool's connections and queues now (read by /metrics at scrape time). */
export interface PoolStats {
  /** open connections */
  open: number;
  /** connections with at least one query sent and not answered */
  busy: number;
  /** queries waiting for a connection with room */
  waiting: number;
  /** queries sent and not answered, over every connection */
  sent: number;
  /** the most queries one connection has in its pipeline */
  maxDepth: number;
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

/** queries a connection may have in flight (sent, unanswered) */
const PIPELINE_DEPTH = 16;
/** no more queries are queued behind one that has been running this long */
const HOL_MS = 20;
/** a statement whose average service time is under this may have queries queued behind it */
const FAST_MS = 5;

/** A failure to open a connection (network, TLS, authentication): always "database unavailable". */
class ConnectError extends Error {
  constructor(cause: unknown) {
    super('connection failed', { cause });
  }
}

interface Conn {
  readonly client: pg.Client;
  /**
   * prefix of this connection's statement names: unique per connection, because a session can be
   * shared (the embedded PostgreSQL of `stk dev` serves every connection from one session)
   */
  readonly prefix: string;
  /** queries sent and not answered yet */
  inflight: number;
  /** when each in-flight query was sent, oldest first */
  readonly sentAt: number[];
  /** in-flight queries of statements not known to be fast: nothing is queued behind them */
  slow: number;
  /** when the previous answer arrived (start of the next query's service time) */
  lastDone: number;
  lastUsed: number;
  broken: boolean;
  /** closed because a read on it passed its answer budget (the reads queued behind it are re-sent) */
  stopped: boolean;
  /** the socket is corked for the current turn's batch */
  corked: boolean;
  /** wire walker: body bytes of the message in progress still to come */
  wSkip: number;
  /** wire walker: the message in progress is a ReadyForQuery (pg has not processed it yet) */
  wZ: boolean;
  /** wire walker: a message header cut by the end of a chunk (bytes so far in wHead) */
  wHeadLen: number;
  wHead: Buffer | undefined;
}

/** One query from `execute`/`ping` on its way through the pool. */
interface Job {
  readonly text: string;
  readonly values: Array<string | null>;
  readonly prepare: boolean;
  /** called exactly once per attempt with the driver's answer */
  readonly done: (err: Error | null, res: PgResult | undefined) => void;
  conn: Conn | undefined;
  query: unknown;
  stmt: Stmt | undefined;
  sentAt: number;
  slow: boolean;
  /** gave up (timeout) while still waiting for a connection */
  dropped: boolean;
  retried: boolean;
  /** re-sent once after its connection was closed under it for another query's budget */
  resent: boolean;
  /** a row of its answer has arrived */
  gotRows: boolean;
  /** the answer's byte budget (`/call` queries; none for pings) */
  readonly budget: ResponseBudget | undefined;
}

interface PgResult {
  rows: Row[];
  rowCount: number | null;
}

/** A SQL text this pool prepares: its statement number and its average service time. */
interface Stmt {
  n: string;
  /** moving average in ms; -1 until measured */
  ms: number;
}
const isFast = (st: Stmt | undefined) => st !== undefined && st.ms >= 0 && st.ms < FAST_MS;

interface InternalClient {
  host: string;
  port: number;
  processID: number | null;
  secretKey: number | null;
  connection: {
    stream: { cork(): void; uncork(): void; destroy(): void };
    on(event: string, fn: () => void): void;
    connect(port: number | string, host?: string): void;
    cancel(processID: number, secretKey: number): void;
    end(): void;
  };
  _getActiveQuery(): unknown;
  /** pipeline mode: the query being answered, then the ones sent after it, in order */
  _activeQuery: BridgeQuery | null;
  _sentQueryQueue: BridgeQuery[];
}
const internal = (c: pg.Client) => c as unknown as InternalClient;

interface DataRowMessage {
  length: number;
}
/** pg's Query with the parts this module uses (they are not in @types/pg) */
interface PgQueryInternals {
  name: string | undefined;
  handleDataRow(msg: DataRowMessage): void;
}
type PgQueryClass = new (text: string, values: unknown[], callback: (err: Error | undefined, res: unknown) => void) => PgQueryInternals;

/**
 * A query that knows its job: the walker finds the budget through it, and once the budget has
 * overflowed its rows are no longer parsed or kept (a write's statement still runs to its end).
 */
class BridgeQuery extends (pg.Query as unknown as PgQueryClass) {
  job: Job | undefined = undefined;
  override handleDataRow(msg: DataRowMessage): void {
    const b = this.job?.budget;
    if (b === undefined || b.overflow === Overflow.None) super.handleDataRow(msg);
  }
}

/** PostgreSQL message types the walker looks at */
const MSG_DATA_ROW = 0x44; // 'D'
const MSG_READY = 0x5a; // 'Z'
const MSG_HEADER = 5;

/**
 * The URL checked (syntax, and the address policy on the host as written); throws on an unusable or
 * refused URL. Each connection's socket checks what the host resolves to when it connects
 * (common/db-url.ts), so a name later re-pointed at a refused address is refused then.
 */
function clientConfig(url: string, s: PoolSettings): pg.ClientConfig {
  let where: pg.ClientConfig;
  try {
    where = pgConnectionConfig(parseDbUrl(url), s.allow);
  } catch (e) {
    // never echo the URL: it carries the password (parseDbUrl's messages never quote it)
    throw new Error(e instanceof AppError ? `connection URL refused: ${e.message}` : 'connection URL is not a valid URL');
  }
  return {
    application_name: 'santokit-bridge',
    ...where,
    statement_timeout: s.queryTimeoutMs,
    options: '-c TimeZone=UTC',
    connectionTimeoutMillis: Math.max(1, Math.min(10, Math.ceil(s.queryTimeoutMs / 1000))) * 1000,
    keepAlive: true,
    keepAliveInitialDelayMillis: 60_000,
    types: TYPES,
    pipeline: true,
  };
}

const isReprepare = (err: unknown) => err instanceof pg.DatabaseError && REPREPARE_ROUTINES.has(err.routine ?? '');

class PgPool implements Pool {
  inflight = 0;
  readonly maxInflight: number;
  readonly queryTimes: HistogramCell | undefined;
  readonly #config: pg.ClientConfig;
  readonly #max: number;
  /** open connections, oldest first */
  readonly #conns: Conn[] = [];
  #opening = 0;
  /** jobs waiting for a connection with room */
  #waiting: Job[] = [];
  /** the connection this event-loop turn's queries go to */
  #batch: Conn | undefined;
  readonly #flush = () => {
    const c = this.#batch;
    this.#batch = undefined;
    if (c && c.corked) {
      c.corked = false;
      internal(c.client).connection.stream.uncork();
    }
  };
  /** SQL text → statement (named `<connection prefix><number>` on each connection) */
  readonly #stmts = new Map<string, Stmt>();
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
    this.queryTimes = s.queryTimes;
  }

  stats(): PoolStats {
    let busy = 0;
    let sent = 0;
    let maxDepth = 0;
    for (const c of this.#conns) {
      if (c.inflight > 0) busy++;
      sent += c.inflight;
      if (c.inflight > maxDepth) maxDepth = c.inflight;
    }
    let waiting = 0;
    for (const j of this.#waiting) if (!j.dropped) waiting++;
    return { open: this.#conns.length, busy, waiting, sent, maxDepth };
  }

  /** Sends `job` on a connection with room, or queues it until one has room (opening one when under max). */
  submit(job: Job): void {
    if (this.#closed) {
      job.done(connectionEnded(), undefined);
      return;
    }
    const c = this.#pick(Date.now());
    if (c) this.#send(c, job);
    else {
      this.#waiting.push(job);
      this.#grow();
    }
  }

  /** Gives up on a job still waiting for a connection. */
  drop(job: Job): void {
    job.dropped = true;
  }

  /**
   * Breaks a connection a query is stuck on (its statement_timeout did not answer: dead network). Asks
   * the server to cancel, then destroys the socket: every query on it fails at once.
   */
  kill(c: Conn): void {
    if (c.broken) return;
    c.broken = true;
    const ic = internal(c.client);
    if (ic.processID !== null && ic.secretKey !== null) {
      try {
        // the cancel request goes through the same checked socket (common/db-url.ts), to host and port
        const con = internal(new pg.Client(this.#config)).connection;
        con.on('error', () => {});
        con.on('connect', () => {
          con.cancel(ic.processID!, ic.secretKey!);
          setTimeout(() => con.end(), 2000).unref();
        });
        con.connect(ic.port, ic.host);
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

  /** Whether `job` is the query its connection is running now (not one queued behind it). */
  isRunning(job: Job): boolean {
    return !!job.conn && internal(job.conn.client)._getActiveQuery() === job.query;
  }

  /** The connection for a query now: this turn's batch connection, an idle one, or the least busy with room. */
  #pick(now: number): Conn | undefined {
    const b = this.#batch;
    if (b && this.#hasRoom(b, now)) return b;
    let best: Conn | undefined;
    for (const c of this.#conns) {
      if (c.inflight === 0 && !c.broken) return c;
      if (this.#hasRoom(c, now) && (!best || c.inflight < best.inflight)) best = c;
    }
    // every connection is busy: open another (queries wait for it) rather than queue behind them
    if (this.#conns.length + this.#opening < this.#max) return undefined;
    return best;
  }

  /** May a query be queued on `c` now (behind what it is running)? */
  #hasRoom(c: Conn, now: number): boolean {
    return !c.broken && (c.inflight === 0 || (c.slow === 0 && c.inflight < PIPELINE_DEPTH && now - c.sentAt[0]! < HOL_MS));
  }

  #send(c: Conn, job: Job): void {
    job.conn = c;
    if (!c.corked) {
      // the first query of this turn on this connection: hold its writes until the turn ends
      if (this.#batch && this.#batch !== c) this.#flush();
      c.corked = true;
      internal(c.client).connection.stream.cork();
      if (!this.#batch) setImmediate(this.#flush);
      this.#batch = c;
    }
    const now = Date.now();
    c.inflight++;
    c.sentAt.push(now);
    job.sentAt = now;
    job.stmt = job.prepare ? this.#statement(job.text, job.retried) : undefined;
    job.slow = !isFast(job.stmt);
    if (job.slow) c.slow++;
    const name = job.stmt ? c.prefix + job.stmt.n : undefined;
    // (text, values, callback) rather than a config object: pg copies a config object through its
    // property descriptors on every query (~1 µs); the statement name is set before it is submitted
    const q = new BridgeQuery(job.text, job.values, (err: Error | undefined, res: unknown) => this.#answered(c, job, err ?? null, res as PgResult));
    q.name = name;
    q.job = job;
    job.query = q;
    c.client.query(q as never);
  }

  #answered(c: Conn, job: Job, err: Error | null, res: PgResult | undefined): void {
    const now = Date.now();
    c.inflight--;
    c.sentAt.shift();
    if (job.slow) c.slow--;
    const st = job.stmt;
    if (st && !err) {
      const ms = now - Math.max(job.sentAt, c.lastDone);
      st.ms = st.ms < 0 ? ms : st.ms * 0.8 + ms * 0.2;
    }
    c.lastDone = now;
    c.lastUsed = now;
    // the server is closing this session (terminated backend, shutdown): take nothing more on it
    if (err instanceof pg.DatabaseError && (err.severity === 'FATAL' || err.severity === 'PANIC')) c.broken = true;
    if (err && job.prepare && !job.retried && !c.broken && isReprepare(err)) {
      // the plan no longer fits the schema (or the statement is gone): re-prepare under a new name, once
      job.retried = true;
      this.#send(c, job);
    } else if (err && c.stopped && !job.resent && !job.gotRows && job.budget !== undefined && job.budget.read) {
      // a read queued behind the one stopped for its budget: it got no row, and a read can safely
      // run again, on another connection
      job.resent = true;
      job.conn = undefined;
      this.submit(job);
    } else job.done(err, res);
    if (c.broken && c.inflight === 0) this.#discard(c);
    this.#drain();
  }

  /** Dispatches waiting jobs to connections with room. */
  #drain(): void {
    while (this.#waiting.length) {
      const job = this.#waiting[0]!;
      if (job.dropped) {
        this.#waiting.shift();
        continue;
      }
      const c = this.#pick(Date.now());
      if (!c) {
        this.#grow();
        return;
      }
      this.#waiting.shift();
      this.#send(c, job);
    }
  }

  /** Opens a connection when jobs wait and the pool is under max. */
  #grow(): void {
    if (this.#closed || this.#opening > 0 || this.#conns.length + this.#opening >= this.#max) return;
    this.#open();
  }

  #open(): void {
    this.#opening++;
    const client = new pg.Client(this.#config);
    const conn: Conn = {
      client,
      prefix: `stk${randomBytes(4).toString('hex')}_`,
      inflight: 0,
      sentAt: [],
      slow: 0,
      lastDone: 0,
      lastUsed: Date.now(),
      broken: false,
      stopped: false,
      corked: false,
      wSkip: 0,
      wZ: false,
      wHeadLen: 0,
      wHead: undefined,
    };
    // a connection that dies (server restart, network) must not crash the process; its queries fail
    client.on('error', () => {
      conn.broken = true;
    });
    client.on('end', () => {
      conn.broken = true;
      if (conn.inflight === 0) this.#discard(conn);
    });
    client.connect((err: Error | null) => {
      this.#opening--;
      if (err) {
        conn.broken = true;
        void client.end().catch(() => {});
        // no connection at all: every waiting query learns that the database is unreachable now (they
        // would otherwise each wait for their own connect timeout in turn); with connections open (the
        // server refused one more, say) only the first waiting query fails and the rest keep waiting
        const first = this.#waiting.findIndex((j) => !j.dropped);
        const failed = this.#conns.length === 0 || first < 0 ? this.#waiting.splice(0) : this.#waiting.splice(0, first + 1);
        for (const job of failed) if (!job.dropped) job.done(new ConnectError(err), undefined);
        if (this.#waiting.length) this.#grow();
        return;
      }
      if (this.#closed) {
        void client.end().catch(() => {});
        return;
      }
      this.#watch(conn);
      this.#conns.push(conn);
      this.#startReaper();
      this.#drain();
    });
  }

  /**
   * Puts the wire walker in front of pg's parser on this connection's socket: every chunk is walked
   * first (message headers only), then handed to pg as before.
   */
  #watch(c: Conn): void {
    const stream = internal(c.client).connection.stream as unknown as NodeJS.EventEmitter;
    const listeners = stream.listeners('data') as Array<(buf: Buffer) => void>;
    if (listeners.length !== 1) throw new Error(`pg: expected one data listener on the socket, found ${listeners.length}`);
    const parse = listeners[0]!;
    stream.removeListener('data', parse);
    stream.on('data', (buf: Buffer) => {
      this.#walk(c, buf);
      parse(buf);
    });
  }

  /**
   * Reads the message headers in one chunk from PostgreSQL and charges each DataRow (its full size)
   * to the budget of the query it answers. The k-th query in pg's pipeline (active query first) is
   * the one answered after k more ReadyForQuery messages, counted from pg's state at this chunk's
   * start (pg parses the chunk right after this). A cut header or body continues in the next chunk.
   */
  #walk(c: Conn, buf: Buffer): void {
    const n = buf.length;
    let i = 0;
    // ReadyForQuery messages before the current position that pg has not processed yet
    let ready = 0;
    if (c.wSkip > 0) {
      // the rest of a message whose header came in an earlier chunk
      if (c.wSkip >= n) {
        c.wSkip -= n;
        return;
      }
      i = c.wSkip;
      c.wSkip = 0;
      if (c.wZ) ready = 1;
      c.wZ = false;
    }
    while (i < n) {
      let type: number;
      let len: number;
      if (c.wHeadLen > 0 || n - i < MSG_HEADER) {
        // a header cut across chunks: gather its 5 bytes
        const head = (c.wHead ??= Buffer.allocUnsafe(MSG_HEADER));
        const take = Math.min(MSG_HEADER - c.wHeadLen, n - i);
        buf.copy(head, c.wHeadLen, i, i + take);
        c.wHeadLen += take;
        i += take;
        if (c.wHeadLen < MSG_HEADER) return;
        c.wHeadLen = 0;
        type = head[0]!;
        len = head.readUInt32BE(1);
      } else {
        type = buf[i]!;
        len = buf.readUInt32BE(i + 1);
        i += MSG_HEADER;
      }
      if (len < 4) {
        // not PostgreSQL's protocol any more: nothing on this connection can be trusted
        this.kill(c);
        return;
      }
      if (type === MSG_DATA_ROW) {
        if (!this.#charge(c, ready, len + 1)) return;
      } else if (type === MSG_READY) ready++;
      const body = len - 4;
      if (body > n - i) {
        c.wSkip = body - (n - i);
        c.wZ = type === MSG_READY;
        return;
      }
      i += body;
    }
  }

  /**
   * Charges one DataRow of `bytes` to the budget of the query at `index` in pg's pipeline; false when
   * that closed the connection.
   */
  #charge(c: Conn, index: number, bytes: number): boolean {
    const ic = internal(c.client);
    const active = ic._activeQuery;
    const q = active ? (index === 0 ? active : ic._sentQueryQueue[index - 1]) : ic._sentQueryQueue[index];
    const j = q?.job;
    if (j === undefined) return true;
    j.gotRows = true;
    const b = j.budget;
    if (b === undefined || b.add(bytes)) return true;
    // a read stops here: closing the connection is the only way not to receive the rest of its rows.
    // A write's statement runs to its end (its rows are dropped), unless one row alone could not fit
    if (!b.read && bytes <= b.gauge.limits.maxBytes) return true;
    c.stopped = true;
    this.kill(c);
    return false;
  }

  #discard(c: Conn): void {
    const i = this.#conns.indexOf(c);
    if (i >= 0) this.#conns.splice(i, 1);
    c.broken = true;
    if (this.#batch === c) this.#batch = undefined;
    void c.client.end().catch(() => {});
  }

  /**
   * The statement for `text` (a fresh number when `renew`: every connection re-parses it), or
   * undefined (run unnamed) once the pool's cap is reached.
   */
  #statement(text: string, renew: boolean): Stmt | undefined {
    let st = this.#stmts.get(text);
    if (st === undefined) {
      if (this.#stmts.size >= MAX_PREPARED_PER_POOL) return undefined;
      st = { n: (this.#statementSeq++).toString(36), ms: -1 };
      this.#stmts.set(text, st);
    } else if (renew) st.n = (this.#statementSeq++).toString(36);
    return st;
  }

  #startReaper(): void {
    if (this.#reaper) return;
    this.#reaper = setInterval(() => {
      const cutoff = Date.now() - IDLE_TIMEOUT_MS;
      for (const c of [...this.#conns]) if (c.inflight === 0 && c.lastUsed < cutoff) this.#discard(c);
      if (this.#conns.length === 0 && this.#reaper) {
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
    for (const job of this.#waiting.splice(0)) if (!job.dropped) job.done(connectionEnded(), undefined);
    const deadline = Date.now() + timeoutMs;
    while (this.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await Promise.all(
      this.#conns.splice(0).map(async (c) => {
        const t = setTimeout(() => internal(c.client).connection.stream.destroy(), Math.max(0, deadline - Date.now()));
        await c.client.end().catch(() => {});
        clearTimeout(t);
      }),
    );
  }
}

function connectionEnded(): Error {
  return Object.assign(new Error('pool closed'), { code: 'CONNECTION_ENDED' });
}

/** Opens a pool for one (project, env, connection). Connects lazily, on first query. Throws on an unusable URL. */
export function openPool(url: string, name: string, s: PoolSettings): Pool {
  return new PgPool(name, url, s);
}

export function poolStats(pool: Pool): PoolStats {
  return (pool as PgPool).stats();
}

export async function closePool(pool: Pool, timeoutSeconds = 5): Promise<void> {
  await (pool as PgPool).close(timeoutSeconds * 1000).catch(() => {});
}

// ---------------------------------------------------------------- execution

/** Where a query ran, to word its errors; and the budget its rows are charged to. */
export interface QueryContext {
  table: CompiledTable;
  tables: ReadonlyMap<string, CompiledTable>;
  op: Op;
  timeoutMs: number;
  log: FastifyBaseLogger;
  budget?: ResponseBudget;
  /** the request's span with tracing on: each statement becomes a `stk.query` child of it */
  trace?: TraceSpan | null;
}

/** the one rejection of a query past its time limit, told apart by identity (never shown: timeoutError is) */
const TIMED_OUT = new Error('query timed out');

/**
 * Runs `text` through the pool within `limitMs` (waiting for a connection included); rejects with
 * TIMED_OUT past it. statement_timeout bounds the server side; this timer bounds waiting for a
 * connection or a dead network: a query that is running on the server past it breaks its connection,
 * one still queued behind another is just abandoned (its answer is dropped when it comes).
 */
function runPooled(pool: PgPool, text: string, values: Array<string | null>, limitMs: number, prepare: boolean, budget?: ResponseBudget): Promise<PgResult> {
  return new Promise<PgResult>((resolve, reject) => {
    let settled = false;
    const job: Job = {
      text,
      values,
      prepare,
      conn: undefined,
      query: undefined,
      stmt: undefined,
      sentAt: 0,
      slow: true,
      dropped: false,
      retried: false,
      resent: false,
      gotRows: false,
      budget,
      done(err, res) {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(res!);
      },
    };
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      if (!job.conn) pool.drop(job);
      else if (pool.isRunning(job)) pool.kill(job.conn);
      reject(TIMED_OUT);
    }, limitMs);
    pool.submit(job);
  });
}

/** Runs one statement. Failures become AppErrors (4xx for the caller's data, 503/504/500 otherwise). */
export async function execute(p: Pool, q: SqlQuery, c: QueryContext): Promise<Rows> {
  const pool = p as PgPool;
  if (pool.inflight >= pool.maxInflight) {
    throw new AppError('SERVICE_UNAVAILABLE', `too many concurrent queries on connection '${pool.name}'; retry later`);
  }
  pool.inflight++;
  const budget = c.budget;
  const times = pool.queryTimes;
  const t0 = times === undefined ? 0 : performance.now();
  const span =
    c.trace == null
      ? null
      : c.trace.child('stk.query', { 'db.system.name': 'postgresql', 'stk.connection': pool.name, 'stk.table': c.table.name, 'stk.op': c.op });
  try {
    const res = await runPooled(pool, q.text, q.values, c.timeoutMs + 1000, true, budget);
    if (budget !== undefined && budget.overflow !== Overflow.None) throw budgetError(budget, c.op, res.rowCount);
    const rows = res.rows as Rows;
    rows.count = res.rowCount ?? rows.length;
    return rows;
  } catch (err) {
    span?.fail(err instanceof AppError ? err.code : err === TIMED_OUT ? 'TIMED_OUT' : 'database error');
    if (err instanceof AppError) throw err;
    // a query stopped for its budget fails as a broken connection: say why instead
    if (budget !== undefined && budget.overflow !== Overflow.None) throw budgetError(budget, c.op, null);
    throw err === TIMED_OUT ? timeoutError(c) : dbError(err, c, pool.name);
  } finally {
    pool.inflight--;
    if (times !== undefined) times.observe((performance.now() - t0) / 1000);
    span?.end();
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

const mb = (n: number) => (n % (1024 * 1024) === 0 ? `${n / (1024 * 1024)} MB` : `${n} bytes`);

/**
 * The error for an answer over its budget: 503 + Retry-After when the Bridge is holding its limit of
 * answers; 400 RESPONSE_TOO_LARGE otherwise (for a write, saying whether it was applied).
 */
export function budgetError(b: ResponseBudget, op: Op, affected: number | null): AppError {
  if (b.overflow === Overflow.Busy) {
    return new AppError(
      'SERVICE_UNAVAILABLE',
      'this Bridge is holding its limit of large answers in memory; retry shortly, or ask for less (select fewer columns, page with limit/offset)',
      {
        headers: { 'retry-after': '1' },
      },
    );
  }
  const max = mb(b.gauge.limits.maxBytes);
  if (op === 'select')
    return new AppError('RESPONSE_TOO_LARGE', `the answer exceeds ${max}; select fewer columns, narrow the where, or page with limit/offset`);
  const what = op === 'insert' ? 'inserted' : op === 'update' ? 'updated' : 'deleted';
  return new AppError(
    'RESPONSE_TOO_LARGE',
    affected === null
      ? `a row the ${op} returned alone exceeds ${max}; the ${op} may or may not have been applied`
      : `the ${op} was applied (${affected} row${affected === 1 ? '' : 's'} ${what}), but the rows it returns exceed ${max} and are not sent; ${op === 'insert' ? 'insert fewer rows at a time' : 'narrow the where to change fewer rows at a time'}`,
    { details: affected === null ? undefined : { applied: true, affected } },
  );
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
  const names = detail
    .slice(5, end)
    .split(', ')
    .map((n) => (n.startsWith('"') && n.endsWith('"') ? n.slice(1, -1).replace(/""/g, '"') : n));
  return names.every((n) => table.byName.has(n)) ? names : null;
}

const names = (cols: string[]) => cols.map((n) => `'${n}'`).join(', ');

/** Maps a driver failure to the error the caller sees. Details go to the log, never values or SQL. */
export function dbError(err: unknown, c: QueryContext, connection: string): AppError {
  const t = c.table;
  if (err instanceof ConnectError) {
    const cause = (err.cause ?? {}) as PgErrorFields & { name?: string };
    const refused = err.cause instanceof AppError ? err.cause.message : undefined; // the address policy (names the host, never the URL)
    c.log.warn(
      {
        errCode: refused ? undefined : cause.code,
        pgCode: err.cause instanceof pg.DatabaseError ? cause.code : undefined,
        refused,
        connection,
        table: t.name,
        op: c.op,
      },
      'database unreachable',
    );
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
        return new AppError(
          'CONFLICT',
          cols
            ? `duplicate value: '${table || t.name}' already has a row with this ${names(cols)}`
            : `duplicate value violates unique constraint '${e.constraint ?? ''}'`,
        );
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
        return new AppError(
          'BAD_REQUEST',
          cols
            ? `${names(cols)} must reference an existing row${rel ? ` of '${rel.target.name}'` : ''}`
            : `foreign key constraint '${e.constraint ?? ''}' violated`,
        );
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
      return new AppError(
        'INTERNAL_ERROR',
        `database schema of connection '${connection}' does not match the release (missing table or column); run stk apply`,
      );
    }
    c.log.error(
      { pgCode: code, severity: e.severity, routine: e.routine, constraint: e.constraint, connection, table: t.name, op: c.op, pgMessage: e.message },
      'database error',
    );
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
