import type { FastifyInstance } from 'fastify';
import { AppError, badField, forbidden } from '../protocol/errors.js';
import { ORG_ROLE_RANK } from '../protocol/names.js';
import type { HubContext } from './context.js';
import type { Actor } from './services/actor.js';
import { authenticate } from './services/auth.js';
import { orgRole, requireOrgRole, requireProjectRole } from './services/rbac.js';
import { requireServiceToken } from './services/service-token.js';
import { authenticateLeakToken, type LeakReporter } from './services/leaks.js';

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * Who calls, as the auth hook established it (routes declaring operator/org/project auth): the
     * operator and the roles the hook read, which the services' own checks reuse instead of reading
     * them again (Actor.roles).
     */
    actor: Actor | null;
    /** the leak-report token of a `leakToken` route (POST /api/leaks) */
    leakReporter: LeakReporter | null;
  }
}

/**
 * Enforces each route's declared `config.auth` on the route the router matched (so no spelling of
 * the URL can reach a route without passing its check): the service token for `service`, a live
 * leak-report token for `leakToken`, a session
 * for `operator`, plus the org role or the role on `:project` for `org` / `project`. Runs as the
 * Hub's first route-level hook, before the body is parsed; a project named in the body (`from:
 * 'body'`, the upstream-compatible routes) is checked right after parsing, before validation.
 */
export function installRouteAuth(app: FastifyInstance, ctx: HubContext): void {
  app.decorateRequest('actor', null);
  app.decorateRequest('leakReporter', null);
  app.addHook('onRequest', async (req) => {
    if (req.is404) return;
    const auth = req.routeOptions.config.auth;
    if (!auth) throw new AppError('INTERNAL_ERROR', 'route declares no auth requirement');
    if (auth.kind === 'public') return;
    if (auth.kind === 'service') return requireServiceToken(ctx, req.headers);
    if (auth.kind === 'leakToken') {
      req.leakReporter = await authenticateLeakToken(ctx, req.headers.authorization);
      return;
    }
    if (auth.kind !== 'operator' && auth.kind !== 'org' && auth.kind !== 'project')
      throw new AppError('INTERNAL_ERROR', `auth ${auth.kind} is not served by the Hub`);
    const actor: Actor = (req.actor = { operator: await authenticate(ctx, req.headers.authorization), requestId: req.id, ip: req.ip ?? null, roles: {} });
    switch (auth.kind) {
      case 'operator':
        return;
      case 'org':
        await requireOrgRole(ctx, actor, auth.role);
        return;
      case 'project': {
        if (auth.orOrg) {
          const { role } = await orgRole(ctx, actor);
          if (role && ORG_ROLE_RANK[role] >= ORG_ROLE_RANK[auth.orOrg]) return;
        }
        // the body is not read yet: its project is checked once parsed (preValidation below), before
        // the route's schema or handler sees it
        if (auth.from === 'body') {
          bodyProjectPending.add(req);
          return;
        }
        const project = ((auth.from === 'query' ? req.query : req.params) as Record<string, unknown> | undefined)?.project;
        if (typeof project !== 'string' || project === '') {
          throw forbidden(
            `you need ${auth.orOrg ? `org:${auth.orOrg}, or ` : ''}project:${auth.role} on the project you name${auth.from === 'query' ? ' (?project=)' : ''}`,
          );
        }
        await requireProjectRole(ctx, actor, project, auth.role);
        return;
      }
    }
  });

  /** Requests of `from: 'body'` routes whose session passed and whose project role is still to check. */
  const bodyProjectPending = new WeakSet<object>();
  app.addHook('preValidation', async (req) => {
    if (!bodyProjectPending.has(req)) return;
    bodyProjectPending.delete(req);
    const auth = req.routeOptions.config.auth;
    if (auth?.kind !== 'project' || !req.actor) throw new AppError('INTERNAL_ERROR', 'body project check without its route auth');
    const body = req.body;
    const project = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>).project : undefined;
    if (typeof project !== 'string' || project === '') {
      throw badField('project', `"project" (the project's name) is required: you need ${auth.orOrg ? `org:${auth.orOrg}, or ` : ''}project:${auth.role} on it`);
    }
    await requireProjectRole(ctx, req.actor, project, auth.role);
  });
}
