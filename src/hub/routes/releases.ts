import { operatorOf } from '../route-auth.js';
import { SERVICE, projectRoleAtLeast } from '../../protocol/route-auth.js';
import type { FastifyInstance } from 'fastify';
import type { HubContext } from '../context.js';
import { internalCurrent, listReleases, promote, rollback, showCurrent, showRelease } from '../services/releases.js';

/** Releases: viewers read, deployers promote and roll back; Bridges read the current one over /internal. */
export default async function releaseRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  const viewer = { config: { auth: projectRoleAtLeast('viewer') } };
  const deployer = { config: { auth: projectRoleAtLeast('deployer') } };
  app.get<{ Params: { project: string }; Querystring: { limit?: string } }>('/api/projects/:project/releases', viewer, async (req) => {
    const op = operatorOf(req);
    return listReleases(ctx, op, req.params.project, req.query.limit);
  });

  app.get<{ Params: { project: string; env: string } }>('/api/projects/:project/envs/:env/releases/current', viewer, async (req) => {
    const op = operatorOf(req);
    return showCurrent(ctx, op, req.params.project, req.params.env);
  });

  app.get<{ Params: { project: string; releaseId: string } }>('/api/projects/:project/releases/:releaseId', viewer, async (req) => {
    const op = operatorOf(req);
    return showRelease(ctx, op, req.params.project, req.params.releaseId);
  });

  app.post<{ Params: { project: string } }>('/api/projects/:project/releases/promote', deployer, async (req) => {
    const op = operatorOf(req);
    return promote(ctx, req, op, req.params.project, req.body);
  });

  app.post<{ Params: { project: string; env: string } }>('/api/projects/:project/envs/:env/rollback', deployer, async (req) => {
    const op = operatorOf(req);
    return rollback(ctx, req, op, req.params.project, req.params.env, req.body);
  });

  // Bridges poll this with the service token; ETag = the release id.
  app.get<{ Params: { project: string; env: string } }>('/internal/releases/:project/:env/current', { config: { auth: SERVICE } }, async (req, reply) => {
    const r = await internalCurrent(ctx, req.params.project, req.params.env);
    const etag = `"${r.releaseId}"`;
    reply.header('etag', etag).header('cache-control', 'no-store');
    if (req.headers['if-none-match'] === etag) return reply.code(304).send();
    return r;
  });
}
