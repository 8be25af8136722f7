import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tracingWanted } from '../../src/common/tracing-config.js';
import { waitFor, type Proc } from '../helpers/procs.js';
import { call, startStack, type Stack } from './apikeys.setup.js';

/**
 * OpenTelemetry traces from a real Hub and real Bridges, switched on by the standard variables
 * (OTEL_EXPORTER_OTLP_ENDPOINT) and exported over OTLP/HTTP to a receiver this test runs: the span
 * tree of one /call (verify → plan → query) and of one revoke (the change → each Bridge's ack, a
 * frozen Bridge's ack failed and named).
 */

interface OtlpSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  start: bigint;
  end: bigint;
  status: number;
  attrs: Record<string, string | number | boolean>;
}

type AnyValue = { stringValue?: string; intValue?: string | number; boolValue?: boolean; doubleValue?: number };
const plain = (v: AnyValue) => v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : (v.boolValue ?? v.doubleValue ?? ''));

/** A minimal OTLP/HTTP JSON receiver (POST /v1/traces). */
function receiver(): Promise<{ server: Server; url: string; spans: OtlpSpan[]; bodies: string[] }> {
  const spans: OtlpSpan[] = [];
  const bodies: string[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      bodies.push(text);
      if (req.url === '/v1/traces' && String(req.headers['content-type']).startsWith('application/json')) {
        const body = JSON.parse(text) as {
          resourceSpans: Array<{
            resource: { attributes: Array<{ key: string; value: AnyValue }> };
            scopeSpans: Array<{ spans: Array<Record<string, any>> }>;
          }>;
        };
        for (const rs of body.resourceSpans) {
          const service = String(plain(rs.resource.attributes.find((a) => a.key === 'service.name')!.value));
          for (const ss of rs.scopeSpans)
            for (const s of ss.spans)
              spans.push({
                service,
                traceId: s.traceId,
                spanId: s.spanId,
                parentSpanId: s.parentSpanId ?? '',
                name: s.name,
                start: BigInt(s.startTimeUnixNano),
                end: BigInt(s.endTimeUnixNano),
                status: s.status?.code ?? 0,
                attrs: Object.fromEntries((s.attributes ?? []).map((a: { key: string; value: AnyValue }) => [a.key, plain(a.value)])),
              });
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, bodies })),
  );
}

