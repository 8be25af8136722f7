import type { FastifyInstance } from 'fastify';
import { unauthorized } from '../../protocol/errors.js';
import { PUBLIC } from '../../protocol/route-auth.js';
import type { BridgeContext } from '../context.js';
import { hasServiceToken } from '../route-auth.js';

/**
 * `/healthz`: the process answers. `/readyz`: 200 once the Bridge holds its first snapshot from the
 * Hub and has heard from a Hub within max-stale (what a load balancer should check), 503 otherwise.
 * `/readyz?project=&env=` (the release of that env is loaded and its databases answer) names
 * tenants, so it needs the service token: without it, 401 whatever the names.
 */
export default async function healthRoutes(app: FastifyInstance, { ctx }: { ctx: BridgeContext }) {
  const pub = { config: { auth: PUBLIC } };
  app.get('/healthz', pub, async () => ({ ok: true }));
  app.get('/health', pub, async () => ({ ok: true }));
  app.get('/readyz', pub, async (req, reply) => {
    const q = req.query as { project?: unknown; env?: unknown };
    let ok: boolean;
    if (q.project !== undefined || q.env !== undefined) {
      if (!hasServiceToken(ctx, req)) throw unauthorized('readiness of a project/env needs the service token (X-Santokit-Service-Token); plain /readyz needs none');
      ok = typeof q.project === 'string' && typeof q.env === 'string' && !ctx.isStale() && (await ctx.releases.ready(q.project, q.env).catch(() => false));
    } else {
      ok = ctx.sync.synced && !ctx.isStale();
    }
    return reply.code(ok ? 200 : 503).send({ ok });
  });
}
