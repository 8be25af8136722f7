import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import type { HubContext } from '../../src/hub/context.js';
import { minuteOf, recordUsage } from '../../src/hub/services/apikeys.js';
import { newKeyId } from '../../src/protocol/key-format.js';
import type { UsageReport } from '../../src/protocol/sync.js';
import { rememberSecret } from '../helpers/secrets.js';

/**
 * A usage report's times are the Bridge's clock. Before, a Bridge whose clock ran ahead of the Hub's had
 * every count dropped as a "future" minute (and `last_used_at` with it), and one running behind filed its
 * counts and last use in the past. The report says when it was sent (`sentAt`): the Hub moves the
 * report's minutes by the clocks' difference in whole minutes, and the last use exactly.
 * A real in-process Hub (SQLite store), reports merged by the service the /internal route calls.
 */
describe("usage reports are read in the Hub's clock", () => {
  let app: FastifyInstance;
  let ctx: HubContext;
  let keyId = '';
  const owner = { email: 'owner@example.com', password: 'owner-password-1' };

  beforeAll(async () => {
    const cfg = loadHubConfig({
      STK_SECRET_KEY: randomBytes(32).toString('hex'),
      STK_SERVICE_TOKEN: randomBytes(24).toString('hex'),
      STK_HUB_DB_URL: 'sqlite::memory:',
      STK_OWNER_EMAIL: owner.email,
      STK_OWNER_PASSWORD: owner.password,
      STK_WEBHOOK_ALLOW_HOSTS: '127.0.0.1:9',
    });
    ({ app, ctx } = await buildHub(cfg, { logger: false }));
    const login = await app.inject({ method: 'POST', url: '/api/auth/login', payload: owner });
    const token = rememberSecret('session-token', login.json().token as string);
    const post = (url: string, payload: object) => app.inject({ method: 'POST', url, payload, headers: { authorization: `Bearer ${token}` } });
    expect((await post('/api/projects', { name: 'shop' })).statusCode).toBe(201);
    expect((await post('/api/projects/shop/envs', { name: 'prod' })).statusCode).toBe(201);
    // a receiver of apikey.rate_limited, so the Hub records its once-per-hour notices
    expect((await post('/api/projects/shop/webhooks', { url: 'http://127.0.0.1:9/h', events: ['apikey.rate_limited'] })).statusCode).toBe(201);
    // a key row as the Hub stores one (creating it through the API needs a release; the hash is a placeholder)
    const project = await ctx.db.selectFrom('projects').select('id').where('name', '=', 'shop').executeTakeFirstOrThrow();
    const env = await ctx.db.selectFrom('envs').select('id').where('project_id', '=', project.id).executeTakeFirstOrThrow();
    keyId = newKeyId();
    await ctx.db
      .insertInto('api_keys')
      .values({
        id: keyId,
        project_id: project.id,
        env_id: env.id,
        name: 'app',
        roles_json: '["reader"]',
        secret_hash: 'a'.repeat(64),
        status: 'active',
        created_at: new Date().toISOString(),
      })
      .execute();
  });
  afterAll(async () => {
    await app?.close();
  });

  const report = (bridgeId: string, bridgeNow: number, count: number, sent: boolean): UsageReport => ({
    bridgeId,
    perSecret: true,
    ...(sent ? { sentAt: new Date(bridgeNow).toISOString() } : {}),
    keys: [{ keyId, minutes: [{ minute: minuteOf(new Date(bridgeNow)), count }], lastUsedAt: new Date(bridgeNow - 1000).toISOString(), sources: [] }],
  });
  const usageDb = () => ctx.db.withTables<{ api_key_usage: { key_id: string; minute: string; count: number } }>();
  const rows = () => usageDb().selectFrom('api_key_usage').select(['minute', 'count']).where('key_id', '=', keyId).orderBy('minute').execute();
  const lastUsed = async () => (await ctx.db.selectFrom('api_keys').select('last_used_at').where('id', '=', keyId).executeTakeFirstOrThrow()).last_used_at;
  const reset = async () => {
    await usageDb().deleteFrom('api_key_usage').where('key_id', '=', keyId).execute();
    await ctx.db.updateTable('api_keys').set({ last_used_at: null }).where('id', '=', keyId).execute();
  };
  /** the minute of `ms` or the one after (the test may cross a minute boundary) */
  const thisMinute = (ms: number) => [minuteOf(new Date(ms)), minuteOf(new Date(ms + 60_000))];

  it('a Bridge 3 hours ahead: its counts and last use land now instead of being dropped', async () => {
    await reset();
    const t0 = Date.now();
    await recordUsage(ctx, report('ahead', t0 + 3 * 3600_000, 7, true));
    const r = await rows();
    expect(r.map((x) => x.count)).toEqual([7]);
    expect(thisMinute(t0)).toContain(r[0]!.minute);
    expect(thisMinute(t0 - 60_000)).toContain(await lastUsed());
  });

  it('a Bridge 2 hours behind: its counts and last use are filed now, not 2 hours ago', async () => {
    await reset();
    const t0 = Date.now();
    await recordUsage(ctx, report('behind', t0 - 2 * 3600_000, 4, true));
    const r = await rows();
    expect(r.map((x) => x.count)).toEqual([4]);
    expect(thisMinute(t0)).toContain(r[0]!.minute);
    expect(thisMinute(t0 - 60_000)).toContain(await lastUsed());
  });

  it('network delay (a report sent 5 s before it is read) moves no minute', async () => {
    await reset();
    const t0 = Date.now();
    const r0 = report('slow-net', t0, 2, true);
    r0.sentAt = new Date(t0 - 5000).toISOString();
    await recordUsage(ctx, r0);
    expect((await rows()).map((x) => [x.minute, x.count])).toEqual([[minuteOf(new Date(t0)), 2]]);
  });

  it('a report without sentAt (an older Bridge) is read as before: a future minute is still refused', async () => {
    await reset();
    const t0 = Date.now();
    await recordUsage(ctx, report('old', t0 + 3 * 3600_000, 5, false));
    expect(await rows()).toEqual([]);
    await recordUsage(ctx, report('old', t0, 5, false));
    expect((await rows()).map((x) => x.count)).toEqual([5]);
  });

  it("the apikey.rate_limited notice is for the hour in the Hub's clock: Bridges with different clocks notify it once, never a future hour", async () => {
    await reset();
    const t0 = Date.now();
    const rep = (bridgeId: string, bridgeNow: number): UsageReport => ({
      bridgeId,
      perSecret: true,
      sentAt: new Date(bridgeNow).toISOString(),
      keys: [{ keyId, minutes: [{ minute: minuteOf(new Date(bridgeNow)), count: 0, rejected: { '429': 3 } }], lastUsedAt: null, sources: [] }],
    });
    await recordUsage(ctx, rep('in-sync', t0));
    await recordUsage(ctx, rep('ahead', t0 + 3 * 3600_000));
    const notices = await ctx.db
      .withTables<{ webhook_notices: { key_id: string; notice: string } }>()
      .selectFrom('webhook_notices')
      .select('notice')
      .where('key_id', '=', keyId)
      .execute();
    expect(notices.map((n) => n.notice)).toEqual([`rate_limited:${minuteOf(new Date(t0)).slice(0, 13)}:00:00.000Z`]);
  });

  it('a sentAt no clock could show (a week or more off, or past what a date holds) is ignored, not a 500', async () => {
    await reset();
    const t0 = Date.now();
    const a = report('weird', t0, 1, true);
    a.sentAt = '-271821-04-20T00:00:00.000Z';
    await recordUsage(ctx, a);
    const b = report('weird2', t0, 2, true);
    b.sentAt = '+275760-09-13T00:00:00.000Z';
    await recordUsage(ctx, b);
    // a Bridge a day ahead whose last use is the earliest date there is: moved back a day, no date at all
    const c = report('edge', t0 + 24 * 3600_000, 4, true);
    c.keys[0]!.lastUsedAt = '-271821-04-20T00:00:00.000Z';
    await recordUsage(ctx, c);
    expect((await rows()).map((x) => x.count)).toEqual([7]);
  });
});
