import type { FastifyInstance } from 'fastify';
import type { HubContext } from '../context.js';
import { authenticate } from '../services/auth.js';
import { createKey, getKey, listKeys, revokeKey, rotateKey, updateKey } from '../services/apikeys.js';

type EnvParams = { project: string; env: string };
type KeyParams = EnvParams & { key: string };

/** Project API keys: /api/projects/:project/envs/:env/apikeys (project admin). */
export default async function apiKeyRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  const base = '/api/projects/:project/envs/:env/apikeys';
  const body = (b: unknown) => (b && typeof b === 'object' && !Array.isArray(b) ? (b as Record<string, unknown>) : {});

  app.post(base, async (req, reply) => {
    const op = await authenticate(ctx, req);
    const { project, env } = req.params as EnvParams;
    const r = await createKey(ctx, req, op, project, env, body(req.body));
    // the only response that ever carries a plaintext key: never cache it
    reply.header('cache-control', 'no-store');
    return reply.code(201).send(r);
  });

  app.get(base, async (req) => {
    const op = await authenticate(ctx, req);
    const { project, env } = req.params as EnvParams;
    return { items: await listKeys(ctx, op, project, env) };
  });

  app.get(`${base}/:key`, async (req) => {
    const op = await authenticate(ctx, req);
    const { project, env, key } = req.params as KeyParams;
    return getKey(ctx, op, project, env, key);
  });

  app.patch(`${base}/:key`, async (req) => {
    const op = await authenticate(ctx, req);
    const { project, env, key } = req.params as KeyParams;
    return updateKey(ctx, req, op, project, env, key, body(req.body));
  });

  app.post(`${base}/:key/revoke`, async (req) => {
    const op = await authenticate(ctx, req);
    const { project, env, key } = req.params as KeyParams;
    return revokeKey(ctx, req, op, project, env, key, { dryRun: body(req.body).dryRun });
  });

  app.post(`${base}/:key/rotate`, async (req, reply) => {
    const op = await authenticate(ctx, req);
    const { project, env, key } = req.params as KeyParams;
    const r = await rotateKey(ctx, req, op, project, env, key, { grace: body(req.body).grace });
    reply.header('cache-control', 'no-store');
    return r;
  });
}
