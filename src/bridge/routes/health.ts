import type { FastifyInstance } from 'fastify';
import type { z } from 'zod';
import { contractRoute } from '../../common/contract-route.js';
import { BRIDGE_API } from '../../protocol/api/bridge.js';
import { unauthorized } from '../../protocol/errors.js';
import type { BridgeContext } from '../context.js';
import { hasServiceToken } from '../route-auth.js';

/**
 * `/healthz`: the process answers. `/readyz`: 200 once the Bridge holds its first snapshot from the
 * Hub and has heard from a Hub within max-stale (what a load balancer should check), 503 otherwise.
 * `/readyz?project=&env=` (the release of that env is loaded and its databases answer) names
 * tenants, so it needs the service token: without it, 401 whatever the names.
 */
export default async function healthRoutes(app: FastifyInstance, { ctx }: { ctx: BridgeContext }) {
  contractRoute(app, BRIDGE_API.healthz, async () => ({ ok: true }));
  contractRoute(app, BRIDGE_API.health, async () => ({ ok: true }));
  contractRoute(app, BRIDGE_API.readyz, async (req, reply) => {
    // validated by the contract: each is one string when given
    const q = req.query as z.output<typeof BRIDGE_API.readyz.query>;
    let ok: boolean;
    if (q.project !== undefined || q.env !== undefined) {
      if (!hasServiceToken(ctx, req))
        throw unauthorized('readiness of a project/env needs the service token (X-Santokit-Service-Token); plain /readyz needs none');
      ok = q.project !== undefined && q.env !== undefined && !ctx.isStale() && (await ctx.releases.ready(q.project, q.env).catch(() => false));
    } else {
      ok = ctx.sync.synced && !ctx.isStale();
    }
    return reply.code(ok ? 200 : 503).send({ ok });
  });
}
