import { operatorOf } from '../route-auth.js';
import { projectRoleAtLeast } from '../../protocol/route-auth.js';
import type { FastifyInstance } from 'fastify';
import type { HubContext } from '../context.js';
import { confirmDelivery, createKey, getKey, listKeys, revokeKey, rotateKey, updateKey } from '../services/apikeys.js';

type EnvParams = { project: string; env: string };
type KeyParams = EnvParams & { key: string };

/** Project API keys: /api/projects/:project/envs/:env/apikeys (project admin). */
export default async function apiKeyRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  const base = '/api/projects/:project/envs/:env/apikeys';
  const admin = { config: { auth: projectRoleAtLeast('admin') } };
  const body = (b: unknown) => (b && typeof b === 'object' && !Array.isArray(b) ? (b as Record<string, unknown>) : {});
  // once the response with the plaintext is handed to the network, the key stops being "unconfirmed"
  const onDelivered = (reply: { raw: NodeJS.EventEmitter }, keyId: string, issuedAt: string) =>
    reply.raw.once('finish', () => {
      confirmDelivery(ctx, keyId, issuedAt).catch((err: unknown) => app.log.warn({ err, keyId }, 'could not confirm API key delivery'));
    });

  app.post(base, admin, async (req, reply) => {
    const op = operatorOf(req);
    const { project, env } = req.params as EnvParams;
    const r = await createKey(ctx, req, op, project, env, body(req.body));
    onDelivered(reply, r.keyId, r.createdAt);
    // the only response that ever carries a plaintext key: never cache it
    reply.header('cache-control', 'no-store');
    return reply.code(201).send(r);
  });

  app.get(base, admin, async (req) => {
    const op = operatorOf(req);
    const { project, env } = req.params as EnvParams;
    return { items: await listKeys(ctx, op, project, env) };
  });

  app.get(`${base}/:key`, admin, async (req) => {
    const op = operatorOf(req);
    const { project, env, key } = req.params as KeyParams;
    return getKey(ctx, op, project, env, key);
  });

  app.patch(`${base}/:key`, admin, async (req) => {
    const op = operatorOf(req);
    const { project, env, key } = req.params as KeyParams;
    return updateKey(ctx, req, op, project, env, key, body(req.body));
  });

  app.post(`${base}/:key/revoke`, admin, async (req) => {
    const op = operatorOf(req);
    const { project, env, key } = req.params as KeyParams;
    return revokeKey(ctx, req, op, project, env, key, { dryRun: body(req.body).dryRun });
  });

  app.post(`${base}/:key/rotate`, admin, async (req, reply) => {
    const op = operatorOf(req);
    const { project, env, key } = req.params as KeyParams;
    const r = await rotateKey(ctx, req, op, project, env, key, { grace: body(req.body).grace });
    onDelivered(reply, r.keyId, r.rotatedAt);
    reply.header('cache-control', 'no-store');
    return r;
  });
}
