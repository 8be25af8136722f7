import { APIKEY } from '../../protocol/route-auth.js';
/**
 * `POST /call {"path":"db/<table>/<select|insert|update|delete>","params":{…}}` — the data plane.
 *
 * Order of checks: credential (401/403/429/503 from the verifier) → hint headers agree with the
 * credential's binding (403) → release cache fresh (503) → release loaded (503) → path (400/404) →
 * permission rule (403) → params (400) → SQL → rows. Every step before SQL is an in-memory lookup.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError, badRequest, forbidden, notFound, unavailable } from '../../protocol/errors.js';
import { OPS, type Op } from '../../protocol/release.js';
import type { BridgeContext, Principal } from '../context.js';
import { execute, type QueryContext, type Row, type Rows } from '../executor/index.js';
import { authorize } from '../permissions/index.js';
import type { ActiveEnv, CompiledTable, ReleaseCache } from '../release-cache/index.js';
import { buildDelete, buildInsert, buildSelect, buildUpdate } from '../sql/build.js';
import { checkParamNames, planDelete, planExpand, planInsert, planSelect, planUpdate } from '../sql/params.js';

type Obj = Record<string, unknown>;
const EMPTY_PARAMS: Obj = Object.freeze({}) as Obj;
const OP_SET: ReadonlySet<string> = new Set(OPS);

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function devPrincipal(req: FastifyRequest): Principal {
  const project = header(req, 'x-santokit-project');
  const env = header(req, 'x-santokit-env');
  if (!project || !env) throw badRequest('with STK_DISABLE_AUTH the X-Santokit-Project and X-Santokit-Env headers are required');
  return { kind: 'dev', sub: 'dev', roles: [], project, env };
}

/** Explains a path that is not `db/<known table>/<op>`. */
function pathError(path: string, env: ActiveEnv): AppError {
  const shown = path.length > 200 ? path.slice(0, 200) + '…' : path;
  const parts = path.split('/');
  if (parts[0] !== 'db' || parts.length !== 3 || !parts[1]) return badRequest(`unsupported path '${shown}'; expected db/<table>/<select|insert|update|delete>`);
  if (!OP_SET.has(parts[2]!)) return badRequest(`unknown operation '${parts[2]}' in path '${shown}'; expected select, insert, update or delete`);
  return notFound(`unknown table '${parts[1]}' in ${env.project}/${env.env}`);
}

export default async function callRoutes(app: FastifyInstance, { ctx }: { ctx: BridgeContext }) {
  const releases = ctx.releases as ReleaseCache;
  const { config } = ctx;
  const timeoutMs = config.queryTimeoutMs;

  app.post('/call', { config: { auth: APIKEY } }, async (req) => {
    let principal: Principal;
    if (config.disableAuth) principal = devPrincipal(req);
    else {
      const p = ctx.credentials.authenticate(req) as Principal | Promise<Principal>;
      principal = p instanceof Promise ? await p : p;
      const hp = header(req, 'x-santokit-project');
      if (hp !== undefined && hp !== principal.project) throw forbidden("X-Santokit-Project does not match the credential's project");
      const he = header(req, 'x-santokit-env');
      if (he !== undefined && he !== principal.env) throw forbidden("X-Santokit-Env does not match the credential's env");
    }

    const isExpired = ctx.isExpired as ((project: string, env: string) => boolean) | undefined;
    if (isExpired && isExpired(principal.project, principal.env)) {
      throw unavailable(`release cache for ${principal.project}/${principal.env} is stale beyond the max-stale window (Hub unreachable)`);
    }
    const env = releases.get(principal.project, principal.env);
    if (!env) throw unavailable(`no release loaded for ${principal.project}/${principal.env}; run stk apply`);

    const body = req.body as Obj | undefined;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('body must be a JSON object {"path": "db/<table>/<op>", "params": {...}}');
    const path = body.path;
    if (typeof path !== 'string') throw badRequest('path is required: "db/<table>/<select|insert|update|delete>"');
    let params = body.params as Obj | undefined | null;
    if (params === undefined || params === null) params = EMPTY_PARAMS;
    else if (typeof params !== 'object' || Array.isArray(params)) throw badRequest('params must be an object');

    const target = env.release.paths.get(path);
    if (!target) throw pathError(path, env);
    const { table, op } = target;
    const decision = authorize(principal, table, op);
    if (!decision.ok) throw forbidden(decision.reason);
    const rule = decision.rule;
    checkParamNames(op, params);

    const pool = env.pools.get(table.connection);
    if (!pool) throw unavailable(`connection '${table.connection}' of table '${table.name}' is not configured for ${env.project}/${env.env}`);
    const qc: QueryContext = { table, tables: env.release.tables, op, timeoutMs, log: req.log };

    switch (op) {
      case 'select': {
        const s = planSelect(table, rule, principal, params, config.selectMaxRows);
        const rows = await execute(pool, buildSelect(s.plan), qc);
        if (s.capped && rows.length > config.selectMaxRows) {
          throw badRequest(`result exceeds ${config.selectMaxRows} rows; narrow the where or page with limit/offset`);
        }
        for (const rel of s.expand) await expandRelation(rows, rel, principal, env, pool.name, qc);
        if (s.strip.length) for (const row of rows) for (const c of s.strip) delete row[c];
        return { data: rows };
      }
      case 'insert': {
        const { plan, many } = planInsert(table, rule, principal, params);
        const rows = await execute(pool, buildInsert(plan), qc);
        return { data: many ? rows : (rows[0] ?? null) };
      }
      case 'update': {
        const rows = await execute(pool, buildUpdate(planUpdate(table, rule, principal, params)), qc);
        return { data: rows };
      }
      case 'delete': {
        const rows = await execute(pool, buildDelete(planDelete(table, rule, principal, params)), qc);
        return { data: { affected: rows.count } };
      }
    }
  });

  /** One batched query per relation: `WHERE target = ANY($1)`, with the target's own rule applied. */
  async function expandRelation(rows: Rows, rel: Parameters<typeof planExpand>[0], principal: Principal, env: ActiveEnv, _conn: string, qc: QueryContext) {
    const fk = rel.column.name;
    const keys = new Set<string>();
    for (const row of rows) {
      const v = row[fk];
      if (v !== null && v !== undefined) keys.add(String(v));
    }
    const byKey = new Map<string, Row>();
    if (keys.size) {
      const { plan, strip } = planExpand(rel, principal, [...keys]);
      const pool = env.pools.get(rel.target.connection)!;
      const found = await execute(pool, buildSelect(plan), { ...qc, table: rel.target as CompiledTable, op: 'select' as Op });
      const tk = rel.targetColumn.name;
      for (const t of found) {
        byKey.set(String(t[tk]), t);
        if (strip) delete t[tk];
      }
    }
    const as = rel.as;
    for (const row of rows) {
      const v = row[fk];
      row[as] = v === null || v === undefined ? null : (byKey.get(String(v)) ?? null);
    }
  }
}
