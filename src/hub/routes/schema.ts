import type { FastifyInstance } from 'fastify';
import { schema as api } from '../../protocol/api/hub.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';
import { schemaDrift, takeSnapshot } from '../services/schema-snapshots.js';

/** `stk schema snapshot|drift`: the env's live schema, recorded and compared (project deployer). */
export default async function schemaRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  route(app, api.snapshot, async ({ params: p }, actor) => takeSnapshot(ctx, actor, p.project, p.env));
  route(app, api.drift, async ({ params: p }, actor) => schemaDrift(ctx, actor, p.project, p.env));
}
