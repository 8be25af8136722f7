/**
 * The Bridge's spans (docs/observability.md), installed only when tracing is on. One server span per
 * request (`POST /call`, with the request id), and under it for a /call: `stk.verify` (the key
 * check), `stk.plan` (path, permission rule, params → SQL) and one `stk.query` per statement
 * (src/bridge/executor). With tracing off none of this is loaded and `req.stkTrace` stays null.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { installRequestSpans } from '../common/request-spans.js';
import type { Tracing } from '../common/tracing.js';
import type { BridgeContext, CredentialRequest } from './context.js';

export function installBridgeTracing(app: FastifyInstance, ctx: BridgeContext, tracing: Tracing): void {
  installRequestSpans(app, tracing, (req, t) => {
    const p = req.principal;
    if (p) {
      t.set('stk.project', p.project);
      t.set('stk.env', p.env);
    }
    if (req.stkOp !== null) t.set('stk.op', req.stkOp);
  });
  // the key check as its own span: the verifier wrapped (read per request, so a test's double is wrapped too)
  const inner = ctx.credentials;
  ctx.credentials = {
    authenticate(req: CredentialRequest) {
      const t = (req as FastifyRequest).stkTrace;
      if (!t) return inner.authenticate(req);
      const s = t.child('stk.verify');
      try {
        return inner.authenticate(req);
      } catch (e) {
        s.fail((e as { code?: string }).code ?? 'refused');
        throw e;
      } finally {
        s.end();
      }
    },
  };
}
