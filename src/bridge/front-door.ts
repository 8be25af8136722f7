/**
 * The Bridge's front door (issue 19): `POST /call` requests have their API key checked on the HTTP
 * server's request listener, before Fastify builds a request, routes it or runs a hook. A request
 * refused with 401 or 429 is answered right there (Refusals.sendRaw: pre-serialized envelope, a new
 * request id, no access line, counted for the interval's summary) — a flood of bad or over-limit keys
 * costs little more than Node's own HTTP handling. Every other request goes on to Fastify:
 *
 * - the check's verdict travels on the raw request (`kVerdict`): the `/call` route's auth hook
 *   (route-auth.ts) takes it instead of checking again — the principal, or the error to answer (403,
 *   503: through the error handler as before);
 * - a request the front door does not look at (another path, another method, `/call` spelled any other
 *   way, `/call?…`) is checked by that hook as before: the front door is a shortcut, never the only
 *   check. A verdict is only ever read by the hook of the route the router matched (POST /call).
 *
 * It is off (Fastify decides everything) with STK_DISABLE_AUTH, with tracing on (a refusal then gets
 * its span), and while the server closes (Fastify's 503).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FrontDoor } from '../common/http.js';
import { clientAddress } from '../common/trust-proxy.js';
import { AppError } from '../protocol/errors.js';
import type { BridgeContext, CredentialRequest, Principal } from './context.js';

const kVerdict = Symbol('stkVerdict');

/** what the front door decided for a request it passed on */
export interface Verdict {
  principal: Principal | null;
  keyId: string | null;
  /** the check's error, not a 401/429 (those are answered at the door) */
  error: Error | null;
}

type WithVerdict = IncomingMessage & { [kVerdict]?: Verdict };

/** The front door's verdict on this request, if it looked at it. */
export function verdictOf(raw: IncomingMessage): Verdict | undefined {
  return (raw as WithVerdict)[kVerdict];
}

/** Sets `front.handle` to the Bridge's /call check. */
export function openFrontDoor(front: FrontDoor, ctx: BridgeContext): void {
  const ipOf = clientAddress(ctx.config.http.trustProxy);
  front.handle = (req: IncomingMessage, res: ServerResponse): boolean => {
    if (req.url !== '/call' || req.method !== 'POST') return false;
    const ip = ipOf(req);
    const creq: CredentialRequest = { headers: req.headers, ip, stkKeyId: null, keyIdSeen: null };
    // read per request: tests swap the verifier after the app is built
    const c = ctx.credentials;
    let r: Principal | AppError;
    if (c.check !== undefined) r = c.check(creq);
    else {
      try {
        r = c.authenticate(creq);
      } catch (err) {
        if (!(err instanceof AppError)) {
          (req as WithVerdict)[kVerdict] = { principal: null, keyId: null, error: err as Error };
          return false;
        }
        r = err;
      }
    }
    if (r instanceof AppError) {
      if (r.status === 401 || r.status === 429) {
        ctx.refusals.sendRaw(req, res, ip, creq.keyIdSeen ?? null, r);
        return true;
      }
      (req as WithVerdict)[kVerdict] = { principal: null, keyId: null, error: r };
      return false;
    }
    (req as WithVerdict)[kVerdict] = { principal: r, keyId: creq.stkKeyId ?? null, error: null };
    return false;
  };
}
