/**
 * The Hub's spans (docs/observability.md), installed only when tracing is on: one server span per
 * request, named by the route pattern, with the request id; the handler runs with it as the active
 * span (src/common/tracing-config.ts), so a change it commits hangs `stk.change` and one
 * `stk.bridge.ack` per Bridge under it (services/sync/index.ts).
 */
import type { FastifyInstance } from 'fastify';
import { installRequestSpans } from '../common/request-spans.js';
import { runWithSpan } from '../common/tracing-config.js';
import type { Tracing } from '../common/tracing.js';

export function installHubTracing(app: FastifyInstance, tracing: Tracing): void {
  app.decorateRequest('stkTrace', null);
  installRequestSpans(app, tracing);
  // the handler (and the route's own preHandlers) run with the request's span active
  app.addHook('preHandler', (req, _reply, done) => {
    const t = req.stkTrace;
    if (t === null) done();
    else runWithSpan(t, done);
  });
}
