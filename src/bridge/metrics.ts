/**
 * The Bridge's `/metrics` families (docs/observability.md has the table). Loaded only with metrics on.
 *
 * Per request: one onResponse hook on each route (its route pattern bound when the route is
 * registered, so nothing is looked up by URL), bumping pre-bound cells — a /call that succeeds costs
 * two number increments and one bucket search. Everything else is read at scrape time from what the
 * Bridge keeps anyway: the verifier's outcome counts, the key table, the pools' queues, the sync state.
 *
 * No label carries a key id, an address or a URL; project/env labels only with STK_METRICS_PER_ENV=1.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import { errorCodeOf } from '../common/http.js';
import { counterMap, histogramMap, LATENCY_BUCKETS, statusClass, UNMATCHED, type HistogramCell } from '../common/metric-cells.js';
import { Metrics, type Sample } from '../common/metrics.js';
import type { MetricsSettings } from '../common/metrics-config.js';
import { OPS, type Op } from '../protocol/release.js';
import type { BridgeContext } from './context.js';
import { VERIFY_RESULTS, type VerifyCounts } from './credentials/verify-counts.js';

export interface BridgeMetricsSources {
  /** the API-key verifier's outcome counts */
  verifyCounts: VerifyCounts | null;
  /** every /call query's duration (the pools observe it: PoolSettings.queryTimes) */
  queryTimes: HistogramCell;
}

const gauge = (value: number, labels?: Record<string, string>): Sample => (labels ? { labels, value } : { value });

