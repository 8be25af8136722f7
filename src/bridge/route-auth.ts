import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction, onRequestHookHandler } from 'fastify';
import { AppError, badRequest, forbidden, unauthorized } from '../protocol/errors.js';
import type { BridgeContext, Principal } from './context.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** who is calling: set by the auth hook of a route that declared `apikey` auth */
    principal: Principal | null;
  }
}

export const SERVICE_TOKEN_HEADER = 'x-santokit-service-token';

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** STK_DISABLE_AUTH: the project and env come from the hint headers. */
function devPrincipal(req: FastifyRequest): Principal {
  const project = header(req, 'x-santokit-project');
  const env = header(req, 'x-santokit-env');
  if (!project || !env) throw badRequest('with STK_DISABLE_AUTH the X-Santokit-Project and X-Santokit-Env headers are required');
  return { kind: 'dev', sub: 'dev', roles: [], project, env };
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** The Bridge's own service token (header or Bearer), compared in constant time. */
export function hasServiceToken(ctx: BridgeContext, req: FastifyRequest): boolean {
  let token = header(req, SERVICE_TOKEN_HEADER);
  const auth = req.headers.authorization;
  if (!token && typeof auth === 'string' && auth.startsWith('Bearer ')) token = auth.slice(7);
  const mine = ctx.config.serviceToken;
  if (!token || !mine) return false;
  return timingSafeEqual(digest(token), digest(mine));
}

/**
 * Enforces each route's declared `config.auth` with a hook on that route (added when the route is
 * registered, so it runs for exactly the routes the router matches to it, and costs nothing to look
 * up per request). It runs at `onRequest`, from the headers alone: a request without a valid
 * credential is refused before its body is read or parsed.
 */
export function installRouteAuth(app: FastifyInstance, ctx: BridgeContext): void {
  app.decorateRequest('principal', null);

  const apiKey = (req: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction) => {
    try {
      if (ctx.config.disableAuth) req.principal = devPrincipal(req);
      else {
        // ctx.credentials is read per request: tests swap the verifier after the app is built
        const p = ctx.credentials.authenticate(req);
        const hp = header(req, 'x-santokit-project');
        if (hp !== undefined && hp !== p.project) throw forbidden("X-Santokit-Project does not match the credential's project");
        const he = header(req, 'x-santokit-env');
        if (he !== undefined && he !== p.env) throw forbidden("X-Santokit-Env does not match the credential's env");
        req.principal = p;
      }
    } catch (err) {
      done(err as Error);
      return;
    }
    done();
  };
  const service = (req: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction) => {
    done(hasServiceToken(ctx, req) ? undefined : unauthorized('service token required'));
  };

  app.addHook('onRoute', (route) => {
    const auth = route.config?.auth;
    let hook: onRequestHookHandler | undefined;
    switch (auth?.kind) {
      case 'public':
        return;
      case 'apikey':
        hook = apiKey as onRequestHookHandler;
        break;
      case 'service':
        hook = service as onRequestHookHandler;
        break;
      default:
        throw new AppError('INTERNAL_ERROR', `route ${String(route.method)} ${route.url}: auth ${auth?.kind} is not served by the Bridge`);
    }
    const own = route.onRequest;
    route.onRequest = own === undefined ? [hook] : Array.isArray(own) ? [hook, ...own] : [hook, own];
  });
}
