import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import type { HubContext } from '../../src/hub/context.js';
import { recordUsage } from '../../src/hub/services/apikeys.js';
import { GraceSweeper, graceFigures } from '../../src/hub/services/apikey-grace.js';
import { SECRET_PREVIOUS } from '../../src/bridge/credentials/key-table.js';
import { UsageCounter } from '../../src/bridge/credentials/usage.js';
import { newKeyId } from '../../src/protocol/key-format.js';
import { rememberSecret } from '../helpers/secrets.js';

/**
 * The `--grace auto` sweep reads a bounded batch of grace periods per run. Grace periods that cannot
 * end yet (their previous secret still in use, or their key suspended) must not fill that batch: with
 * more than a batch of them, older than someone else's quiet one, that one would never be looked at
 * and its previous secret would stay valid up to the 7-day deadline. Any project admin can make such
 * rows (rotate keys with --grace auto and keep using the old secrets), so this crosses tenants.
 */
describe('API key grace sweep: periods that cannot end do not starve the ones that can (SQLite store)', () => {
  let app: FastifyInstance;
  let ctx: HubContext;
  const now = Date.now();
  const ago = (ms: number) => new Date(now - ms).toISOString();
  const MIN = 60_000;
  const HOUR = 60 * MIN;
  const deadline = new Date(now + 7 * 24 * HOUR).toISOString();
  const owner = { email: 'owner@example.com', password: 'owner-password-1' };
  let token = '';

  const post = (url: string, payload: object) => app.inject({ method: 'POST', url, payload, headers: { authorization: `Bearer ${token}` } });
  async function projectEnv(project: string) {
    expect((await post('/api/projects', { name: project })).statusCode).toBe(201);
    expect((await post(`/api/projects/${project}/envs`, { name: 'prod' })).statusCode).toBe(201);
    const p = await ctx.db.selectFrom('projects').select('id').where('name', '=', project).executeTakeFirstOrThrow();
    const e = await ctx.db.selectFrom('envs').select('id').where('project_id', '=', p.id).executeTakeFirstOrThrow();
    return { projectId: p.id, envId: e.id };
  }

  /** `n` keys rotated with --grace auto `rotatedAgo` ms ago, the previous secret last used `usedAgo` ms ago (null: never) */
  async function rotatedKeys(where: { projectId: string; envId: string }, n: number, rotatedAgo: number, usedAgo: number | null, suspended = false) {
    const ids = Array.from({ length: n }, () => newKeyId());
    for (let i = 0; i < n; i += 200) {
      const batch = ids.slice(i, i + 200);
      await ctx.db
        .insertInto('api_keys')
        .values(
          batch.map((id) => ({
            id,
            project_id: where.projectId,
            env_id: where.envId,
            name: id.toLowerCase(),
            roles_json: '["reader"]',
            secret_hash: 'a'.repeat(64),
            prev_secret_hash: 'b'.repeat(64),
            prev_expires_at: deadline,
            grace_auto: 1,
            status: 'active',
            created_at: ago(24 * HOUR),
            rotated_at: ago(rotatedAgo),
            ...(suspended ? { suspended_at: ago(rotatedAgo) } : {}),
          })),
        )
        .execute();
      await ctx.db
        .withTables<{
          api_key_graces: {
            key_id: string;
            rotated_at: string;
            prev_until: string;
            auto: number;
            current_requests: number;
            previous_requests: number;
            previous_last_used_at: string | null;
          };
        }>()
        .insertInto('api_key_graces')
        .values(
          batch.map((id) => ({
            key_id: id,
            rotated_at: ago(rotatedAgo),
            prev_until: deadline,
            auto: 1,
            current_requests: 0,
            previous_requests: usedAgo === null ? 0 : 1,
            previous_last_used_at: usedAgo === null ? null : ago(usedAgo),
          })),
        )
        .execute();
    }
    return ids;
  }

  beforeAll(async () => {
    const cfg = loadHubConfig({
      STK_SECRET_KEY: randomBytes(32).toString('hex'),
      STK_SERVICE_TOKEN: randomBytes(24).toString('hex'),
      STK_HUB_DB_URL: 'sqlite::memory:',
      STK_OWNER_EMAIL: owner.email,
      STK_OWNER_PASSWORD: owner.password,
      STK_APIKEY_GRACE_QUIET: '1h',
    });
    ({ app, ctx } = await buildHub(cfg, { logger: false }));
    await app.ready();
    const login = await app.inject({ method: 'POST', url: '/api/auth/login', payload: owner });
    token = rememberSecret('session-token', login.json().token as string);
  });
  afterAll(async () => {
    await app?.close();
  });

  it('1,200 older grace periods still in use (and suspended ones) do not keep a quiet one in another project from ending', async () => {
    const noisy = await projectEnv('noisy');
    // older than the victim's rotation, previous secrets used a minute ago: none can end
    await rotatedKeys(noisy, 1100, 5 * HOUR, MIN);
    // suspended keys are never ended for quiet (their requests are refused)
    await rotatedKeys(noisy, 100, 5 * HOUR, null, true);
    const victim = await projectEnv('victim');
    // rotated 3 h ago, the previous secret last used 2 h ago: quiet for longer than the 1 h quiet period
    const [quiet] = await rotatedKeys(victim, 1, 3 * HOUR, 2 * HOUR);

    const sweeper = new GraceSweeper(ctx);
    expect(await sweeper.sweep()).toBe(1);
    const row = await ctx.db.selectFrom('api_keys').select(['prev_secret_hash', 'grace_auto']).where('id', '=', quiet!).executeTakeFirstOrThrow();
    expect(row).toEqual({ prev_secret_hash: null, grace_auto: null });
    // the noisy project's grace periods are all still open
    const open = await ctx.db
      .selectFrom('api_keys')
      .select(ctx.db.fn.countAll<number>().as('n'))
      .where('prev_secret_hash', 'is not', null)
      .executeTakeFirstOrThrow();
    expect(Number(open.n)).toBe(1200);
    expect(await sweeper.sweep()).toBe(0);
  });
  it("a Bridge whose clock is off: the previous secret's requests still hold the grace period open", async () => {
    const clock = await projectEnv('clock');
    // rotated 3 h ago, never used since as far as the Hub knows
    const [ahead, behind, garbled] = await rotatedKeys(clock, 3, 3 * HOUR, null);
    const sweeper = new GraceSweeper(ctx);
    const used = (keyId: string, bridgeTime: number) => ({
      keyId,
      minutes: [{ minute: new Date(bridgeTime).toISOString().slice(0, 16) + ':00.000Z', count: 2 }],
      lastUsedAt: new Date(bridgeTime).toISOString(),
      plainLastUsedAt: null,
      sources: [],
      grace: {
        prevUntil: deadline,
        current: 0,
        previous: 2,
        currentLastUsedAt: null,
        previousLastUsedAt: new Date(bridgeTime).toISOString(),
        previousSources: [],
      },
    });
    const t = Date.now();
    // a Bridge 5 min ahead: its times are "in the future" for the Hub; one 2 h behind: its "just now" reads as 2 h ago
    await recordUsage(ctx, { bridgeId: 'b-ahead', perSecret: true, sentAt: new Date(t + 5 * MIN).toISOString(), keys: [used(ahead!, t + 5 * MIN)] });
    await recordUsage(ctx, { bridgeId: 'b-behind', perSecret: true, sentAt: new Date(t - 2 * HOUR).toISOString(), keys: [used(behind!, t - 2 * HOUR)] });
    // an older Bridge (no sentAt) 5 min ahead, and a time that is no time: the requests were made by now
    await recordUsage(ctx, { bridgeId: 'b-old', perSecret: true, keys: [{ ...used(garbled!, t + 5 * MIN) }] });
    for (const id of [ahead!, behind!, garbled!]) {
      const g = await graceFigures(ctx, id);
      expect(g!.previous.requests, id).toBe(2);
      // the Hub's time of that use: within the last minute (the clock difference taken out)
      expect(Date.parse(g!.previous.lastUsedAt!), id).toBeGreaterThan(t - MIN);
      expect(Date.parse(g!.previous.lastUsedAt!), id).toBeLessThanOrEqual(Date.now() + 1000);
    }
    expect(await sweeper.sweep()).toBe(0);
    for (const id of [ahead!, behind!, garbled!]) {
      const row = await ctx.db.selectFrom('api_keys').select('prev_secret_hash').where('id', '=', id).executeTakeFirstOrThrow();
      expect(row.prev_secret_hash, id).not.toBeNull();
    }
  });
  it('a Bridge that could not count a request (its counter full): the grace periods are held open, not ended as unused', async () => {
    const full = await projectEnv('full');
    const [key] = await rotatedKeys(full, 1, 3 * HOUR, null);
    const usage = new UsageCounter();
    const t = Date.now();
    // 200,000 keys used in one interval fill the Bridge's counter; the key's previous-secret request finds no room
    for (let i = 0; i < 200_000; i++) usage.count('K' + String(i).padStart(11, '0'), undefined, t);
    usage.count(key!, '198.51.100.7', t, SECRET_PREVIOUS, Date.parse(deadline));
    const report = usage.drain('b-full')!;
    expect(report.keys.some((k) => k.keyId === key)).toBe(false);
    await recordUsage(ctx, { ...report, keys: report.keys.slice(0, 10) });
    expect((await graceFigures(ctx, key!))!.unattributedLastAt).not.toBeNull();
    expect(await new GraceSweeper(ctx).sweep()).toBe(0);
    const row = await ctx.db.selectFrom('api_keys').select('prev_secret_hash').where('id', '=', key!).executeTakeFirstOrThrow();
    expect(row.prev_secret_hash).not.toBeNull();
    // the next report (nothing lost since) says nothing more
    expect(usage.drain('b-full')).toBeNull();
  });
});
