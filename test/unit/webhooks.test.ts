import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import { HostPolicy } from '../../src/common/net-policy.js';
import { parseWebhookUrl, sendWebhook, signWebhook } from '../../src/hub/services/webhooks/sender.js';
import { backoffMs } from '../../src/hub/services/webhooks/worker.js';
import type { HubContext } from '../../src/hub/context.js';
import { audit } from '../../src/hub/services/audit.js';
import { recordUsage } from '../../src/hub/services/apikeys.js';
import { waitFor } from '../helpers/procs.js';
import { rememberSecret } from '../helpers/secrets.js';
import { startReceiver, verifyStandardWebhook, type Receiver } from '../helpers/webhook-receiver.js';

/**
 * Webhook signing, target checks at send time, backoff, and the queue on a SQLite store (an
 * in-process Hub): the PostgreSQL side runs in test/integration/webhooks and test/cluster.
 */
describe('webhooks: signing, targets, backoff', () => {
  let recv: Receiver;
  beforeAll(async () => {
    recv = await startReceiver();
  });
  afterAll(async () => recv?.close());

  it("signs like the Standard Webhooks spec's published test vector", () => {
    expect(signWebhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}')).toBe(
      'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
    );
  });

  it('backoff: ×4 per attempt from the base, jittered ±20 %, capped', () => {
    const mid = () => 0.5;
    expect([1, 2, 3, 4, 5].map((a) => backoffMs(a, 5000, 3 * 3600_000, mid))).toEqual([5000, 20_000, 80_000, 320_000, 1_280_000]);
    expect(backoffMs(30, 5000, 3 * 3600_000, mid)).toBe(3 * 3600_000);
    expect(backoffMs(1, 5000, 3600_000, () => 0)).toBe(4000);
    expect(backoffMs(1, 5000, 3600_000, () => 0.999999)).toBe(6000);
  });

  it('a name is checked by every address it resolves to when sending (DNS rebinding): metadata, private, loopback refused', async () => {
    const allowReceiver = HostPolicy.parse(`127.0.0.1:${recv.port}`);
    const to = (addrs: string[]) => async () => addrs.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    const send = (host: string, addrs: string[], policy = HostPolicy.NONE) =>
      sendWebhook(`http://${host}:${recv.port}/dns`, {}, '{}', { policy, timeoutMs: 2000, resolve: to(addrs) });
    expect(await send('hooks.example.com', ['169.254.169.254'])).toMatchObject({
      status: null,
      error: expect.stringContaining('resolves to a link-local address'),
    });
    expect(await send('hooks.example.com', ['93.184.216.34', '10.0.0.7'])).toMatchObject({
      error: expect.stringContaining('resolves to a private network address'),
    });
    expect(await send('hooks.example.com', ['::ffff:127.0.0.1'])).toMatchObject({ error: expect.stringContaining('loopback') });
    expect(await send('hooks.example.com', ['127.0.0.1'])).toMatchObject({ error: expect.stringContaining('resolves to a loopback address') });
    expect(recv.at('/dns')).toHaveLength(0);
    // the operator's listed address is reachable by a name that resolves to it
    expect(await send('hooks.example.com', ['127.0.0.1'], allowReceiver)).toMatchObject({ status: 200, error: null });
    expect(recv.at('/dns')).toHaveLength(1);
    // an IP literal gets no lookup: checked as written
    expect(await sendWebhook(`http://127.0.0.1:${recv.port}/dns`, {}, '{}', { policy: HostPolicy.NONE, timeoutMs: 2000 })).toMatchObject({
      error: expect.stringContaining('is not allowed: it is a loopback address'),
    });
    expect(recv.at('/dns')).toHaveLength(1);
  });

  it('redirects are not followed; a big answer is not read to its end; Retry-After is read', async () => {
    const policy = HostPolicy.parse(`127.0.0.1:${recv.port}`);
    recv.script('/moved', [{ status: 307, headers: { location: `${recv.url}/target` } }]);
    expect(await sendWebhook(`${recv.url}/moved`, {}, '{}', { policy, timeoutMs: 2000 })).toEqual({
      status: 307,
      error: 'HTTP 307 (redirects are not followed)',
      retryAfterMs: null,
    });
    expect(recv.at('/target')).toHaveLength(0);
    recv.script('/busy', [{ status: 503, headers: { 'retry-after': '120' } }]);
    expect(await sendWebhook(`${recv.url}/busy`, {}, '{}', { policy, timeoutMs: 2000 })).toEqual({ status: 503, error: 'HTTP 503', retryAfterMs: 120_000 });
    // a receiver that keeps sending: the attempt ends once RESPONSE_CAP bytes came, long before the timeout
    const { createServer } = await import('node:http');
    const endless = createServer((_req, res) => {
      res.writeHead(200);
      const chunk = Buffer.alloc(64 * 1024, 'x');
      const pump = () => {
        while (res.write(chunk));
        res.once('drain', pump);
      };
      pump();
    });
    await new Promise<void>((r) => endless.listen(0, '127.0.0.1', r));
    const port = (endless.address() as { port: number }).port;
    const started = Date.now();
    const r = await sendWebhook(`http://127.0.0.1:${port}/`, {}, '{}', { policy: HostPolicy.parse(`127.0.0.1:${port}`), timeoutMs: 20_000 });
    expect(r).toMatchObject({ status: 200, error: null });
    expect(Date.now() - started).toBeLessThan(10_000);
    endless.closeAllConnections();
    endless.close();
  });

  it('target URLs: checked as written when added', () => {
    const none = HostPolicy.NONE;
    expect(parseWebhookUrl('https://hooks.example.com/santokit?t=1', none)).toBe('https://hooks.example.com/santokit?t=1');
    expect(() => parseWebhookUrl('https://[fd00::1]/x', none)).toThrow(/unique local \(private\) address/);
    expect(() => parseWebhookUrl('https://100.64.0.1/x', none)).toThrow(/carrier-grade NAT/);
    expect(() => parseWebhookUrl('https://[64:ff9b::a9fe:a9fe]/x', none)).toThrow(/link-local address .*\(as 169\.254\.169\.254 inside an IPv6 address\)/);
    expect(() => parseWebhookUrl('https://hooks.example.com/x#frag', none)).toThrow(/fragment/);
    expect(() => parseWebhookUrl('https://x.example/' + 'a'.repeat(2048), none)).toThrow(/longer than 2048/);
    expect(parseWebhookUrl('http://10.0.0.5:8080/x', HostPolicy.parse('10.0.0.0/8'))).toBe('http://10.0.0.5:8080/x');
  });
});

