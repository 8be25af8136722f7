/**
 * `/metrics` in the Prometheus text format (prom-client's registry and default process metrics), for
 * Hub and Bridge (docs/observability.md). Loaded only when metrics are on (STK_METRICS_PORT): with
 * them off neither prom-client nor this module is imported.
 *
 * Families are read at scrape time: from cells the hot path bumps (./metric-cells.ts: plain numbers,
 * no label hashing per request) or from state the process keeps anyway (key table size, pool
 * queues, sync cursor), through `collected`.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyBaseLogger } from 'fastify';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { envelope } from '../protocol/errors.js';
import type { CellMap, CounterCell, HistogramCell } from './metric-cells.js';
import type { MetricsSettings } from './metrics-config.js';
import { ulid } from './ulid.js';

export interface Sample {
  labels?: Record<string, string | number>;
  value: number;
  metricName?: string;
}

type Kind = 'counter' | 'gauge' | 'histogram';

/** A family prom-client's registry prints: what `get()` returns is formatted as is. */
class Family {
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: Kind,
    readonly read: () => Sample[] | Promise<Sample[]>,
  ) {}

  async get() {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: await this.read() };
  }
}

/** Every family of one process (a Hub or a Bridge), with Node's default metrics. */
export class Metrics {
  readonly registry = new Registry();

  constructor(readonly settings: MetricsSettings) {
    // heap, RSS, CPU, GC, handles and the event-loop lag (nodejs_eventloop_lag_*)
    collectDefaultMetrics({ register: this.registry });
  }

  #add(f: Family): void {
    this.registry.registerMetric(f as never);
  }

  /** A family computed at scrape time (a gauge of current state, or a counter the process already keeps). */
  collected(name: string, help: string, type: 'counter' | 'gauge', read: () => Sample[] | Promise<Sample[]>): void {
    this.#add(new Family(name, help, type, read));
  }

  /** A counter family of cells. */
  counter(name: string, help: string, cells: CellMap<CounterCell>): void {
    this.#add(new Family(name, help, 'counter', () => [...cells.values()].map((c) => ({ labels: c.labels, value: c.n }))));
  }

  /** A histogram family of cells (cumulative buckets, `_sum`, `_count`). */
  histogram(name: string, help: string, cells: CellMap<HistogramCell> | (() => Iterable<HistogramCell>)): void {
    const all = typeof cells === 'function' ? cells : () => cells.values();
    this.#add(
      new Family(name, help, 'histogram', () => {
        const out: Sample[] = [];
        for (const c of all()) {
          let acc = 0;
          c.bounds.forEach((b, i) => {
            acc += c.counts[i]!;
            out.push({ metricName: `${name}_bucket`, labels: { ...c.labels, le: b }, value: acc });
          });
          out.push({ metricName: `${name}_bucket`, labels: { ...c.labels, le: '+Inf' }, value: c.count });
          out.push({ metricName: `${name}_sum`, labels: c.labels, value: c.sum });
          out.push({ metricName: `${name}_count`, labels: c.labels, value: c.count });
        }
        return out;
      }),
    );
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Starts the metrics listener (STK_METRICS_PORT on STK_METRICS_HOST). */
  serve(log: FastifyBaseLogger): Promise<{ port: number; close(): Promise<void> }> {
    return serveMetrics(this, log);
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * The metrics listener: `GET /metrics` (and HEAD) on its own port, with the Bearer token when one is
 * set (compared in constant time); anything else 404/405. Never registered on the public app.
 */
export async function serveMetrics(metrics: Metrics, log: FastifyBaseLogger): Promise<{ port: number; close(): Promise<void> }> {
  const s = metrics.settings;
  const listenPort = s.port;
  if (listenPort === null) throw new Error('metrics are off (STK_METRICS_PORT unset)');
  const want = s.token === null ? null : digest(s.token);
  const fail = (res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}) => {
    const id = ulid();
    const body = JSON.stringify(envelope(code, message, id));
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'x-request-id': id, ...headers });
    res.end(body);
  };
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') return fail(res, 404, 'NOT_FOUND', 'this listener serves GET /metrics only');
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return fail(res, 405, 'METHOD_NOT_ALLOWED', `${req.method} is not allowed on /metrics`, { allow: 'GET, HEAD' });
    if (want !== null) {
      const auth = req.headers.authorization;
      const given = typeof auth === 'string' && /^bearer /i.test(auth) ? auth.slice(7).trim() : '';
      if (!given || !timingSafeEqual(digest(given), want)) {
        return fail(res, 401, 'UNAUTHORIZED', 'metrics token required: Authorization: Bearer <STK_METRICS_TOKEN>', { 'www-authenticate': 'Bearer' });
      }
    }
    const body = await metrics.text();
    res.writeHead(200, { 'content-type': metrics.registry.contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  const server = createServer({ requestTimeout: 10_000, headersTimeout: 10_000, maxHeaderSize: 16 * 1024 }, (req, res) => {
    // a request body is never read: /metrics takes none
    handle(req, res).catch((err: unknown) => {
      log.error({ err }, 'metrics: scrape failed');
      if (!res.headersSent) fail(res, 500, 'INTERNAL_ERROR', 'internal error');
      else res.destroy();
    });
  });
  // a scraper needs one connection or two: a flood of them must not take the process's file descriptors
  server.maxConnections = 32;
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPort, s.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const loopback = s.host === '127.0.0.1' || s.host === '::1' || s.host === 'localhost';
  if (!loopback && want === null)
    log.warn({ host: s.host, port }, 'metrics: the listener is reachable beyond this machine without a token (set STK_METRICS_TOKEN)');
  log.info({ host: s.host, port, token: want !== null }, `metrics on http://${s.host}:${port}/metrics`);
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
