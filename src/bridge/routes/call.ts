/**
 * `POST /call {"path":"db/<table>/<select|insert|update|delete>","params":{…}}` — the data plane.
 *
 * Order of checks, in the route's `onRequest` hook before the body is read (../route-auth.ts): the
 * Bridge within max-stale (503), the credential (401/429/503) and the hint headers agreeing with its
 * binding (403) → body (415 unless JSON, 400 if malformed or nested deeper than 64) → release loaded
 * (503) → path (400/404) → permission rule (403) → params (400) → SQL → rows, counted against
 * the answer's byte budget as they arrive (400 RESPONSE_TOO_LARGE / 503). Every step before SQL is an
 * in-memory lookup.
 */
import { Transform } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest, preParsingHookHandler } from 'fastify';
import { contractRoute } from '../../common/contract-route.js';
import { BODY_LIMIT_BYTES } from '../../common/http.js';
import type { CallRequest } from '../../protocol/call.js';
import { AppError, badRequest, forbidden, notFound, unavailable } from '../../protocol/errors.js';
import { OPS, type Op } from '../../protocol/release.js';
import { BRIDGE_API } from '../../protocol/api/bridge.js';
import type { BridgeContext, Principal } from '../context.js';
import { budgetError, execute, ResponseGauge, type QueryContext, type ResponseBudget, type Row, type Rows } from '../executor/index.js';
import { FREE_BYTES, Overflow } from '../executor/response-budget.js';
import { authorize } from '../permissions/index.js';
import type { ActiveEnv, CompiledTable } from '../release-cache/index.js';
import { buildDelete, buildInsert, buildSelect, buildUpdate } from '../sql/build.js';
import { checkParamNames, planDelete, planExpand, planInsert, planSelect, planUpdate } from '../sql/params.js';
import type { TraceSpan } from '../../common/tracing.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** the operation a /call resolved to (declared in app.ts), for its latency histogram (../metrics.ts) */
    stkOp: Op | null;
  }
}

type Obj = Record<string, unknown>;
const EMPTY_PARAMS: Obj = Object.freeze({}) as Obj;
const OP_SET: ReadonlySet<string> = new Set(OPS);
/** a response whose rows are still sending after this long is cut (its reserved bytes come back) */
const SEND_TIMEOUT_MS = 60_000;

/** Explains a path that is not `db/<known table>/<op>`. */
function pathError(path: string, env: ActiveEnv): AppError {
  const shown = path.length > 200 ? path.slice(0, 200) + '…' : path;
  const parts = path.split('/');
  if (parts[0] !== 'db' || parts.length !== 3 || !parts[1]) return badRequest(`unsupported path '${shown}'; expected db/<table>/<select|insert|update|delete>`);
  if (!OP_SET.has(parts[2]!)) return badRequest(`unknown operation '${parts[2]}' in path '${shown}'; expected select, insert, update or delete`);
  return notFound(`unknown table '${parts[1]}' in ${env.project}/${env.env}`);
}

/**
 * Keeps a budget's reserved bytes until its response has left (or the client is gone), and cuts a
 * response still sending after SEND_TIMEOUT_MS (a client that does not read).
 */
function holdUntilSent(reply: FastifyReply, budget: ResponseBudget): void {
  const res = reply.raw;
  const timer = setTimeout(() => {
    if (!res.writableFinished) res.destroy();
  }, SEND_TIMEOUT_MS);
  timer.unref();
  res.once('close', () => {
    clearTimeout(timer);
    budget.release();
  });
}

