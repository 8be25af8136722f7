import type { FastifyInstance } from 'fastify';
import { leaks as api } from '../../protocol/api/leaks.js';
import { AppError } from '../../protocol/errors.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';
import { createLeakToken, getLeakPolicy, listLeakTokens, lookupKeys, revokeLeakToken, setLeakPolicy, submitLeakReport } from '../services/leaks.js';

/** Leak response: key lookup for `stk apikey scan`, leak reports from secret scanners, their tokens, project policies. */
export default async function leakRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  route(app, api.lookup, async ({ body }, actor) => ({ items: await lookupKeys(ctx, actor, body.keyIds) }));
  route(app, api.report, async ({ body }, actor, { req, reply }) => {
    if (!req.leakReporter) throw new AppError('INTERNAL_ERROR', 'leak report without its token');
    reply.code(202);
    return submitLeakReport(ctx, req.leakReporter, actor, body);
  });
  route(app, api.createToken, async ({ body }, actor, { reply }) => {
    reply.header('cache-control', 'no-store');
    return createLeakToken(ctx, actor, body);
  });
  route(app, api.listTokens, async (_i, actor) => ({ items: await listLeakTokens(ctx, actor) }));
  route(app, api.revokeToken, async ({ params }, actor) => revokeLeakToken(ctx, actor, params.token));
  route(app, api.getPolicy, async ({ params }, actor) => getLeakPolicy(ctx, actor, params.project));
  route(app, api.setPolicy, async ({ params, body }, actor) => setLeakPolicy(ctx, actor, params.project, body.policy));
}
