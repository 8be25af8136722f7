import type { FastifyInstance } from 'fastify';
import { internal, releases as api } from '../../protocol/api/hub.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';
import { internalCurrent, listReleases, promote, rollback, showCurrent, showRelease } from '../services/releases.js';

/** Releases: viewers read, deployers promote and roll back; Bridges read the current one over /internal. */
export default async function releaseRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  route(app, api.list, async ({ params, query }, actor) => listReleases(ctx, actor, params.project, query.limit));
  route(app, api.current, async ({ params }, actor) => showCurrent(ctx, actor, params.project, params.env));
  route(app, api.show, async ({ params }, actor) => showRelease(ctx, actor, params.project, params.releaseId));
  route(app, api.promote, async ({ params, body }, actor) => promote(ctx, actor, params.project, body));
  route(app, api.rollback, async ({ params, body }, actor) => rollback(ctx, actor, params.project, params.env, body));

  // Bridges poll this with the service token; ETag = the release id.
  route(app, internal.currentRelease, async ({ params }, _actor, { req, reply }) => {
    const r = await internalCurrent(ctx, params.project, params.env);
    const etag = `"${r.releaseId}"`;
    reply.header('etag', etag).header('cache-control', 'no-store');
    if (req.headers['if-none-match'] === etag) return reply.code(304).send();
    return r;
  });
}
