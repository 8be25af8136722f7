/**
 * The server span of every request, for Hub and Bridge alike (installed only when tracing is on): named
 * by the route pattern the router matched (unmatched URLs share one name), with the request id, ended
 * with the status and error code when the response is sent. `annotate` adds what only one app knows
 * (the Bridge: the caller's project/env and the operation) before the span ends.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { errorCodeOf } from './http.js';
import { UNMATCHED } from './metric-cells.js';
import type { TraceSpan, Tracing } from './tracing.js';

export function installRequestSpans(app: FastifyInstance, tracing: Tracing, annotate?: (req: FastifyRequest, t: TraceSpan) => void): void {
  app.addHook('onRequest', (req, _reply, done) => {
    const route = req.is404 ? UNMATCHED : (req.routeOptions.url ?? UNMATCHED);
    req.stkTrace = tracing.request(`${req.method} ${route}`, req.headers, {
      'stk.request_id': req.id,
      'http.request.method': req.method,
      'http.route': route,
    });
    done();
  });
  app.addHook('onResponse', (req, reply, done) => {
    const t = req.stkTrace;
    if (t !== null) {
      t.set('http.response.status_code', reply.statusCode);
      const code = errorCodeOf(req, reply.statusCode);
      if (code !== undefined) t.set('stk.error_code', code);
      if (reply.statusCode >= 500) t.fail(code ?? 'server error');
      annotate?.(req, t);
      t.end();
    }
    done();
  });
}
