import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHub, TEST_OWNER } from '../helpers/procs.js';
import { loginToken } from '../helpers/cli.js';
import { createTestDatabase, DATABASE_URL, query } from '../helpers/pg.js';

type Hub = Awaited<ReturnType<typeof startHub>>;

/** The operator plane on a PostgreSQL Hub store (counts come back as strings there, unique violations differ). */
describe('operator plane on a PostgreSQL store', () => {
  let hub: Hub;
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  let token: string;
  const call = async (method: string, path: string, body?: unknown, t: string | undefined = token) => {
    const r = await fetch(hub.url + path, {
      method,
      headers: { ...(t ? { authorization: `Bearer ${t}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: r.status, json: (await r.json()) as any };
  };

  beforeAll(async () => {
    store = await createTestDatabase('hubops');
    hub = await startHub({ dbUrl: store.url });
    token = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
  });
  afterAll(async () => {
    await hub?.stop();
    await store?.drop();
  });

  it('projects, envs (with limit), connections, invites and audit work end to end', async () => {
    expect((await call('POST', '/api/projects', { name: 'shop' })).status).toBe(201);
    expect((await call('POST', '/api/projects', { name: 'shop' })).status).toBe(409);
    // concurrent creates of one name: exactly one wins, the rest are 409 (never 500)
    const racers = await Promise.all(Array.from({ length: 5 }, () => call('POST', '/api/projects', { name: 'race' })));
    expect(racers.map((r) => r.status).sort()).toEqual([201, 409, 409, 409, 409]);
    for (let i = 0; i < 10; i++) expect((await call('POST', '/api/projects/shop/envs', { name: `e${i}` })).status).toBe(201);
    const over = await call('POST', '/api/projects/shop/envs', { name: 'e10' });
    expect(over.status).toBe(409);
    expect(over.json.error.message).toContain('at most 10 envs');
    expect((await call('GET', '/api/projects/shop/envs')).json.items).toHaveLength(10);

    const set = await call('PUT', '/api/projects/shop/envs/e0/connections/main', { engine: 'postgres', dbUrl: DATABASE_URL });
    expect(set.status).toBe(200);
    expect((await call('POST', '/api/projects/shop/envs/e0/connections/main/test')).json).toMatchObject({ ok: true });
    const [row] = await query<{ db_url_enc: string }>(store.url, 'select db_url_enc from connections');
    expect(row!.db_url_enc).toMatch(/^v1:/);
    const [ev] = await query<{ kind: string; payload_json: string }>(store.url, "select kind, payload_json from change_events where kind = 'connection'");
    expect(ev).toEqual({ kind: 'connection', payload_json: '{"name":"main"}' });

    const inv = await call('POST', '/api/projects/shop/invites', { email: 'dev@example.com', role: 'deployer' });
    expect(inv.status).toBe(201);
    expect(
      (await call('POST', '/api/invites/accept', { email: 'dev@example.com', code: inv.json.inviteCode, password: 'dev-password-1' }, undefined)).status,
    ).toBe(200);
    const dev = await loginToken(hub.url, 'dev@example.com', 'dev-password-1');
    expect((await call('GET', '/api/projects', undefined, dev)).json.items).toEqual([{ name: 'shop', createdAt: expect.any(String), role: 'deployer' }]);
    expect((await call('POST', '/api/projects/shop/envs/e1/connections/main/test', undefined, dev)).status).toBe(403);

    const audit = await call('GET', '/api/audit?action=rbac.*&since=1h');
    expect(audit.status).toBe(200);
    expect(audit.json.items.map((i: { action: string }) => i.action).sort()).toEqual(['rbac.accept', 'rbac.invite']);
  });
});
