import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction, onRequestHookHandler } from 'fastify';
import { ENV_HINT_HEADER, PROJECT_HINT_HEADER } from '../protocol/call.js';
import { AppError, badRequest, stacklessError, unavailable } from '../protocol/errors.js';
import type { BridgeContext, CredentialRequest, Principal } from './context.js';
import { verdictOf } from './front-door.js';

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
  const project = header(req, PROJECT_HINT_HEADER);
  const env = header(req, ENV_HINT_HEADER);
  if (!project || !env) throw badRequest('with STK_DISABLE_AUTH the X-Santokit-Project and X-Santokit-Env headers are required');
  return { kind: 'dev', sub: 'dev', roles: [], project, env };
}

const digest = (s: string) => createHash('sha256').update(s).digest();

const NO_SERVICE_TOKEN = stacklessError('UNAUTHORIZED', 'service token required');

const STALE =
  'this Bridge has not heard from the Hub for longer than the max-stale window (STK_RELEASE_CACHE_MAX_STALE_SECONDS): its releases may be out of date, so calls are refused until it reconnects';

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
 *
 * For `apikey` routes the credential's verifier decides (API keys: ./credentials/verifier.ts checks the
 * key, the Bridge within max-stale, the hint headers against the key's binding, the rate limit, and
 * counts the outcome per key). With STK_DISABLE_AUTH there is no credential: the hints name the env,
 * and the max-stale check the verifier would make is made here.
 *
 * A POST /call over HTTP was already checked at the front door (front-door.ts): its 401/429 never got
 * here, and its verdict is taken as it is. Otherwise a 401 or 429 is answered right here by `ctx.refusals` (refusals.ts): pre-serialized envelope, no
 * error handler, no access line (a summary per interval instead). Anything else goes to the error
 * handler as usual.
 */
export function installRouteAuth(app: FastifyInstance, ctx: BridgeContext): void {
  app.decorateRequest('principal', null);

  const apiKey = (req: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => {
    try {
      if (ctx.config.disableAuth) {
        if (ctx.isStale()) throw unavailable(STALE);
        req.principal = devPrincipal(req);
      } else {
        // decided at the front door (front-door.ts) for a POST /call that came over HTTP
        const v = verdictOf(req.raw);
        if (v !== undefined) {
          if (v.error !== null) throw v.error;
          req.principal = v.principal;
          (req as unknown as CredentialRequest).stkKeyId = v.keyId;
        }
        // ctx.credentials is read per request: tests swap the verifier after the app is built
        else req.principal = ctx.credentials.authenticate(req);
      }
    } catch (err) {
      if (err instanceof AppError && (err.status === 401 || err.status === 429)) ctx.refusals.send(req, reply, err);
      else done(err as Error);
      return;
    }
    done();
  };
  const service = (req: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => {
    if (hasServiceToken(ctx, req)) done();
    else ctx.refusals.send(req, reply, NO_SERVICE_TOKEN);
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
