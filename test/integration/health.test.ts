import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBridge, startHub, type Proc } from '../helpers/procs.js';
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

  it('bridge /healthz is 200 and /readyz is 503 {"ok":false} for an unknown project', async () => {
    const h = await fetch(bridge.url + '/healthz');
    expect(h.status).toBe(200);
    expect(await h.json()).toEqual({ ok: true });
    const r = await fetch(bridge.url + '/readyz?project=nope&env=dev');
    expect(r.status).toBe(503);
    expect(await r.json()).toEqual({ ok: false });
  });

  for (const target of ['hub', 'bridge'] as const) {
    it(`${target}: malformed JSON → 400 envelope with requestId matching x-request-id`, async () => {
      const base = target === 'hub' ? hub.url + '/api/auth/login' : bridge.url + '/call';
      const r = await fetch(base, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"path": ' });
      expect(r.status).toBe(400);
      const body = (await r.json()) as { error: { code: string; message: string; requestId: string } };
      expect(body.error.code).toBe('BAD_REQUEST');
      expect(body.error.message).toMatch(/JSON/);
      expect(body.error.requestId).toBe(r.headers.get('x-request-id'));
    });

    it(`${target}: unknown route → 404 envelope`, async () => {
      const r = await fetch((target === 'hub' ? hub.url : bridge.url) + '/no/such/route');
      expect(r.status).toBe(404);
      const body = (await r.json()) as { error: { code: string; requestId: string } };
      expect(body.error.code).toBe('NOT_FOUND');
      expect(body.error.requestId).toMatch(/^[0-9A-Z]{26}$/);
    });

    it(`${target}: body over 10 MB → 413 envelope`, async () => {
      const big = JSON.stringify({ path: 'x', pad: 'a'.repeat(10 * 1024 * 1024 + 10) });
      const url = target === 'hub' ? hub.url + '/api/auth/login' : bridge.url + '/call';
      const r = await postRaw(url, big);
      expect(r.status).toBe(413);
      expect((JSON.parse(r.body) as { error: { code: string } }).error.code).toBe('PAYLOAD_TOO_LARGE');
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
      headers: { 'content-type': 'application/json', 'x-santokit-api-key': key, authorization: 'Bearer secret-bearer-xyz', cookie: 'stk_access=cookie-secret-xyz' },
      body: JSON.stringify({ path: 'db/users/select' }),
    });
    await fetch(hub.url + '/api/auth/whoami', { headers: { authorization: 'Bearer stks_' + 'Q'.repeat(40) } });
    await new Promise((r) => setTimeout(r, 300));
    const logs = bridge.logs() + hub.logs();
    // both requests were logged (one access line each: method, url, status, no headers), without the secrets
    expect(logs).toMatch(/"method":"POST","url":"\/call","statusCode":401/);
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
