import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBridge, startHub, waitFor, type Proc } from '../helpers/procs.js';
import { createTestDatabase } from '../helpers/pg.js';
import { request } from 'node:http';

/** POST that reads the answer even when the server replies (413) before the upload finished. */
function postRaw(url: string, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let data = '';
      res.on('data', (d) => (data += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
    });
    req.on('error', (e) => ((e as NodeJS.ErrnoException).code === 'EPIPE' || (e as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(e)));
    req.end(body);
  });
}

describe('hub and bridge health, error envelope, log redaction', () => {
  let hub: Awaited<ReturnType<typeof startHub>>;
  let bridge: Proc;
  beforeAll(async () => {
    hub = await startHub();
    bridge = await startBridge({ hubUrl: hub.url, serviceToken: hub.serviceToken });
  });
  afterAll(async () => {
    await bridge?.stop();
    await hub?.stop();
  });

  it('hub /healthz, /internal/healthz and /readyz answer {"ok":true}', async () => {
    for (const p of ['/healthz', '/internal/healthz', '/readyz']) {
      const r = await fetch(hub.url + p);
      expect(r.status, p).toBe(200);
      expect(await r.json()).toEqual({ ok: true });
    }
  });

  it("bridge /healthz is 200; /readyz is 200 once it holds the Hub's snapshot, 503 before; a project's readiness needs the service token", async () => {
    const h = await fetch(bridge.url + '/healthz');
    expect(h.status).toBe(200);
    expect(await h.json()).toEqual({ ok: true });
    // plain /readyz is what a load balancer checks: synced with a Hub, no project named
    await waitFor(async () => (await fetch(bridge.url + '/readyz')).status === 200, 20_000, 'bridge /readyz 200');
    expect(await (await fetch(bridge.url + '/readyz')).json()).toEqual({ ok: true });
    // ?project=&env= names a tenant: without the service token, 401 whatever the names
    const anon = await fetch(bridge.url + '/readyz?project=nope&env=dev');
    expect(anon.status).toBe(401);
    expect(((await anon.json()) as { error: { code: string } }).error.code).toBe('UNAUTHORIZED');
    const r = await fetch(bridge.url + '/readyz?project=nope&env=dev', { headers: { 'x-santokit-service-token': hub.serviceToken } });
    expect(r.status).toBe(503);
    expect(await r.json()).toEqual({ ok: false });
    // the query is checked by the route's contract: a name given twice is a clear 400 naming it
    const twice = await fetch(bridge.url + '/readyz?project=a&project=b&env=dev', { headers: { 'x-santokit-service-token': hub.serviceToken } });
    expect(twice.status).toBe(400);
    const e = ((await twice.json()) as { error: { code: string; message: string } }).error;
    expect(e.code).toBe('BAD_REQUEST');
    expect(e.message).toMatch(/^query\.project: /);
    // a Bridge that cannot reach any Hub has no snapshot: not ready
    const lone = await startBridge({ hubUrl: 'http://127.0.0.1:9', serviceToken: hub.serviceToken, env: { STK_BRIDGE_INITIAL_SYNC_TIMEOUT_MS: '200' } });
    try {
      expect((await fetch(lone.url + '/readyz')).status).toBe(503);
    } finally {
      await lone.stop();
    }
  });

  for (const target of ['hub', 'bridge'] as const) {
    it(`${target}: malformed JSON → ${target === 'hub' ? '400' : '401 (no key: the body is never parsed)'} envelope with requestId matching x-request-id`, async () => {
      const base = target === 'hub' ? hub.url + '/api/auth/login' : bridge.url + '/call';
      const r = await fetch(base, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"path": ' });
      const body = (await r.json()) as { error: { code: string; message: string; requestId: string } };
      if (target === 'hub') {
        expect(r.status).toBe(400);
        expect(body.error.code).toBe('BAD_REQUEST');
        expect(body.error.message).toMatch(/JSON/);
      } else {
        expect(r.status).toBe(401);
        expect(body.error.code).toBe('UNAUTHORIZED');
      }
      expect(body.error.requestId).toBe(r.headers.get('x-request-id'));
    });

    it(`${target}: unknown route → 404 envelope`, async () => {
      const r = await fetch((target === 'hub' ? hub.url : bridge.url) + '/no/such/route');
      expect(r.status).toBe(404);
      const body = (await r.json()) as { error: { code: string; requestId: string } };
      expect(body.error.code).toBe('NOT_FOUND');
      expect(body.error.requestId).toMatch(/^[0-9A-Z]{26}$/);
    });

    it(`${target}: body over 10 MB → ${target === 'hub' ? '413' : '401 without a key (checked first, from the headers)'} envelope`, async () => {
      const big = JSON.stringify({ path: 'x', pad: 'a'.repeat(10 * 1024 * 1024 + 10) });
      const url = target === 'hub' ? hub.url + '/api/auth/login' : bridge.url + '/call';
      const r = await postRaw(url, big);
      expect(r.status).toBe(target === 'hub' ? 413 : 401);
      expect((JSON.parse(r.body) as { error: { code: string } }).error.code).toBe(target === 'hub' ? 'PAYLOAD_TOO_LARGE' : 'UNAUTHORIZED');
    });

    it(`${target}: a body that is not JSON → 415; an unknown method on a known path → 405 with Allow`, async () => {
      // the Hub's login is public; the Bridge's /call needs a key first (that is checked before the body)
      const url = target === 'hub' ? hub.url + '/api/auth/login' : bridge.url + '/call';
      const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' });
      if (target === 'hub') {
        expect(r.status).toBe(415);
        expect(((await r.json()) as { error: { code: string } }).error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
      } else expect(r.status).toBe(401);
      const get = await fetch(url);
      expect(get.status).toBe(405);
      expect(get.headers.get('allow')).toBe('POST');
      const env = (await get.json()) as { error: { code: string; message: string; requestId: string } };
      expect(env.error.code).toBe('METHOD_NOT_ALLOWED');
      expect(env.error.message).toMatch(/allowed: POST/);
      expect(env.error.requestId).toBe(get.headers.get('x-request-id'));
      const post = await fetch((target === 'hub' ? hub.url : bridge.url) + '/healthz', { method: 'POST' });
      expect(post.status).toBe(405);
      expect(post.headers.get('allow')).toBe('GET, HEAD');
    });
  }

  it('hub /internal/* requires the service token', async () => {
    const r = await fetch(hub.url + '/internal/sync/bridges');
    expect(r.status).toBe(401);
    const ok = await fetch(hub.url + '/internal/sync/bridges', { headers: { 'x-santokit-service-token': hub.serviceToken } });
    expect(ok.status).toBe(200);
    // no route matched: 404 with or without the token (the routes themselves are the guard)
    expect((await fetch(hub.url + '/internal/anything')).status).toBe(404);
  });

  it('an API key, bearer token and cookie in request headers never reach the logs', async () => {
    const key = 'stk_logtest_' + 'Z'.repeat(30);
    await fetch(bridge.url + '/call', {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-santokit-api-key': key,
        authorization: 'Bearer secret-bearer-xyz',
        cookie: 'stk_access=cookie-secret-xyz',
      },
      body: JSON.stringify({ path: 'db/users/select' }),
    });
    await fetch(hub.url + '/api/auth/whoami', { headers: { authorization: 'Bearer stks_' + 'Q'.repeat(40) } });
    // the Bridges' own traffic (acks, usage reports) is declared quiet: no access line per ack
    const ack = await fetch(hub.url + '/internal/sync/ack', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-santokit-service-token': hub.serviceToken },
      body: JSON.stringify({ bridgeId: 'log-test-bridge', seqs: [] }),
    });
    expect(ack.status).toBe(409); // no stream of that Bridge on this Hub: refused, and not logged either
    await new Promise((r) => setTimeout(r, 300));
    expect(hub.logs()).not.toContain('"url":"/internal/sync/ack"');
    const logs = bridge.logs() + hub.logs();
    // the Hub's request was logged (one access line: method, url, status, no headers), without the secrets;
    // the Bridge's refusal gets no line of its own (a summary per interval counts refusals: refusals.ts)
    expect(logs).not.toMatch(/"url":"\/call","statusCode":401/);
    expect(logs).toMatch(/"method":"GET","url":"\/api\/auth\/whoami","statusCode":\d+/);
    expect(logs).not.toContain(key);
    expect(logs).not.toContain('secret-bearer-xyz');
    expect(logs).not.toContain('cookie-secret-xyz');
    expect(logs).not.toContain('Q'.repeat(40));
  });
});

describe('hub store on PostgreSQL', () => {
  it('migrates, bootstraps the owner and is ready; two hubs starting at once on one store both come up', async () => {
    const db = await createTestDatabase('hubstore');
    // Hubs on one store share its STK_SECRET_KEY (a Hub with another key refuses the store)
    const secretKey = randomBytes(32).toString('hex');
    const [a, b] = await Promise.all([startHub({ dbUrl: db.url, secretKey }), startHub({ dbUrl: db.url, secretKey })]);
    try {
      for (const h of [a, b]) {
        expect((await fetch(h.url + '/readyz')).status).toBe(200);
        const r = await fetch(h.url + '/api/auth/login', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ email: 'owner@example.com', password: 'owner-password-1' }),
        });
        expect(r.status).toBe(200);
      }
    } finally {
      await a.stop();
      await b.stop();
      await db.drop();
    }
  });
});
