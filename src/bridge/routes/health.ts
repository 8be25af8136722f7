import { PUBLIC } from '../../protocol/route-auth.js';
import type { FastifyInstance } from 'fastify';
import type { BridgeContext } from '../context.js';

export type ReadinessCheck = (project: string, env: string) => Promise<boolean>;

export default async function healthRoutes(app: FastifyInstance, { ctx }: { ctx: BridgeContext }) {
  const pub = { config: { auth: PUBLIC } };
  app.get('/healthz', pub, async () => ({ ok: true }));
  app.get('/health', pub, async () => ({ ok: true }));
  app.get('/readyz', pub, async (req, reply) => {
    const q = req.query as { project?: unknown; env?: unknown };
    const check = ctx.readiness as ReadinessCheck | undefined;
    let ok = false;
    if (check && typeof q.project === 'string' && typeof q.env === 'string') ok = await check(q.project, q.env).catch(() => false);
    return reply.code(ok ? 200 : 503).send({ ok });
  });
}
