import type { FastifyInstance } from 'fastify';
import { releases as api } from '../../protocol/api/hub.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';
import { apply } from '../services/releases.js';

/** `stk apply`: schema DDL + permissions + release for one env (project deployer). */
export default async function applyRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  route(app, api.apply, async ({ params, body }, actor) => apply(ctx, actor, params.project, params.env, body));
}
