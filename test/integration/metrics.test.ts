import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parser } from '@prometheus-io/lezer-promql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checksumOf, KEY_ID_ALPHABET, newKeyId, randomString } from '../../src/protocol/key-format.js';
import { freePort, ROOT, type Proc } from '../helpers/procs.js';
import { createTestDatabase } from '../helpers/pg.js';
import { call, startStack, type Stack } from './apikeys.setup.js';

/**
 * `/metrics` on a real Hub (PostgreSQL store) and real Bridges: where it is served and who may read
 * it, what it says after known traffic, that its series do not multiply with keys, clients or random
 * URLs, and that every metric the Grafana dashboard queries is one they export.
 */

interface Series {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The Prometheus text format's sample lines. */
function parse(text: string): Series[] {
  const out: Series[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** the same key id with another secret (a valid checksum): the verifier's `secret` result */
function otherSecret(apiKey: string): string {
  const body = apiKey.slice(0, -28) + randomString(KEY_ID_ALPHABET, 22);
  return body + checksumOf(body);
}

const key = (s: Series) => `${s.name}{${Object.entries(s.labels).map(([k, v]) => `${k}="${v}"`)}}`;

/** one sample's value (undefined when absent); `labels` must all match */
function value(all: Series[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = all.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length === 0) return undefined;
  return found.reduce((a, s) => a + s.value, 0);
}

describe('/metrics on Hub and Bridge', () => {
  let s: Stack;
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  let bridge: Proc;
  const token = randomBytes(24).toString('hex');
  const ports = { hub: 0, bridge: 0, perEnv: 0 };
  let apiKey = '';
  let keyId = '';

  const scrape = async (port: number, auth: string | null = token) => {
    const r = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: auth === null ? {} : { authorization: `Bearer ${auth}` } });
    return { status: r.status, type: r.headers.get('content-type'), text: await r.text() };
  };
  const series = async (port: number) => {
    const r = await scrape(port);
    expect(r.status, r.text).toBe(200);
    return parse(r.text);
  };

  beforeAll(async () => {
    store = await createTestDatabase('metrics_store');
    ports.hub = await freePort();
    ports.bridge = await freePort();
    ports.perEnv = await freePort();
    s = await startStack({
      bridges: 0,
      hub: { dbUrl: store.url, env: { STK_METRICS_PORT: String(ports.hub), STK_METRICS_TOKEN: token } },
    });
    bridge = await s.startBridge({ STK_METRICS_PORT: String(ports.bridge), STK_METRICS_TOKEN: token });
    await s.startBridge({ STK_METRICS_PORT: String(ports.perEnv), STK_METRICS_TOKEN: token, STK_METRICS_PER_ENV: '1' });
    const k = await s.createKey('metrics', 'reader');
    apiKey = k.key;
    keyId = k.keyId;
  });
  afterAll(async () => {
    await s?.stop();
    await store?.drop();
  });

  it('is served only on its own port, with the Bearer token; never on the public ports', async () => {
    for (const port of [ports.hub, ports.bridge]) {
      expect((await scrape(port, null)).status).toBe(401);
      expect((await scrape(port, 'x'.repeat(48))).status).toBe(401);
      expect((await scrape(port, token.slice(0, -1))).status).toBe(401);
      const ok = await scrape(port);
      expect(ok.status).toBe(200);
      expect(ok.type).toMatch(/^text\/plain; version=0\.0\.4/);
      // the listener serves /metrics and nothing else
      expect((await fetch(`http://127.0.0.1:${port}/call`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(404);
      expect((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })).status).toBe(405);
    }
    for (const url of [s.hub.url, bridge.url]) {
      const r = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      expect(r.status).toBe(404);
      expect(await r.text()).not.toContain('stk_');
    }
  });

  it('Bridge: requests by outcome, /call latency by op, verifications by result, rate limits, pool, sync, keys', async () => {
    expect((await call(bridge, apiKey)).status).toBe(200);
    expect((await call(bridge, apiKey)).status).toBe(200);
    expect((await call(bridge, otherSecret(apiKey))).status).toBe(401);
    expect((await call(bridge, apiKey.slice(0, -6) + 'AAAAAA')).status).toBe(401); // checksum mismatch
    const unknown = apiKey.replace(/_[0-9A-Z]{12}_/, `_${newKeyId()}_`).slice(0, -6);
    expect((await call(bridge, unknown + checksumOf(unknown))).status).toBe(401);
    expect((await call(bridge, undefined)).status).toBe(401);
    expect((await call(bridge, apiKey, { path: 'db/nope/select' })).status).toBe(404);
    // a key limited to 1 request/min: its second request is refused
    const limited = await s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apikeys`, { name: 'limited', roles: ['reader'], rateLimitPerMin: 1 });
    expect(limited.status, limited.text).toBe(201);
    expect((await call(bridge, limited.json.apiKey)).status).toBe(200);
    expect((await call(bridge, limited.json.apiKey)).status).toBe(429);
    // a suspended key (one of the results declared up front: it counts once keys can be suspended)
    const held = await s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apikeys`, { name: 'held', roles: ['reader'] });
    expect(held.status, held.text).toBe(201);
    const sus = await s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apikeys/${held.json.keyId}/suspend`, {});
    expect(sus.status, sus.text).toBe(200);
    expect((await call(bridge, held.json.apiKey)).status).toBe(401);

    const m = await series(ports.bridge);
    expect(value(m, 'stk_bridge_requests_total', { route: '/call', status_class: '2xx', code: '' })).toBe(3);
    expect(value(m, 'stk_bridge_requests_total', { route: '/call', status_class: '4xx', code: 'UNAUTHORIZED' })).toBe(5);
    expect(value(m, 'stk_bridge_requests_total', { route: '/call', status_class: '4xx', code: 'NOT_FOUND' })).toBe(1);
    expect(value(m, 'stk_bridge_requests_total', { route: '/call', status_class: '4xx', code: 'TOO_MANY_REQUESTS' })).toBe(1);
    // the 404 resolved no operation: 3 successes + 0 others carry an op
    expect(value(m, 'stk_bridge_call_duration_seconds_count', { op: 'select' })).toBe(3);
    expect(value(m, 'stk_bridge_call_duration_seconds_bucket', { op: 'select', le: '+Inf' })).toBe(3);
    expect(value(m, 'stk_bridge_call_duration_seconds_sum', { op: 'select' })).toBeGreaterThan(0);
    expect(value(m, 'stk_bridge_call_duration_seconds_count', { op: 'delete' })).toBe(0);
    expect(value(m, 'stk_bridge_response_bytes_total')).toBeGreaterThan(100);
    const results = Object.fromEntries(m.filter((x) => x.name === 'stk_bridge_key_verifications_total').map((x) => [x.labels.result, x.value]));
    expect(results).toMatchObject({
      ok: 4,
      secret: 1,
      malformed: 1,
      unknown: 1,
      missing: 1,
      rate_limited: 1,
      revoked: 0,
      expired: 0,
      suspended: 1,
      ip_denied: 0,
    });
    expect(value(m, 'stk_bridge_rate_limited_total', { scope: 'key' })).toBe(1);
    expect(value(m, 'stk_bridge_rate_limited_total', { scope: 'address' })).toBe(0);
    expect(value(m, 'stk_bridge_keys_loaded')).toBe(3);
    expect(value(m, 'stk_bridge_db_query_duration_seconds_count')).toBe(3);
    expect(value(m, 'stk_bridge_db_connections', { state: 'idle' })).toBeGreaterThanOrEqual(1);
    expect(value(m, 'stk_bridge_db_connections', { state: 'in_use' })).toBe(0);
    expect(value(m, 'stk_bridge_db_waiting_queries')).toBe(0);
    expect(value(m, 'stk_bridge_db_pipelined_queries')).toBe(0);
    expect(value(m, 'stk_bridge_db_pipeline_depth_max')).toBe(0);
    expect(value(m, 'stk_bridge_sync_connected')).toBe(1);
    expect(value(m, 'stk_bridge_sync_hub_index')).toBe(0);
    expect(value(m, 'stk_bridge_sync_last_seq')).toBeGreaterThan(0);
    expect(value(m, 'stk_bridge_sync_lag_seconds')).toBeGreaterThanOrEqual(0);
    expect(value(m, 'stk_bridge_sync_lag_seconds')).toBeLessThan(30);
    expect(value(m, 'stk_bridge_sync_reconnects_total')).toBe(0);
    expect(value(m, 'stk_bridge_releases_loaded')).toBe(1);
    expect(value(m, 'stk_bridge_release_age_max_seconds')).toBeGreaterThan(0);
    // Node's default metrics, the event-loop lag among them
    for (const n of ['nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_used_bytes', 'process_resident_memory_bytes'])
      expect(value(m, n), n).toBeGreaterThanOrEqual(0);
    // no project/env label without STK_METRICS_PER_ENV, no key id anywhere
    expect(m.filter((x) => x.labels.project !== undefined || x.labels.env !== undefined).map(key)).toEqual([]);
    const text = (await scrape(ports.bridge)).text;
    for (const secret of [apiKey, keyId, token, s.hub.serviceToken, s.dbUrl, '127.0.0.1']) expect(text).not.toContain(secret);
  });

  it('Bridge with STK_METRICS_PER_ENV=1: release age per env', async () => {
    const m = await series(ports.perEnv);
    expect(value(m, 'stk_bridge_release_age_seconds', { project: s.project, env: s.env })).toBeGreaterThan(0);
    expect(m.filter((x) => x.name === 'stk_bridge_release_age_seconds')).toHaveLength(1);
  });

  it('Hub: HTTP by route pattern, logins by result, ack durations, connected Bridges, head seq, store pool', async () => {
    const bad = await fetch(`${s.hub.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'owner@example.com', password: 'not-the-password' }),
    });
    expect(bad.status).toBe(401);
    const k = await s.createKey('to-revoke', 'reader');
    const r = await s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apikeys/${k.keyId}/revoke`, {});
    expect(r.status, r.text).toBe(200);
    expect(r.json.ack).toMatchObject({ bridges: 2, acked: 2 });

    const m = await series(ports.hub);
    expect(value(m, 'stk_hub_logins_total', { result: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(value(m, 'stk_hub_logins_total', { result: 'invalid' })).toBe(1);
    expect(value(m, 'stk_hub_logins_total', { result: 'throttled' })).toBe(0);
    expect(
      value(m, 'stk_hub_http_requests_total', { method: 'POST', route: '/api/projects/:project/envs/:env/apikeys/:key/revoke', status_class: '2xx' }),
    ).toBe(1);
    expect(value(m, 'stk_hub_http_requests_total', { method: 'POST', route: '/api/auth/login', status_class: '4xx' })).toBe(1);
    expect(value(m, 'stk_hub_http_request_duration_seconds_count', { method: 'POST', route: '/api/projects/:project/envs/:env/apikeys/:key/revoke' })).toBe(1);
    // every key create/revoke since both Bridges connected: acked by both
    expect(value(m, 'stk_hub_change_ack_duration_seconds_count', { change: 'apikey', outcome: 'acked' })).toBeGreaterThanOrEqual(3);
    expect(value(m, 'stk_hub_change_ack_duration_seconds_count', { change: 'release', outcome: 'no_bridges' })).toBe(1); // the apply, before any Bridge
    expect(value(m, 'stk_hub_change_lagging_bridges')).toBe(0);
    expect(value(m, 'stk_hub_change_lagging_bridges_total')).toBe(0);
    expect(value(m, 'stk_hub_bridges_connected')).toBe(2);
    expect(value(m, 'stk_hub_change_feed_head_seq')).toBeGreaterThanOrEqual(5);
    expect(value(m, 'stk_hub_store_pool_connections', { state: 'idle' })).toBeGreaterThanOrEqual(0);
    expect(value(m, 'stk_hub_store_pool_waiting')).toBeGreaterThanOrEqual(0);
    expect(value(m, 'nodejs_eventloop_lag_seconds')).toBeGreaterThanOrEqual(0);
    const text = (await scrape(ports.hub)).text;
    for (const secret of [s.owner, s.hub.serviceToken, store.url, token, k.keyId]) expect(text).not.toContain(secret);
  });

  it('series do not grow with keys, clients or random URLs', async () => {
    const ours = (all: Series[]) =>
      new Set(
        all
          .filter((x) => x.name.startsWith('stk_'))
          .map(key)
          .sort(),
      );
    const traffic = async (keys: string[], urls: number) => {
      for (const k of keys) {
        // a fresh connection per call: another client each time
        const r = await fetch(`${bridge.url}/call`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-santokit-api-key': k, connection: 'close' },
          body: JSON.stringify({ path: 'db/users/select', params: {} }),
        });
        expect(r.status).toBe(200);
        expect((await call(bridge, otherSecret(k))).status).toBe(401);
        expect((await call(bridge, apiKey, { path: `db/t${randomBytes(4).toString('hex')}/select` })).status).toBe(404);
      }
      for (let i = 0; i < urls; i++) {
        const junk = randomBytes(6).toString('hex');
        for (const u of [`${bridge.url}/${junk}`, `${s.hub.url}/${junk}/x`, `${s.hub.url}/api/projects/p${junk}`]) {
          const r = await fetch(u, { headers: { connection: 'close' } });
          expect([401, 404]).toContain(r.status);
        }
        await fetch(`${bridge.url}/${junk}`, { method: 'DELETE' });
      }
    };
    await traffic([apiKey], 1);
    const bridgeBefore = ours(await series(ports.bridge));
    const hubBefore = ours(await series(ports.hub));
    const more: string[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apikeys`, { name: `many-${i}`, roles: ['reader'] });
      expect(r.status, r.text).toBe(201);
      more.push(r.json.apiKey);
    }
    await traffic(more, 40);
    const bridgeAfter = ours(await series(ports.bridge));
    const hubAfter = ours(await series(ports.hub));
    expect([...bridgeAfter].filter((x) => !bridgeBefore.has(x))).toEqual([]);
    expect(bridgeAfter.size).toBe(bridgeBefore.size);
    // the Hub gained the key-create route's series (first use of it here), nothing per key or URL
    const newHub = [...hubAfter].filter((x) => !hubBefore.has(x));
    expect(
      newHub.every((x) => x.includes('route="/api/projects/:project/envs/:env/apikeys"')),
      newHub.join('\n'),
    ).toBe(true);
    expect(newHub.length).toBeLessThanOrEqual(1 + 17); // one counter + one histogram's 14 buckets, +Inf, sum, count
    expect([...hubAfter].filter((x) => x.includes('unmatched')).length).toBe([...hubBefore].filter((x) => x.includes('unmatched')).length);
  });

  it('every metric the Grafana dashboard queries is exported by a running Hub or Bridge', async () => {
    const dash = JSON.parse(readFileSync(join(ROOT, 'deploy/grafana/santokit.json'), 'utf8')) as {
      panels: Array<{ title: string; targets?: Array<{ expr: string }> }>;
    };
    const exported = new Set([...(await series(ports.hub)), ...(await series(ports.bridge)), ...(await series(ports.perEnv))].map((x) => x.name));
    const exprs = dash.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
    expect(exprs.length).toBeGreaterThanOrEqual(10);
    const used = new Set<string>();
    for (const { panel, expr } of exprs) {
      // Grafana's interval variables become a duration; the rest is PromQL as Prometheus parses it
      const q = expr.replaceAll('$__rate_interval', '5m');
      const names: string[] = [];
      const errors: string[] = [];
      parser.parse(q).iterate({
        enter(n) {
          if (n.type.isError) errors.push(`at ${n.from}`);
          // a metric name: the Identifier of a vector selector (not a function, label or keyword)
          if (n.name === 'Identifier' && n.node.parent?.name === 'VectorSelector') names.push(q.slice(n.from, n.to));
        },
      });
      expect(errors, `${panel}: ${expr} does not parse`).toEqual([]);
      expect(names.length, `${panel}: ${expr}`).toBeGreaterThan(0);
      for (const n of names) {
        used.add(n);
        expect(exported.has(n), `${panel}: ${n} is not exported`).toBe(true);
      }
    }
    // the panels the issue asks for
    for (const n of [
      'stk_bridge_requests_total',
      'stk_bridge_call_duration_seconds_bucket',
      'stk_bridge_key_verifications_total',
      'stk_bridge_rate_limited_total',
      'stk_bridge_db_connections',
      'stk_bridge_sync_lag_seconds',
      'stk_hub_change_ack_duration_seconds_bucket',
    ])
      expect(used.has(n), n).toBe(true);
  });
});