export function installBridgeMetrics(app: FastifyInstance, ctx: BridgeContext, settings: MetricsSettings, src: BridgeMetricsSources): Metrics {
  const m = new Metrics(settings);

  // ---- requests, /call latency, answer bytes (the only per-request work)
  const requests = counterMap(['route', 'status_class', 'code']);
  const latency = histogramMap(['op'], LATENCY_BUCKETS);
  const byOp = Object.fromEntries(OPS.map((op) => [op, latency.get(op)])) as Record<Op, HistogramCell>;
  const bytes = counterMap([]).get();
  m.counter('stk_bridge_requests_total', 'Requests answered, by route pattern, status class and error code (code="" for a success).', requests);
  m.histogram('stk_bridge_call_duration_seconds', 'POST /call from the request to the last byte of the answer, by operation.', latency);
  m.collected('stk_bridge_response_bytes_total', 'Bytes of answer bodies sent (their Content-Length).', 'counter', () => [gauge(bytes.n)]);

  const count = (route: string, req: FastifyRequest, reply: FastifyReply, ok: { n: number }) => {
    const status = reply.statusCode;
    const code = errorCodeOf(req, status);
    if (code === undefined && status >= 200 && status < 300) ok.n++;
    else requests.get(route, statusClass(status), code ?? '').n++;
    const len = reply.getHeader('content-length');
    if (len !== undefined) bytes.n += typeof len === 'number' ? len : Number(len) || 0;
  };
  app.addHook('onRoute', (route) => {
    const url = route.url;
    const ok = requests.get(url, '2xx', '');
    const hook = (req: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => {
      count(url, req, reply, ok);
      const op = req.stkOp;
      if (op !== null) byOp[op].observe(reply.elapsedTime / 1000);
      done();
    };
    const own = route.onResponse;
    route.onResponse = own === undefined ? [hook] : Array.isArray(own) ? [...own, hook] : [own, hook];
  });
  // refusals answered at the front door (front-door.ts) never reach a hook: counted under POST /call's route
  ctx.refusals.onRawAnswer = (status, code, len) => {
    requests.get('/call', statusClass(status), code).n++;
    bytes.n += len;
  };
  // requests no route matched (the router's 404/405): one label, whatever the URL was
  const unmatchedOk = requests.get(UNMATCHED, '2xx', '');
  app.addHook('onResponse', (req, reply, done) => {
    if (req.is404) count(UNMATCHED, req, reply, unmatchedOk);
    done();
  });

  // ---- key checks
  const vc = src.verifyCounts;
  if (vc) {
    m.collected('stk_bridge_key_verifications_total', 'API-key checks by result.', 'counter', () =>
      VERIFY_RESULTS.map((r) => ({ labels: { result: r }, value: vc[r] })),
    );
    m.collected(
      'stk_bridge_rate_limited_total',
      'Requests refused with 429: scope="key" per-key limit, scope="address" invalid-key flood from one address.',
      'counter',
      () => [
        { labels: { scope: 'key' }, value: vc.rate_limited },
        { labels: { scope: 'address' }, value: vc.flooded },
      ],
    );
  }
  m.collected('stk_bridge_keys_loaded', 'API keys in the in-memory key table.', 'gauge', () => [gauge(ctx.keys.size)]);

  // ---- database
  m.histogram('stk_bridge_db_query_duration_seconds', 'Duration of each /call query (waiting for a connection included).', () => [src.queryTimes]);
  const pools = () => {
    let open = 0;
    let busy = 0;
    let waiting = 0;
    let sent = 0;
    let maxDepth = 0;
    for (const e of ctx.releases.stats()) {
      for (const p of e.pools) {
        open += p.open;
        busy += p.busy;
        waiting += p.waiting;
        sent += p.sent;
        if (p.maxDepth > maxDepth) maxDepth = p.maxDepth;
      }
    }
    return { open, busy, waiting, sent, maxDepth };
  };
  m.collected('stk_bridge_db_connections', 'Database connections over every pool: state="in_use" has a query in flight, "idle" has none.', 'gauge', () => {
    const p = pools();
    return [gauge(p.busy, { state: 'in_use' }), gauge(p.open - p.busy, { state: 'idle' })];
  });
  m.collected('stk_bridge_db_waiting_queries', 'Queries waiting for a connection with room.', 'gauge', () => [gauge(pools().waiting)]);
  m.collected('stk_bridge_db_pipelined_queries', 'Queries sent on connections and not answered yet (pipelined), over every pool.', 'gauge', () => [
    gauge(pools().sent),
  ]);
  m.collected('stk_bridge_db_pipeline_depth_max', 'The most queries one connection has in its pipeline now.', 'gauge', () => [gauge(pools().maxDepth)]);

  // ---- sync with the Hub
  m.collected('stk_bridge_sync_last_seq', 'The change-feed cursor this Bridge has applied (every change up to it is in memory).', 'gauge', () => [
    gauge(ctx.sync.stats().cursor),
  ]);
  m.collected(
    'stk_bridge_sync_lag_seconds',
    'Seconds since the last message from the Hub (each carries the Hub head; applied on arrival). Heartbeats keep it under STK_SYNC_HEARTBEAT_MS; -1 before the first.',
    'gauge',
    () => {
      const s = ctx.sync.stats();
      return [gauge(s.lastContact === 0 ? -1 : (Date.now() - s.lastContact) / 1000)];
    },
  );
  m.collected('stk_bridge_sync_connected', '1 while a change stream from a Hub is open.', 'gauge', () => [gauge(ctx.sync.stats().hubIndex >= 0 ? 1 : 0)]);
  m.collected('stk_bridge_sync_hub_index', 'Which STK_HUB_URL entry the stream is from (0-based; -1 = none).', 'gauge', () => [
    gauge(ctx.sync.stats().hubIndex),
  ]);
  m.collected('stk_bridge_sync_reconnects_total', 'Change streams lost or refused and retried.', 'counter', () => [gauge(ctx.sync.stats().reconnects)]);

  // ---- releases
  m.collected('stk_bridge_releases_loaded', 'Envs with a release loaded.', 'gauge', () => [
    gauge(ctx.releases.stats().filter((e) => !Number.isNaN(e.releaseCreatedAt)).length),
  ]);
  m.collected('stk_bridge_release_age_max_seconds', 'Age of the oldest release loaded (since it was created on the Hub).', 'gauge', () => {
    let oldest = Infinity;
    for (const e of ctx.releases.stats()) if (e.releaseCreatedAt < oldest) oldest = e.releaseCreatedAt;
    return [gauge(oldest === Infinity ? 0 : Math.max(0, (Date.now() - oldest) / 1000))];
  });
  if (settings.perEnv) {
    m.collected('stk_bridge_release_age_seconds', 'Age of each env’s release (STK_METRICS_PER_ENV=1).', 'gauge', () =>
      ctx.releases
        .stats()
        .filter((e) => !Number.isNaN(e.releaseCreatedAt))
        .map((e) => gauge(Math.max(0, (Date.now() - e.releaseCreatedAt) / 1000), { project: e.project, env: e.env })),
    );
  }
  return m;
}
