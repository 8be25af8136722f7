import type { FastifyInstance, FastifyReply } from 'fastify';
import { apikeys as api } from '../../protocol/api/hub.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';
import {
  confirmDelivery,
  createKey,
  endKeyGrace,
  getKey,
  keyUsage,
  listKeys,
  resumeKey,
  revokeKey,
  rotateKey,
  suspendKey,
  updateKey,
} from '../services/apikeys.js';

/**
 * For a response that carries a key's plaintext (create, rotate): never cached, and once it is handed
 * to the network the key stops being "unconfirmed".
 */
export function deliversPlaintext(app: FastifyInstance, ctx: HubContext, reply: FastifyReply, keyId: string, issuedAt: string): void {
  reply.header('cache-control', 'no-store');
  reply.raw.once('finish', () => {
    confirmDelivery(ctx, keyId, issuedAt).catch((err: unknown) => app.log.warn({ err, keyId }, 'could not confirm API key delivery'));
  });
}

/** Project API keys: /api/projects/:project/envs/:env/apikeys (project admin). */
export default async function apiKeyRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  const onDelivered = (reply: FastifyReply, keyId: string, issuedAt: string) => deliversPlaintext(app, ctx, reply, keyId, issuedAt);

  route(app, api.create, async ({ params: p, body }, actor, { reply }) => {
    const r = await createKey(ctx, actor, p.project, p.env, body);
    // the only responses that ever carry a plaintext key
    onDelivered(reply, r.keyId, r.createdAt);
    return r;
  });
  route(app, api.list, async ({ params: p }, actor) => ({ items: await listKeys(ctx, actor, p.project, p.env) }));
  route(app, api.get, async ({ params: p }, actor) => getKey(ctx, actor, p.project, p.env, p.key));
  route(app, api.usage, async ({ params: p }, actor) => keyUsage(ctx, actor, p.project, p.env, p.key));
  route(app, api.update, async ({ params: p, body }, actor) => updateKey(ctx, actor, p.project, p.env, p.key, body));
  route(app, api.revoke, async ({ params: p, body }, actor) => revokeKey(ctx, actor, p.project, p.env, p.key, { dryRun: body?.dryRun }));
  route(app, api.suspend, async ({ params: p, body }, actor) => suspendKey(ctx, actor, p.project, p.env, p.key, { reason: body?.reason }));
  route(app, api.resume, async ({ params: p }, actor) => resumeKey(ctx, actor, p.project, p.env, p.key));
  route(app, api.endGrace, async ({ params: p }, actor) => endKeyGrace(ctx, actor, p.project, p.env, p.key));
  route(app, api.rotate, async ({ params: p, body }, actor, { reply }) => {
    const r = await rotateKey(ctx, actor, p.project, p.env, p.key, { grace: body?.grace });
    onDelivered(reply, r.keyId, r.rotatedAt);
    return r;
  });
}
