/**
 * The Hub's spans (docs/observability.md), installed only when tracing is on: one server span per
 * request, named by the route pattern, with the request id; the handler runs with it as the active
 * span (src/common/tracing-config.ts), so a change it commits hangs `stk.change` and one
 * `stk.bridge.ack` per Bridge under it (services/sync/index.ts).
 */
import type { FastifyInstance } from 'fastify';
import { errorCodeOf } from '../common/http.js';
import { UNMATCHED } from '../common/metric-cells.js';
import { runWithSpan } from '../common/tracing-config.js';
import type { Tracing } from '../common/tracing.js';

export function installHubTracing(app: FastifyInstance, tracing: Tracing): void {
  app.decorateRequest('stkTrace', null);
  app.addHook('onRequest', (req, _reply, done) => {
    const route = req.is404 ? UNMATCHED : (req.routeOptions.url ?? UNMATCHED);
    req.stkTrace = tracing.request(`${req.method} ${route}`, req.headers, {
      'stk.request_id': req.id,
      'http.request.method': req.method,
      'http.route': route,
    });
    done();
  });
  // the handler (and the route's own preHandlers) run with the request's span active
  app.addHook('preHandler', (req, _reply, done) => {
    const t = req.stkTrace;
    if (t === null) done();
    else runWithSpan(t, done);
  });
  app.addHook('onResponse', (req, reply, done) => {
    const t = req.stkTrace;
    if (t !== null) {
      t.set('http.response.status_code', reply.statusCode);
      const code = errorCodeOf(req, reply.statusCode);
      if (code !== undefined) t.set('stk.error_code', code);
      if (reply.statusCode >= 500) t.fail(code ?? 'server error');
      t.end();
    }
    done();
  });
}