export default async function callRoutes(app: FastifyInstance, { ctx }: { ctx: BridgeContext }) {
  const { config, releases, responses: gauge } = ctx;
  const timeoutMs = config.queryTimeoutMs;
  const maxBytes = config.responseMaxBytes;
  /**
   * Rows are counted in PostgreSQL's wire format; their JSON is at most ~18× that (a 63-character
   * column name around an empty value): below this many counted bytes the JSON cannot pass the bound,
   * above it the serialized answer is measured exactly.
   */
  const exactFrom = Math.floor(maxBytes / 32);

  /** `{"data": …}`: as an object (Fastify serializes it) or, for a large answer, serialized and measured here. */
  function answer(reply: FastifyReply, data: unknown, budget: ResponseBudget, op: Op, affected: number | null): unknown {
    if (budget.used > exactFrom) {
      const body = JSON.stringify({ data });
      // UTF-16 length ≤ UTF-8 bytes ≤ 3 × UTF-16 length
      const bytes = body.length > maxBytes || body.length * 3 <= maxBytes ? body.length : Buffer.byteLength(body);
      if (bytes > maxBytes) {
        budget.overflow = Overflow.TooLarge;
        throw budgetError(budget, op, affected);
      }
      if (bytes > budget.used && !budget.add(bytes - budget.used)) throw budgetError(budget, op, affected);
      if (budget.reserved > 0) holdUntilSent(reply, budget);
      reply.type('application/json; charset=utf-8');
      return body;
    }
    if (budget.reserved > 0) holdUntilSent(reply, budget);
    return { data };
  }

  /**
   * Request bodies in flight are bounded like answers: a body is charged to its project/env's share of
   * STK_RESPONSE_INFLIGHT_MAX_BYTES (the first 64 KB free) from its Content-Length before it is read,
   * or chunk by chunk when it has none, and held until its response has been sent. Over the bound →
   * 503 with Retry-After, before the body is buffered (one key's thousand 10 MB bodies would
   * otherwise take gigabytes of the shared Bridge).
   */
  const bodies = new ResponseGauge({ maxBytes: BODY_LIMIT_BYTES, inflightMaxBytes: config.responseInflightMaxBytes });
  const bodiesBusy = () =>
    new AppError('SERVICE_UNAVAILABLE', 'this Bridge is holding its limit of request bodies in memory; retry shortly, or send smaller bodies', {
      headers: { 'retry-after': '1' },
    });
  const chargeBody: preParsingHookHandler = (req: FastifyRequest, reply, payload, done) => {
    const p = req.principal;
    if (!p) return done(null, payload);
    // the common case, a body that declares at most the free 64 KB, takes nothing: no budget to hold
    const length = req.headers['content-length'];
    if (length !== undefined && length.length <= 5 && Number(length) <= FREE_BYTES) return done(null, payload);
    const budget = bodies.budget(p.project, p.env, true);
    reply.raw.once('close', () => budget.release());
    const declared = Number(req.headers['content-length']);
    if (req.headers['content-length'] !== undefined && Number.isSafeInteger(declared)) {
      // over the body limit: Fastify answers 413 from the header
      if (declared <= BODY_LIMIT_BYTES && !budget.add(declared)) return done(bodiesBusy());
      return done(null, payload);
    }
    const counted = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        if (!budget.add(chunk.length) && budget.overflow === Overflow.Busy) cb(bodiesBusy());
        else cb(null, chunk);
      },
    });
    payload.once('error', (e) => counted.destroy(e));
    done(null, payload.pipe(counted));
  };

  /**
   * One /call. With tracing on (req.stkTrace), `plan` is the span from here to the SQL text (path,
   * rule, params); each statement gets its own span in the executor.
   */
  async function handle(req: FastifyRequest, reply: FastifyReply, plan: TraceSpan | null): Promise<unknown> {
    // the route's auth hook (../route-auth.ts) authenticated the caller from the headers, before the body was read
    const principal = req.principal!;
    const env = releases.get(principal.project, principal.env);
    if (!env) throw unavailable(`no release loaded for ${principal.project}/${principal.env}; run stk apply`);

    const body = req.body as { [K in keyof CallRequest]?: unknown } | undefined;
    if (typeof body !== 'object' || body === null || Array.isArray(body))
      throw badRequest('body must be a JSON object {"path": "db/<table>/<op>", "params": {...}}');
    const path = body.path;
    if (typeof path !== 'string') throw badRequest('path is required: "db/<table>/<select|insert|update|delete>"');
    let params = body.params as Obj | undefined | null;
    if (params === undefined || params === null) params = EMPTY_PARAMS;
    else if (typeof params !== 'object' || Array.isArray(params)) throw badRequest('params must be an object');

    const target = env.release.paths.get(path);
    if (!target) throw pathError(path, env);
    const { table, op } = target;
    req.stkOp = op;
    const decision = authorize(principal, table, op);
    if (!decision.ok) throw forbidden(decision.reason);
    const rule = decision.rule;
    checkParamNames(op, params);

    const pool = env.pools.get(table.connection);
    if (!pool) throw unavailable(`connection '${table.connection}' of table '${table.name}' is not configured for ${env.project}/${env.env}`);
    const budget = gauge.budget(env.project, env.env, op === 'select');
    const qc: QueryContext = { table, tables: env.release.tables, op, timeoutMs, log: req.log, budget, trace: req.stkTrace };

    try {
      switch (op) {
        case 'select': {
          const s = planSelect(table, rule, principal, params, config.selectMaxRows);
          const sql = buildSelect(s.plan);
          plan?.end();
          const rows = await execute(pool, sql, qc);
          if (s.capped && rows.length > config.selectMaxRows) {
            throw badRequest(`result exceeds ${config.selectMaxRows} rows; narrow the where or page with limit/offset`);
          }
          for (const rel of s.expand) await expandRelation(rows, rel, principal, env, qc, budget);
          if (s.strip.length) for (const row of rows) for (const c of s.strip) delete row[c];
          return answer(reply, rows, budget, op, null);
        }
        case 'insert': {
          const p = planInsert(table, rule, principal, params);
          const sql = buildInsert(p.plan);
          plan?.end();
          const rows = await execute(pool, sql, qc);
          const many = p.many;
          return answer(reply, many ? rows : (rows[0] ?? null), budget, op, rows.count);
        }
        case 'update': {
          const sql = buildUpdate(planUpdate(table, rule, principal, params));
          plan?.end();
          const rows = await execute(pool, sql, qc);
          return answer(reply, rows, budget, op, rows.count);
        }
        case 'delete': {
          const sql = buildDelete(planDelete(table, rule, principal, params));
          plan?.end();
          const rows = await execute(pool, sql, qc);
          return answer(reply, { affected: rows.count }, budget, op, rows.count);
        }
      }
    } catch (err) {
      budget.release();
      throw err;
    }
  }

  // its contract only describes it: the hand-written planner below checks params on the hot path
  contractRoute(
    app,
    BRIDGE_API.call,
    async (req, reply) => {
      const tr = req.stkTrace;
      if (tr === null) return handle(req, reply, null);
      const plan = tr.child('stk.plan');
      try {
        return await handle(req, reply, plan);
      } catch (err) {
        plan.fail((err as { code?: string }).code ?? 'error');
        throw err;
      } finally {
        plan.end(); // a request refused before its SQL was built
      }
    },
    { schemas: 'described', preParsing: chargeBody, bodyBudget: 'own' },
  );

  /** One batched query per relation: `WHERE target = ANY($1)`, with the target's own rule applied. */
  async function expandRelation(
    rows: Rows,
    rel: Parameters<typeof planExpand>[0],
    principal: Principal,
    env: ActiveEnv,
    qc: QueryContext,
    budget: ResponseBudget,
  ) {
    const fk = rel.column.name;
    const keys = new Set<string>();
    for (const row of rows) {
      const v = row[fk];
      if (v !== null && v !== undefined) keys.add(String(v));
    }
    const byKey = new Map<string, Row>();
    /** the JSON size of each target row: it is repeated in every row that references it */
    const sizes = new Map<Row, number>();
    if (keys.size) {
      const { plan, strip } = planExpand(rel, principal, [...keys]);
      const pool = env.pools.get(rel.target.connection)!;
      const found = await execute(pool, buildSelect(plan), { ...qc, table: rel.target as CompiledTable, op: 'select' as Op });
      const tk = rel.targetColumn.name;
      for (const t of found) {
        byKey.set(String(t[tk]), t);
        if (strip) delete t[tk];
        sizes.set(t, JSON.stringify(t).length);
      }
    }
    const as = rel.as;
    const keyBytes = as.length + 4;
    for (const row of rows) {
      const v = row[fk];
      const t = v === null || v === undefined ? null : (byKey.get(String(v)) ?? null);
      row[as] = t;
      if (t !== null && !budget.add(sizes.get(t)! + keyBytes)) throw budgetError(budget, 'select', null);
    }
  }
}
