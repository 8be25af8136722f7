import { z } from 'zod';
import { APIKEY, PUBLIC } from '../route-auth.js';
import { DOCS_API, defineRoute } from './define.js';

/**
 * The Bridge's HTTP API. `/call` keeps its hand-written planner (src/bridge/sql/params.ts) on the hot
 * path: these schemas describe it for OpenAPI and give apps and tests its types.
 */

const Scalar = z.union([z.string(), z.number(), z.boolean(), z.null()]);
const Operators = z
  .object({
    $eq: z.unknown(),
    $ne: z.unknown(),
    $gt: Scalar,
    $gte: Scalar,
    $lt: Scalar,
    $lte: Scalar,
    $in: z.array(Scalar).max(1000),
    $notIn: z.array(Scalar).max(1000),
    $like: z.string(),
    $isNull: z.boolean(),
    $isNotNull: z.boolean(),
  })
  .partial();
export const Where = z
  .record(z.string(), z.union([Scalar, Operators, z.unknown()]))
  .meta({ id: 'Where', description: 'column → value (equality; null → IS NULL) or {"$op": value}; conditions are ANDed (at most 50)' });
const Direction = z.enum(['asc', 'desc']);
export const CallParams = z
  .object({
    where: Where.optional(),
    select: z.union([z.literal('*'), z.array(z.string())]).optional(),
    orderBy: z.union([z.record(z.string(), Direction), z.array(z.record(z.string(), Direction))]).optional(),
    limit: z.number().int().min(0).optional(),
    offset: z.number().int().min(0).optional(),
    expand: z.array(z.string()).optional().meta({ description: 'relations (`references … as:`), one hop' }),
    data: z
      .union([z.record(z.string(), z.unknown()), z.array(z.record(z.string(), z.unknown())).max(1000)])
      .optional()
      .meta({ description: 'insert/update values (alias `values`)' }),
    values: z.union([z.record(z.string(), z.unknown()), z.array(z.record(z.string(), z.unknown())).max(1000)]).optional(),
  })
  .meta({ id: 'CallParams' });
export const CallRequest = z
  .object({
    path: z.string().meta({ description: 'db/<table>/select | insert | update | delete', examples: ['db/users/select'] }),
    params: CallParams.optional(),
  })
  .meta({ id: 'CallRequest' });
export const CallResponse = z
  .object({
    data: z
      .union([z.array(z.record(z.string(), z.unknown())), z.record(z.string(), z.unknown())])
      .meta({ description: 'rows (select, update, insert of an array), one row (insert of one), or {affected} (delete)' }),
  })
  .meta({ id: 'CallResponse' });
const Health = z.object({ ok: z.boolean() });

export const BRIDGE_API = {
  ...DOCS_API,
  call: defineRoute({
    method: 'POST',
    url: '/call',
    auth: APIKEY,
    summary: 'Auto-CRUD on the env of the API key: select, insert, update, delete on a table of the current release',
    tags: ['data'],
    body: CallRequest,
    response: { 200: CallResponse },
    errors: ['FORBIDDEN', 'NOT_FOUND', 'CONFLICT', 'METHOD_NOT_ALLOWED', 'SERVICE_UNAVAILABLE', 'GATEWAY_TIMEOUT'],
  }),
  healthz: defineRoute({ method: 'GET', url: '/healthz', auth: PUBLIC, summary: 'Liveness', tags: ['health'], response: { 200: Health } }),
  health: defineRoute({ method: 'GET', url: '/health', auth: PUBLIC, summary: 'Liveness (alias)', tags: ['health'], response: { 200: Health } }),
  readyz: defineRoute({
    method: 'GET',
    url: '/readyz',
    auth: PUBLIC,
    summary: 'Readiness: synced with the Hub and within max-stale (per env with ?project=&env= and the service token)',
    tags: ['health'],
    query: z.object({ project: z.string().optional(), env: z.string().optional() }),
    response: { 200: Health, 503: Health },
    errors: ['UNAUTHORIZED'],
  }),
};
