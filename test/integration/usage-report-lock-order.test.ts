import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import type { HubContext } from '../../src/hub/context.js';
import { recordUsage } from '../../src/hub/services/apikeys.js';
import type { UsageReport } from '../../src/protocol/sync.js';
import { newKeyId } from '../../src/protocol/key-format.js';
import { createTestDatabase } from '../helpers/pg.js';

/**
 * Usage reports from several Bridges are merged at once (one transaction each) on a PostgreSQL store:
 * each upserts rows of the keys it lists. Two reports listing the same keys in different orders locked
 * them in those orders and deadlocked (PostgreSQL aborts one: 40P01), and the aborted Bridge's counts
 * waited for its next interval. The Hub now writes every report's keys in one order (by key id, minutes
 * in time order), so concurrent reports queue behind each other instead.
 */
describe('usage reports on a PostgreSQL store: concurrent reports never deadlock', () => {
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  let app: FastifyInstance;
  let ctx: HubContext;
  const keyIds: string[] = [];

  beforeAll(async () => {
    store = await createTestDatabase('usagelock');
    ({ app, ctx } = await buildHub(
      loadHubConfig({
        STK_SECRET_KEY: randomBytes(32).toString('hex'),
        STK_SERVICE_TOKEN: randomBytes(24).toString('hex'),
        STK_HUB_DB_URL: store.url,
        STK_OWNER_EMAIL: 'owner@example.com',
        STK_OWNER_PASSWORD: 'owner-password-1',
      }),
      { logger: false },
    ));
    await app.ready();
    const login = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: 'owner@example.com', password: 'owner-password-1' } });
    const auth = { authorization: `Bearer ${login.json().token as string}` };
    expect((await app.inject({ method: 'POST', url: '/api/projects', payload: { name: 'shop' }, headers: auth })).statusCode).toBe(201);
    expect((await app.inject({ method: 'POST', url: '/api/projects/shop/envs', payload: { name: 'prod' }, headers: auth })).statusCode).toBe(201);
    const project = await ctx.db.selectFrom('projects').select('id').where('name', '=', 'shop').executeTakeFirstOrThrow();
    const env = await ctx.db.selectFrom('envs').select('id').where('project_id', '=', project.id).executeTakeFirstOrThrow();
    const now = new Date().toISOString();
    for (let i = 0; i < 120; i++) keyIds.push(newKeyId());
    await ctx.db
      .insertInto('api_keys')
      .values(
        keyIds.map((id, i) => ({
          id,
          project_id: project.id,
          env_id: env.id,
          name: `k${i}`,
          roles_json: '["reader"]',
          secret_hash: randomBytes(32).toString('hex'),
          status: 'active',
          created_at: now,
        })),
      )
      .execute();
  }, 60_000);
  afterAll(async () => {
    await app?.close();
    await store?.drop();
  });

  it('two Bridges reporting the same 120 keys in opposite orders, 5 times at once: every report lands, every count is there', async () => {
    const minute = new Date(Math.floor(Date.now() / 60_000) * 60_000).toISOString();
    const report = (bridgeId: string, ids: string[]): UsageReport =>
      ({
        bridgeId,
        keys: ids.map((keyId) => ({ keyId, lastUsedAt: minute, minutes: [{ minute, count: 1 }], sources: [{ address: '10.0.0.1', count: 1 }] })),
      }) as UsageReport;
    const failures: string[] = [];
    for (let round = 0; round < 5; round++) {
      const results = await Promise.allSettled([recordUsage(ctx, report('bridge-a', keyIds)), recordUsage(ctx, report('bridge-b', [...keyIds].reverse()))]);
      for (const r of results) if (r.status === 'rejected') failures.push(String((r.reason as Error).message).slice(0, 200));
    }
    expect(failures, failures.join('\n')).toEqual([]);
    const { rows } = await sql<{ key_id: string; count: number }>`select key_id, count from api_key_usage where minute = ${minute}`.execute(ctx.db);
    expect(rows.length).toBe(keyIds.length);
    expect(rows.every((r) => Number(r.count) === 10)).toBe(true);
  }, 120_000);

  it('a report part of 2,000 keys (each twice over two minutes, one error, two addresses) is written whole in batched statements', async () => {
    const project = await ctx.db.selectFrom('projects').select('id').where('name', '=', 'shop').executeTakeFirstOrThrow();
    const env = await ctx.db.selectFrom('envs').select('id').where('project_id', '=', project.id).executeTakeFirstOrThrow();
    const ids = Array.from({ length: 2000 }, () => newKeyId());
    const now = new Date().toISOString();
    for (let i = 0; i < ids.length; i += 500) {
      await ctx.db
        .insertInto('api_keys')
        .values(
          ids.slice(i, i + 500).map((id, j) => ({
            id,
            project_id: project.id,
            env_id: env.id,
            name: `big${i + j}`,
            roles_json: '["reader"]',
            secret_hash: randomBytes(32).toString('hex'),
            status: 'active',
            created_at: now,
          })),
        )
        .execute();
    }
    const m1 = new Date(Math.floor(Date.now() / 60_000) * 60_000 - 60_000).toISOString();
    const m2 = new Date(Math.floor(Date.now() / 60_000) * 60_000).toISOString();
    const report = {
      bridgeId: 'bridge-big',
      keys: ids.map((keyId) => ({
        keyId,
        lastUsedAt: m2,
        // out of order on purpose, and m2 twice (summed)
        minutes: [
          { minute: m2, count: 2 },
          { minute: m1, count: 3, errors: { '500': 1 } },
          { minute: m2, count: 1 },
        ],
        sources: [
          { address: '10.0.0.2', count: 4 },
          { address: '10.0.0.1', count: 2 },
        ],
      })),
    } as unknown as UsageReport;
    const t0 = Date.now();
    expect(await recordUsage(ctx, report)).toEqual({ keys: 2000 });
    console.log(`[usage] one report of 2,000 keys on PostgreSQL: ${Date.now() - t0} ms`);
    const inList = sql.join(ids.map((id) => sql`${id}`));
    const usage = await sql<{ minute: string; total: string; n: string }>`
      select minute, sum(count) as total, count(*) as n from api_key_usage where key_id in (${inList}) group by minute order by minute`.execute(ctx.db);
    expect(usage.rows.map((r) => [r.minute, Number(r.total), Number(r.n)])).toEqual([
      [m1, 3 * 2000, 2000],
      [m2, 3 * 2000, 2000],
    ]);
    const errors = await sql<{
      total: string;
    }>`select sum(count) as total from api_key_outcomes where key_id in (${inList}) and kind = 'error' and status = 500`.execute(ctx.db);
    expect(Number(errors.rows[0]!.total)).toBe(2000);
    const sources = await sql<{ address: string; total: string }>`
      select address, sum(count) as total from api_key_sources where key_id in (${inList}) group by address order by address`.execute(ctx.db);
    expect(sources.rows.map((r) => [r.address, Number(r.total)])).toEqual([
      ['10.0.0.1', 4000],
      ['10.0.0.2', 8000],
    ]);
    const last = await ctx.db.selectFrom('api_keys').select('last_used_at').where('id', 'in', ids).execute();
    expect(new Set(last.map((r) => r.last_used_at))).toEqual(new Set([m2]));
  }, 120_000);
});