describe('OpenTelemetry traces', () => {
  let s: Stack;
  let rx: Awaited<ReturnType<typeof receiver>>;
  let b1: Proc;
  let b2: Proc;
  let apiKey = '';

  const children = (parent: OtlpSpan) =>
    rx.spans.filter((x) => x.traceId === parent.traceId && x.parentSpanId === parent.spanId).sort((a, b) => (a.start < b.start ? -1 : 1));
  const root = async (service: string, name: string, requestId: string) => {
    let found: OtlpSpan | undefined;
    await waitFor(
      async () => !!(found = rx.spans.find((x) => x.service === service && x.name === name && x.attrs['stk.request_id'] === requestId)),
      10_000,
      `span ${name} of request ${requestId}`,
    );
    return found!;
  };
  const revoke = async (keyId: string) => {
    const r = await fetch(`${s.hub.url}/api/projects/${s.project}/envs/${s.env}/apikeys/${keyId}/revoke`, {
      method: 'POST',
      headers: { authorization: `Bearer ${s.owner}`, 'content-type': 'application/json' },
      body: '{}',
    });
    return {
      status: r.status,
      json: (await r.json()) as { ack: { bridges: number; acked: number; lagging: string[] } },
      requestId: r.headers.get('x-request-id')!,
    };
  };

  beforeAll(async () => {
    rx = await receiver();
    const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_BSP_SCHEDULE_DELAY: '50' };
    s = await startStack({ bridges: 0, hub: { env: { ...otel, STK_REVOKE_ACK_TIMEOUT_MS: '700' } }, bridgeEnv: otel });
    b1 = await s.startBridge({ STK_BRIDGE_ID: 'trace-b1' });
    b2 = await s.startBridge({ STK_BRIDGE_ID: 'trace-b2' });
    apiKey = (await s.createKey('traced', 'reader')).key;
  });
  afterAll(async () => {
    b2?.child.kill('SIGCONT');
    await s?.stop();
    rx?.server.close();
  });

  it('is on only when the standard variables ask for it', () => {
    expect(tracingWanted({})).toBe(false);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).toBe(true);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' })).toBe(true);
    expect(tracingWanted({ OTEL_TRACES_EXPORTER: 'otlp' })).toBe(true);
    expect(tracingWanted({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).toBe(false);
    expect(tracingWanted({ OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).toBe(false);
  });

  it('one /call: POST /call with the request id, and under it verify → plan → query', async () => {
    const r = await call(b1, apiKey);
    expect(r.status).toBe(200);
    const rid = r.headers.get('x-request-id')!;
    const top = await root('santokit-bridge', 'POST /call', rid);
    expect(top.parentSpanId).toBe('');
    expect(top.attrs).toMatchObject({
      'http.route': '/call',
      'http.response.status_code': 200,
      'stk.project': s.project,
      'stk.env': s.env,
      'stk.op': 'select',
    });
    await waitFor(async () => children(top).length >= 3, 5000, 'the /call child spans');
    const kids = children(top);
    expect(kids.map((k) => k.name)).toEqual(['stk.verify', 'stk.plan', 'stk.query']);
    const [verify, plan, query] = kids as [OtlpSpan, OtlpSpan, OtlpSpan];
    expect(verify.end).toBeLessThanOrEqual(plan.start);
    expect(plan.end).toBeLessThanOrEqual(query.start);
    expect(query.end).toBeLessThanOrEqual(top.end);
    expect(query.attrs).toMatchObject({ 'stk.table': 'users', 'stk.op': 'select', 'stk.connection': 'main', 'db.system.name': 'postgresql' });
    expect(kids.every((k) => k.status !== 2)).toBe(true);
  });

  it('a refused /call: its verify span failed with the code; a caller’s traceparent is continued', async () => {
    const traceId = randomBytes(16).toString('hex');
    const parentId = randomBytes(8).toString('hex');
    const r = await call(b1, apiKey.slice(0, -6) + 'AAAAAA', { headers: { traceparent: `00-${traceId}-${parentId}-01` } });
    expect(r.status).toBe(401);
    const top = await root('santokit-bridge', 'POST /call', r.headers.get('x-request-id')!);
    expect(top.traceId).toBe(traceId);
    expect(top.parentSpanId).toBe(parentId);
    expect(top.attrs).toMatchObject({ 'http.response.status_code': 401, 'stk.error_code': 'UNAUTHORIZED' });
    await waitFor(async () => children(top).length >= 1, 5000, 'the verify span');
    expect(children(top).map((k) => [k.name, k.status])).toEqual([['stk.verify', 2]]);
  });

  it('one revoke: the Hub request → stk.change → one stk.bridge.ack per Bridge, named', async () => {
    const k = await s.createKey('to-revoke', 'reader');
    const r = await revoke(k.keyId);
    expect(r.status).toBe(200);
    expect(r.json.ack).toEqual({ bridges: 2, acked: 2, lagging: [] });
    const top = await root('santokit-hub', 'POST /api/projects/:project/envs/:env/apikeys/:key/revoke', r.requestId);
    await waitFor(async () => children(top).some((c) => c.name === 'stk.change'), 5000, 'the change span');
    const change = children(top).find((c) => c.name === 'stk.change')!;
    expect(change.attrs).toMatchObject({ 'stk.change.kind': 'apikey', 'stk.change.bridges': 2, 'stk.change.acked': 2, 'stk.change.lagging': 0 });
    expect(change.attrs['stk.change.seq']).toBeGreaterThan(0);
    const acks = children(change);
    expect(acks.map((a) => [a.name, a.attrs['stk.bridge.id'], a.status]).sort()).toEqual([
      ['stk.bridge.ack', 'trace-b1', 0],
      ['stk.bridge.ack', 'trace-b2', 0],
    ]);
    for (const a of acks) expect(a.end).toBeLessThanOrEqual(change.end);
  });

  it('a revoke a frozen Bridge does not apply: its ack span is the one failed, with its id', async () => {
    const k = await s.createKey('slow-revoke', 'reader');
    b2.child.kill('SIGSTOP'); // the stream stays open, nothing is applied or acknowledged
    let r: Awaited<ReturnType<typeof revoke>>;
    try {
      r = await revoke(k.keyId);
    } finally {
      b2.child.kill('SIGCONT');
    }
    expect(r.json.ack).toEqual({ bridges: 2, acked: 1, lagging: ['trace-b2'] });
    const top = await root('santokit-hub', 'POST /api/projects/:project/envs/:env/apikeys/:key/revoke', r.requestId);
    await waitFor(async () => children(top).some((c) => c.name === 'stk.change'), 5000, 'the change span');
    const change = children(top).find((c) => c.name === 'stk.change')!;
    expect(change.status).toBe(2);
    expect(change.attrs).toMatchObject({ 'stk.change.acked': 1, 'stk.change.lagging': 1 });
    const acks = Object.fromEntries(children(change).map((a) => [a.attrs['stk.bridge.id'], a]));
    expect(acks['trace-b1']!.status).toBe(0);
    expect(acks['trace-b2']!.status).toBe(2);
    expect(acks['trace-b2']!.attrs['stk.bridge.lagging']).toBe(true);
    // the laggard's span lasts the whole wait (STK_REVOKE_ACK_TIMEOUT_MS = 700 ms)
    expect(Number(acks['trace-b2']!.end - acks['trace-b2']!.start) / 1e6).toBeGreaterThanOrEqual(600);
  });

  it('no secret in any exported span', async () => {
    const all = rx.bodies.join('\n');
    for (const secret of [apiKey, s.owner, s.hub.serviceToken, s.dbUrl]) expect(all).not.toContain(secret);
  });
});
