/**
 * The 100-live-keys-per-env limit holds on every path that makes a key live (issue 12, finding 7):
 * un-expiring an expired key with PATCH {"expiresAt": null} or a later expiry, and creates and PATCHes
 * racing each other, on a PostgreSQL Hub store (where concurrent transactions really interleave).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../helpers/fuzz-stack.js';
import { createTestDatabase } from '../helpers/pg.js';
import { waitFor } from '../helpers/procs.js';
import { rememberSecret } from '../helpers/secrets.js';

const LIMIT = 100;

describe('security: the live-key limit on every path', () => {
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  let s: Stack;
  const base = () => `/api/projects/${s.project}/envs/${s.env}/apikeys`;
  const create = async (body: Record<string, unknown>) => {
    const r = await s.api('POST', base(), { roles: ['reader'], ...body });
    if (typeof r.json?.apiKey === 'string') rememberSecret('api-key', r.json.apiKey);
    return r;
  };
  const live = async () => ((await s.api('GET', base())).json.items as Array<{ status: string }>).filter((k) => k.status === 'active').length;

  beforeAll(async () => {
    store = await createTestDatabase('keylimit');
    s = await startStack({ bridges: 0, hub: { dbUrl: store.url } });
  }, 120_000);
  afterAll(async () => {
    await s?.stop();
    await store?.drop();
  });

  it('PATCH cannot un-expire a key past the limit, and 30 racing PATCHes/creates leave exactly the limit', async () => {
    // far enough ahead that 30 creates finish before it, even on a loaded machine
    const soon = new Date(Date.now() + 10_000).toISOString();
    for (let i = 0; i < 30; i++) expect((await create({ name: `short-${i}`, expiresAt: soon })).status).toBe(201);
    await waitFor(async () => (await live()) === 0, 30_000, 'the short keys to expire');
    await Promise.all(
      Array.from({ length: 10 }, async (_, w) => {
        for (let i = w; i < LIMIT; i += 10) {
          const r = await create({ name: `live-${i}` });
          expect(r.status, r.text).toBe(201);
        }
      }),
    );
    expect(await live()).toBe(LIMIT);

    for (const body of [{ expiresAt: null }, { expiresIn: '30d' }, { expiresAt: new Date(Date.now() + 86400_000).toISOString() }]) {
      const r = await s.api('PATCH', `${base()}/short-0`, body);
      expect(r.status, `${JSON.stringify(body)} → ${r.text}`).toBe(409);
      expect(r.json.error.message).toContain(`${LIMIT} live API keys`);
    }
    // a change that keeps the key expired is fine
    expect((await s.api('PATCH', `${base()}/short-0`, { rateLimitPerMin: 60 })).status).toBe(200);
    expect(await live()).toBe(LIMIT);

    // room for exactly one: 20 un-expiring PATCHes and 10 creates at once
    expect((await s.api('POST', `${base()}/live-0/revoke`, {})).status).toBe(200);
    const racing = await Promise.all([
      ...Array.from({ length: 20 }, (_, i) => s.api('PATCH', `${base()}/short-${i + 1}`, { expiresAt: null })),
      ...Array.from({ length: 10 }, (_, i) => create({ name: `race-${i}` })),
    ]);
    const ok = racing.filter((r) => r.status === 200 || r.status === 201);
    const refused = racing.filter((r) => r.status === 409);
    console.log(
      `[security] key limit: PATCH un-expire at ${LIMIT} live keys → 409; 30 racing PATCHes/creates for 1 free slot → ${ok.length} accepted, ${refused.length} × 409; live keys after: ${await live()}`,
    );
    expect(ok).toHaveLength(1);
    expect(refused).toHaveLength(29);
    expect(await live()).toBe(LIMIT);
  }, 120_000);
});
