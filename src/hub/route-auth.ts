import type { FastifyInstance } from 'fastify';
import { AppError, forbidden } from '../protocol/errors.js';
import { ORG_ROLE_RANK } from '../protocol/names.js';
import type { HubContext } from './context.js';
import { authenticate, type Operator } from './services/auth.js';
import { orgRole, requireOrgRole, requireProjectRole } from './services/rbac.js';
import { requireServiceToken } from './services/service-token.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** the operator the auth hook authenticated (routes declaring operator/org/project auth) */
    operator: Operator | null;
  }
}

/**
 * Enforces each route's declared `config.auth` on the route the router matched (so no spelling of
 * the URL can reach a route without passing its check): the service token for `service`, a session
 * for `operator`, plus the org role or the role on `:project` for `org` / `project`. Runs as the
 * Hub's first route-level hook, before the body is parsed.
 */
export function installRouteAuth(app: FastifyInstance, ctx: HubContext): void {
  app.decorateRequest('operator', null);
  app.addHook('onRequest', async (req) => {
    if (req.is404) return;
    const auth = req.routeOptions.config.auth;
    if (!auth) throw new AppError('INTERNAL_ERROR', 'route declares no auth requirement');
    switch (auth.kind) {
      case 'public':
        return;
      case 'service':
        requireServiceToken(ctx, req.headers);
        return;
      case 'operator':
        req.operator = await authenticate(ctx, req.headers.authorization);
        return;
      case 'org':
        req.operator = await authenticate(ctx, req.headers.authorization);
        await requireOrgRole(ctx, req.operator, auth.role);
        return;
      case 'project': {
        const op = (req.operator = await authenticate(ctx, req.headers.authorization));
        if (auth.orOrg) {
          const { role } = await orgRole(ctx, op);
          if (role && ORG_ROLE_RANK[role] >= ORG_ROLE_RANK[auth.orOrg]) return;
        }
        const project = ((auth.from === 'query' ? req.query : req.params) as Record<string, unknown> | undefined)?.project;
        if (typeof project !== 'string' || project === '') {
          throw forbidden(`you need ${auth.orOrg ? `org:${auth.orOrg}, or ` : ''}project:${auth.role} on the project you name${auth.from === 'query' ? ' (?project=)' : ''}`);
        }
        await requireProjectRole(ctx, op, project, auth.role);
        return;
      }
      default:
        throw new AppError('INTERNAL_ERROR', `auth ${auth.kind} is not served by the Hub`);
    }
  });
}