describe('webhooks on a SQLite store (in-process Hub)', () => {
  let recv: Receiver;
  let app: FastifyInstance;
  let ctx: HubContext;
  let token: string;
  const owner = { email: 'owner@example.com', password: rememberSecret('password', 'sqlite-webhook-pw-1') };
  const req = async (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown) => {
    const r = await app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${token}` },
      ...(payload === undefined ? {} : { payload: payload as object }),
    });
    return { status: r.statusCode, json: r.json() as any };
  };

  beforeAll(async () => {
    recv = await startReceiver();
    const cfg = loadHubConfig({
      STK_SECRET_KEY: randomBytes(32).toString('hex'),
      STK_SERVICE_TOKEN: randomBytes(24).toString('hex'),
      STK_HUB_DB_URL: 'sqlite::memory:',
      STK_OWNER_EMAIL: owner.email,
      STK_OWNER_PASSWORD: owner.password,
      STK_WEBHOOK_ALLOW_HOSTS: `127.0.0.1:${recv.port}`,
      STK_WEBHOOK_POLL_MS: '50',
      STK_WEBHOOK_BACKOFF_BASE_MS: '100',
      STK_WEBHOOK_QUEUE_MAX: '2',
    });
    ({ app, ctx } = await buildHub(cfg, { logger: false }));
    await app.ready();
    const login = await app.inject({ method: 'POST', url: '/api/auth/login', payload: owner });
    token = rememberSecret('session-token', login.json().token as string);
    expect((await req('POST', '/api/projects', { name: 'shop' })).status).toBe(201);
  });
  afterAll(async () => {
    await app?.close();
    await recv?.close();
  });

  it('queues, claims and delivers (signed), retries a 500; past STK_WEBHOOK_QUEUE_MAX pending a new event is dropped and counted', async () => {
    const add = await req('POST', '/api/projects/shop/webhooks', { url: `${recv.url}/lite`, events: ['apikey.created'] });
    expect(add.status).toBe(201);
    const secret = rememberSecret('webhook-secret', add.json.secret as string);
    recv.script('/lite', [{ status: 500 }, { status: 200 }]);
    const t = await req('POST', `/api/projects/shop/webhooks/${add.json.webhookId}/test`);
    expect(t.status).toBe(202);
    await waitFor(async () => recv.at('/lite').length >= 2, 10_000, 'two attempts');
    const got = recv.at('/lite');
    expect(got.map((r) => r.headers['webhook-id'])).toEqual([t.json.deliveryId, t.json.deliveryId]);
    expect(verifyStandardWebhook(secret, got[1]!.headers, got[1]!.body)).toBe(true);
    await waitFor(
      async () => (await req('GET', '/api/projects/shop/webhooks/deliveries')).json.items[0]?.status === 'succeeded',
      5000,
      'recorded as succeeded',
    );

    // a receiver that never answers in time keeps deliveries pending: the third one does not fit
    recv.script('/lite', [{ status: 200, hang: true }]);
    const ids: number[] = [];
    for (let i = 0; i < 3; i++) ids.push((await req('POST', `/api/projects/shop/webhooks/${add.json.webhookId}/test`)).status);
    expect(ids).toEqual([202, 202, 409]);
    const list = await req('GET', '/api/projects/shop/webhooks');
    expect(list.json.items[0]).toMatchObject({ pending: 2, dropped: 1 });
    // removing the endpoint removes its queue
    expect((await req('DELETE', `/api/projects/shop/webhooks/${add.json.webhookId}`)).status).toBe(200);
    expect((await req('GET', '/api/projects/shop/webhooks/deliveries')).json.items).toEqual([]);
  });
  it('events queued inside a transaction on the one SQLite connection: an audited apikey.suspend and apikey.leaked (listed fields only), a usage report with 429s (no deadlock)', async () => {
    const add = await req('POST', '/api/projects/shop/webhooks', {
      url: `${recv.url}/tx`,
      events: ['apikey.suspended', 'apikey.rate_limited', 'apikey.leaked'],
    });
    expect(add.status).toBe(201);
    rememberSecret('webhook-secret', add.json.secret as string);
    expect((await req('POST', '/api/projects/shop/envs', { name: 'dev' })).status).toBe(201);
    const project = (await ctx.db.selectFrom('projects').select('id').where('name', '=', 'shop').executeTakeFirstOrThrow()).id;
    const env = (await ctx.db.selectFrom('envs').select('id').where('name', '=', 'dev').executeTakeFirstOrThrow()).id;
    const keyId = '1SQ1TEWEBH00';
    const at = new Date().toISOString();
    await ctx.db
      .insertInto('api_keys')
      .values({ id: keyId, project_id: project, env_id: env, name: 'lite', roles_json: '["reader"]', secret_hash: 'x', status: 'active', created_at: at })
      .execute();
    // what a suspend writes (the keys service's audit action): the event comes from the audit entry
    const operator = { id: 'op', email: 'owner@example.com' } as never;
    await ctx.db
      .transaction()
      .execute((trx) =>
        audit(
          ctx,
          { operator, requestId: null, ip: null },
          { action: 'apikey.suspend', project: 'shop', env: 'dev', detail: { keyId, name: 'lite', roles: ['reader'], reason: 'test' } },
          trx,
        ),
      );
    // (this Hub queues at most 2 pending deliveries per project: one event at a time)
    await waitFor(async () => recv.at('/tx').length >= 1, 10_000, 'the suspend event');
    // what a leak report writes: the payload takes listed fields only (not the report's url, nor the `secret` label)
    await ctx.db.transaction().execute((trx) =>
      audit(
        ctx,
        null,
        {
          action: 'apikey.leaked',
          project: 'shop',
          env: 'dev',
          actorType: 'system',
          detail: {
            keyId,
            name: 'lite',
            status: 'active',
            policy: 'notify',
            action: 'none',
            secret: 'current',
            source: 'github',
            url: 'https://gist.example/x?k=stk_...',
          },
        },
        trx,
      ),
    );
    await waitFor(async () => recv.at('/tx').length >= 2, 10_000, 'the leak event');
    const minute = at.slice(0, 16) + ':00.000Z';
    const report = { bridgeId: 'b1', keys: [{ keyId, minutes: [{ minute, count: 1, rejected: { '429': 2 } }], lastUsedAt: minute, sources: [] }] };
    const done = await Promise.race([recordUsage(ctx, report), new Promise((r) => setTimeout(() => r('stuck'), 5000))]);
    expect(done).toEqual({ keys: 1 });
    await waitFor(async () => recv.at('/tx').length >= 3, 10_000, 'the three events');
    await recordUsage(ctx, report);
    await new Promise((r) => setTimeout(r, 300));
    expect(recv.at('/tx').map((r) => [r.json.type, r.json.data.keyId, r.json.data.reason ?? r.json.data.hour ?? r.json.data.source])).toEqual([
      ['apikey.suspended', keyId, 'test'],
      ['apikey.leaked', keyId, 'github'],
      ['apikey.rate_limited', keyId, minute.slice(0, 13) + ':00:00.000Z'],
    ]);
    const leaked = recv.at('/tx')[1]!.json.data;
    expect(Object.keys(leaked).sort()).toEqual(['action', 'actor', 'auditId', 'env', 'keyId', 'name', 'policy', 'project', 'source', 'status']);
    expect(leaked.actor).toEqual({ type: 'system', id: null, email: null });
  });
});

describe('webhooks: at most STK_WEBHOOK_ENDPOINT_CONCURRENCY attempts in flight per endpoint', () => {
  let recv: Receiver;
  let app: FastifyInstance;
  let token: string;
  const owner = { email: 'owner@example.com', password: rememberSecret('password', 'sqlite-webhook-pw-2') };

  beforeAll(async () => {
    recv = await startReceiver();
    ({ app } = await buildHub(
      loadHubConfig({
        STK_SECRET_KEY: randomBytes(32).toString('hex'),
        STK_SERVICE_TOKEN: randomBytes(24).toString('hex'),
        STK_HUB_DB_URL: 'sqlite::memory:',
        STK_OWNER_EMAIL: owner.email,
        STK_OWNER_PASSWORD: owner.password,
        STK_WEBHOOK_ALLOW_HOSTS: `127.0.0.1:${recv.port}`,
        STK_WEBHOOK_POLL_MS: '20',
        STK_WEBHOOK_ENDPOINT_CONCURRENCY: '2',
      }),
      { logger: false },
    ));
    await app.ready();
    token = rememberSecret('session-token', (await app.inject({ method: 'POST', url: '/api/auth/login', payload: owner })).json().token as string);
  });
  afterAll(async () => {
    await app?.close();
    await recv?.close();
  });

  it('8 deliveries to a slow endpoint: never more than 2 at once, all delivered', async () => {
    const auth = { authorization: `Bearer ${token}` };
    expect((await app.inject({ method: 'POST', url: '/api/projects', headers: auth, payload: { name: 'shop' } })).statusCode).toBe(201);
    const add = await app.inject({
      method: 'POST',
      url: '/api/projects/shop/webhooks',
      headers: auth,
      payload: { url: `${recv.url}/slow`, events: ['apikey.created'] },
    });
    rememberSecret('webhook-secret', add.json().secret as string);
    let inFlight = 0;
    let most = 0;
    recv.script('/slow', [{ status: 200, delayMs: 300 }]);
    recv.onRequest = () => {
      most = Math.max(most, ++inFlight);
      setTimeout(() => inFlight--, 300);
    };
    for (let i = 0; i < 8; i++)
      expect((await app.inject({ method: 'POST', url: `/api/projects/shop/webhooks/${add.json().webhookId}/test`, headers: auth })).statusCode).toBe(202);
    await waitFor(async () => recv.at('/slow').length >= 8, 15_000, '8 deliveries');
    expect(most).toBe(2);
  });
});
