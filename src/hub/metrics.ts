/**
 * The Hub's `/metrics` families (docs/observability.md has the table). Loaded only with metrics on.
 *
 * HTTP requests and latency are labelled by the route pattern the router matched (`/api/projects/:project`,
 * bound into each route's onResponse hook when it is registered), never by the URL: a request no route
 * matched is `route="unmatched"` whatever its path. The rest is read at scrape time.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import { counterMap, histogramMap, LATENCY_BUCKETS, statusClass, UNMATCHED, type CounterCell, type HistogramCell } from '../common/metric-cells.js';
import { Metrics } from '../common/metrics.js';
import type { MetricsSettings } from '../common/metrics-config.js';
import type { HubContext } from './context.js';
import { peekSync } from './services/sync/index.js';
import { LOGIN_RESULTS } from './stats.js';

export function installHubMetrics(app: FastifyInstance, ctx: HubContext, settings: MetricsSettings): Metrics {
  const m = new Metrics(settings);

  // ---- HTTP by route pattern
  const requests = counterMap(['method', 'route', 'status_class']);
  const latency = histogramMap(['method', 'route'], LATENCY_BUCKETS);
  m.counter('stk_hub_http_requests_total', 'Requests answered, by method, route pattern and status class.', requests);
  m.histogram('stk_hub_http_request_duration_seconds', 'Time from the request to the last byte of the answer, by method and route pattern.', latency);

  /** cells per method of one route (a route has a handful of methods) */
  const cellsOf = (route: string) => {
    const byMethod = new Map<string, { latency: HistogramCell; ok: CounterCell }>();
    return (method: string) => {
      let c = byMethod.get(method);
      if (!c) byMethod.set(method, (c = { latency: latency.get(method, route), ok: requests.get(method, route, '2xx') }));
      return c;
    };
  };
  const observe = (route: string, cells: ReturnType<typeof cellsOf>, req: FastifyRequest, reply: FastifyReply) => {
    const c = cells(req.method);
    const status = reply.statusCode;
    if (status >= 200 && status < 300) c.ok.n++;
    else requests.get(req.method, route, statusClass(status)).n++;
    c.latency.observe(reply.elapsedTime / 1000);
  };
  app.addHook('onRoute', (route) => {
    const url = route.url;
    const cells = cellsOf(url);
    const hook = (req: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => {
      observe(url, cells, req, reply);
      done();
    };
    const own = route.onResponse;
    route.onResponse = own === undefined ? [hook] : Array.isArray(own) ? [...own, hook] : [own, hook];
  });
  // no route matched: one label for every such URL, and the method only when it is a standard one
  const unmatched = cellsOf(UNMATCHED);
  const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
  app.addHook('onResponse', (req, reply, done) => {
    if (req.is404) {
      const method = METHODS.has(req.method) ? req.method : 'other';
      const status = reply.statusCode;
      requests.get(method, UNMATCHED, statusClass(status)).n++;
      unmatched(method).latency.observe(reply.elapsedTime / 1000);
    }
    done();
  });

  // ---- logins, change acks
  const stats = ctx.stats;
  m.collected('stk_hub_logins_total', 'Operator logins by result (malformed input, throttled, wrong email/password, ok).', 'counter', () =>
    LOGIN_RESULTS.map((r) => ({ labels: { result: r }, value: stats.logins[r] })),
  );
  m.histogram(
    'stk_hub_change_ack_duration_seconds',
    'From a committed change (revoke, key change, apply/promote/rollback, connection) to every connected Bridge having applied it, by change kind and outcome.',
    stats.acks,
  );
  m.collected(
    'stk_hub_change_lagging_bridges',
    'Bridges that had not applied the most recent change when its wait ended (STK_REVOKE_ACK_TIMEOUT_MS).',
    'gauge',
    () => [{ value: stats.lastLagging }],
  );
  m.collected('stk_hub_change_lagging_bridges_total', 'Lagging Bridges summed over every change wait.', 'counter', () => [{ value: stats.laggingTotal }]);

  // ---- sync
  m.collected('stk_hub_bridges_connected', 'Bridges with an open change stream to this Hub.', 'gauge', () => [
    { value: peekSync(ctx)?.connected().length ?? 0 },
  ]);
  m.collected('stk_hub_change_feed_head_seq', 'The newest change-feed sequence number in the store.', 'gauge', async () => {
    const r = await ctx.db
      .selectFrom('change_events')
      .select((eb) => eb.fn.max('seq').as('head'))
      .executeTakeFirst();
    return [{ value: Number(r?.head ?? 0) }];
  });

  // ---- store pool (PostgreSQL stores)
  const pool = ctx.store.poolStats;
  if (pool) {
    m.collected('stk_hub_store_pool_connections', 'Connections of the PostgreSQL store pool: state="in_use" or "idle".', 'gauge', () => {
      const p = pool();
      return [
        { labels: { state: 'in_use' }, value: p.total - p.idle },
        { labels: { state: 'idle' }, value: p.idle },
      ];
    });
    m.collected('stk_hub_store_pool_waiting', 'Store queries waiting for a pool connection.', 'gauge', () => [{ value: pool().waiting }]);
  }
  return m;
}
