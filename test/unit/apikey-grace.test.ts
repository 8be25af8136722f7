import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import type { HubContext } from '../../src/hub/context.js';
import { recordUsage } from '../../src/hub/services/apikeys.js';
import { GraceSweeper, graceFigures, startGrace } from '../../src/hub/services/apikey-grace.js';
import type { UsageReport } from '../../src/protocol/sync.js';
import { rememberSecret } from '../helpers/secrets.js';

/**
 * `--grace auto` decisions on a SQLite store (an in-process Hub, migration 0012 there; the PostgreSQL side
 * with real Bridges and two Hubs is test/integration/apikeys-grace.test.ts). Times are written into the
 * store (a rotation 3 h ago, a report 30 min ago…) and the sweep is called directly, so nothing waits:
 * the quiet period is 1 h and the Hub's own sweep (every minute) does not run during the test.
 */
describe('API key grace periods: per-secret usage and the --grace auto sweep (SQLite store)', () => {
  let app: FastifyInstance;
  let ctx: HubContext;
  let projectId: string;
  let envId: string;
  let token: string;
  const owner = { email: 'owner@example.com', password: 'owner-password-1' };
  const now = Date.now();
  const ago = (ms: number) => new Date(now - ms).toISOString();
  const MIN = 60_000;
  const HOUR = 60 * MIN;
  const deadline = new Date(now + 7 * 24 * HOUR).toISOString();

  /** a key rotated `rotatedAgo` ms ago with `--grace auto` (the previous hash is a placeholder: nothing verifies here) */
  async function rotatedKey(id: string, rotatedAgo: number, prevUntil = deadline) {
    await ctx.db
      .insertInto('api_keys')
      .values({
        id,
        project_id: projectId,
        env_id: envId,
        name: id.toLowerCase(),
        roles_json: '["reader"]',
        secret_hash: 'a'.repeat(64),
        prev_secret_hash: 'b'.repeat(64),
        prev_expires_at: prevUntil,
        grace_auto: 1,
        status: 'active',
        created_at: ago(24 * HOUR),
        rotated_at: ago(rotatedAgo),
      })
      .execute();
    await startGrace(ctx.db, id, ago(rotatedAgo), prevUntil, true);
  }
  const bridge = (id: string, lastSeenAgo: number, disconnectedAgo: number | null, reportedAgo: number | null) =>
    ctx.db.transaction().execute(async (trx) => {
      const db = trx.withTables<{
        sync_bridges: {
          bridge_id: string;
          hub_id: string;
          acked_seq: number;
          address: string | null;
          connected_at: string;
          last_seen_at: string;
          disconnected_at: string | null;
        };
        usage_reports: { bridge_id: string; reported_at: string };
      }>();
      await db.deleteFrom('sync_bridges').where('bridge_id', '=', id).execute();
      await db
        .insertInto('sync_bridges')
        .values({
          bridge_id: id,
          hub_id: 'elsewhere',
          acked_seq: 0,
          address: null,
          connected_at: ago(2 * HOUR),
          last_seen_at: ago(lastSeenAgo),
          disconnected_at: disconnectedAgo === null ? null : ago(disconnectedAgo),
        })
        .execute();
      await db.deleteFrom('usage_reports').where('bridge_id', '=', id).execute();
      if (reportedAgo !== null)
        await db
          .insertInto('usage_reports')
          .values({ bridge_id: id, reported_at: ago(reportedAgo) })
          .execute();
    });
  const keyRow = (id: string) => ctx.db.selectFrom('api_keys').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  const graceEnds = async (id: string) =>
    (await ctx.db.selectFrom('audit_log').selectAll().where('action', '=', 'apikey.grace_end').execute()).filter(
      (e) => (JSON.parse(e.detail_json) as { keyId: string }).keyId === id,
    );

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
    const post = (url: string, payload: unknown) =>
      app.inject({ method: 'POST', url, payload: payload as object, headers: { authorization: `Bearer ${token}` } });
    expect((await post('/api/projects', { name: 'shop' })).statusCode).toBe(201);
    expect((await post('/api/projects/shop/envs', { name: 'dev' })).statusCode).toBe(201);
    // a webhook endpoint for the automatic end's event (never reachable here: only the queued delivery is checked)
    const hook = await post('/api/projects/shop/webhooks', { url: 'https://hooks.example.com/grace', events: ['apikey.grace_ended'] });
    expect(hook.statusCode, hook.body).toBe(201);
    rememberSecret('webhook-secret', hook.json().secret as string);
    projectId = (await ctx.db.selectFrom('projects').select('id').where('name', '=', 'shop').executeTakeFirstOrThrow()).id;
    envId = (await ctx.db.selectFrom('envs').select('id').where('name', '=', 'dev').executeTakeFirstOrThrow()).id;
  });
  afterAll(async () => {
    await app?.close();
  });

  it('reports: per-secret counts and addresses add up; an older Bridge or another rotation’s counts only hold the grace open; the sweep ends what is quiet, once', async () => {
    await rotatedKey('AAAAAAAAAAA1', 3 * HOUR); // previous secret last used 2 h ago → ends
    await rotatedKey('BBBBBBBBBBB1', 3 * HOUR); // used 10 min ago through a Bridge without per-secret counts → holds
    await rotatedKey('CCCCCCCCCCC1', 3 * HOUR); // counts tagged with an earlier rotation, 5 min ago → holds
    await rotatedKey('DDDDDDDDDDD1', 70 * MIN); // no traffic; quiet since 70 min, so its end needs reports from the last 10 min
    await rotatedKey('FFFFFFFFFFF1', 3 * HOUR, ago(1000)); // past its deadline → ends (deadline)
    const minute = (ms: number) => ago(ms).slice(0, 16) + ':00.000Z';
    const fresh: UsageReport = {
      bridgeId: 'b-new',
      perSecret: true,
      keys: [
        {
          keyId: 'AAAAAAAAAAA1',
          minutes: [{ minute: minute(2 * HOUR), count: 5 }],
          lastUsedAt: ago(2 * HOUR),
          sources: [],
          plainLastUsedAt: null,
          grace: {
            prevUntil: deadline,
            current: 3,
            previous: 2,
            currentLastUsedAt: ago(2 * HOUR),
            previousLastUsedAt: ago(2 * HOUR),
            previousSources: [
              { address: '10.0.0.9', count: 2 },
              { address: 'not an address', count: 5 },
            ],
          },
        },
        {
          keyId: 'CCCCCCCCCCC1',
          minutes: [{ minute: minute(5 * MIN), count: 4 }],
          lastUsedAt: ago(5 * MIN),
          sources: [],
          plainLastUsedAt: null,
          grace: {
            prevUntil: ago(HOUR),
            current: 4,
            previous: 0,
            currentLastUsedAt: ago(5 * MIN),
            previousLastUsedAt: null,
            previousSources: [],
          },
        },
      ],
    };
    const old: UsageReport = {
      bridgeId: 'b-old',
      keys: [{ keyId: 'BBBBBBBBBBB1', minutes: [{ minute: minute(10 * MIN), count: 1 }], lastUsedAt: ago(10 * MIN), sources: [] }],
    };
    await bridge('b-new', 0, null, null);
    await bridge('b-old', 0, null, null);
    // a Bridge last seen 30 min ago that has not reported since (cut off from the Hubs, or frozen)
    await bridge('b-cut', 30 * MIN, null, 30 * MIN + 1000);
    expect(await recordUsage(ctx, fresh)).toEqual({ keys: 2 });
    expect(await recordUsage(ctx, old)).toEqual({ keys: 1 });

    const a = (await graceFigures(ctx, 'AAAAAAAAAAA1'))!;
    expect(a).toMatchObject({ auto: true, current: { requests: 3 }, previous: { requests: 2, lastUsedAt: ago(2 * HOUR) }, unattributedLastAt: null });
    expect(a.previous.sources).toEqual([{ address: '10.0.0.9', requests: 2, lastSeenAt: ago(2 * HOUR) }]);
    expect(await graceFigures(ctx, 'BBBBBBBBBBB1')).toMatchObject({ previous: { requests: 0 }, unattributedLastAt: ago(10 * MIN), quietSince: ago(10 * MIN) });
    expect(await graceFigures(ctx, 'CCCCCCCCCCC1')).toMatchObject({ current: { requests: 0 }, previous: { requests: 0 }, unattributedLastAt: ago(5 * MIN) });

    // b-cut reported 30 min ago: that covers A (quiet since 2 h) but not D (it needs a report within the last 10 min)
    const sweeper = new GraceSweeper(ctx);
    expect(await sweeper.sweep()).toBe(2);
    expect((await keyRow('AAAAAAAAAAA1')).prev_secret_hash).toBeNull();
    expect((await keyRow('AAAAAAAAAAA1')).grace_auto).toBeNull();
    expect((await keyRow('FFFFFFFFFFF1')).prev_secret_hash).toBeNull();
    for (const held of ['BBBBBBBBBBB1', 'CCCCCCCCCCC1', 'DDDDDDDDDDD1']) expect((await keyRow(held)).prev_secret_hash, held).toBe('b'.repeat(64));
    const [endA] = await graceEnds('AAAAAAAAAAA1');
    expect(endA).toMatchObject({ actor_type: 'system', actor_id: null, project: 'shop', env: 'dev' });
    expect(JSON.parse(endA!.detail_json)).toMatchObject({
      keyId: 'AAAAAAAAAAA1',
      trigger: 'quiet',
      graceMode: 'auto',
      previousRequests: 2,
      previousLastUsedAt: ago(2 * HOUR),
      quietSince: ago(2 * HOUR),
    });
    expect(JSON.parse((await graceEnds('FFFFFFFFFFF1'))[0]!.detail_json)).toMatchObject({ trigger: 'deadline' });
    // each end is an apikey.grace_ended webhook event (listed fields only), queued with it
    const queued = await ctx.db
      .withTables<{ webhook_deliveries: { event_type: string; payload: string } }>()
      .selectFrom('webhook_deliveries')
      .select(['event_type', 'payload'])
      .execute();
    const gracePayloads = queued.filter((d) => d.event_type === 'apikey.grace_ended').map((d) => JSON.parse(d.payload));
    expect(gracePayloads.map((p) => [p.data.keyId, p.data.trigger]).sort()).toEqual([
      ['AAAAAAAAAAA1', 'quiet'],
      ['FFFFFFFFFFF1', 'deadline'],
    ]);
    expect(gracePayloads.find((p) => p.data.keyId === 'AAAAAAAAAAA1').data).toMatchObject({
      name: 'aaaaaaaaaaa1',
      previousRequests: 2,
      quietSince: ago(2 * HOUR),
      actor: { type: 'system', id: null, email: null },
    });
    // the end is a key change for the Bridges (the change feed), like end-grace
    const changes = await ctx.db.selectFrom('change_events').select('payload_json').where('kind', '=', 'apikey').execute();
    expect(changes.map((c) => JSON.parse(c.payload_json).keyId)).toEqual(expect.arrayContaining(['AAAAAAAAAAA1', 'FFFFFFFFFFF1']));
    expect(await graceFigures(ctx, 'AAAAAAAAAAA1')).toMatchObject({ endReason: 'quiet', endedAt: expect.any(String), endsAfter: null });
    // a late report with the ended rotation's tag still counts in show, and ends nothing twice
    expect(await recordUsage(ctx, { ...fresh, keys: [fresh.keys[0]!] })).toEqual({ keys: 1 });
    expect((await graceFigures(ctx, 'AAAAAAAAAAA1'))!.previous.requests).toBe(4);
    expect(await sweeper.sweep()).toBe(0);

    // b-cut stopped: its final report came as it closed its stream → not waited for; D ends
    await bridge('b-cut', 30 * MIN, 30 * MIN, 30 * MIN + 1000);
    expect(await sweeper.sweep()).toBe(1);
    expect((await keyRow('DDDDDDDDDDD1')).prev_secret_hash).toBeNull();
    expect(await graceEnds('DDDDDDDDDDD1')).toHaveLength(1);

    // two sweeps at once (two Hubs on the store): one end, one audit entry
    await rotatedKey('EEEEEEEEEEE1', 3 * HOUR);
    const ended = await Promise.all([new GraceSweeper(ctx).sweep(), new GraceSweeper(ctx).sweep()]);
    expect(ended.reduce((x, y) => x + y, 0)).toBe(1);
    expect(await graceEnds('EEEEEEEEEEE1')).toHaveLength(1);
    // B and C are still held
    for (const held of ['BBBBBBBBBBB1', 'CCCCCCCCCCC1']) expect(await graceEnds(held), held).toHaveLength(0);
    // revoking B ends its grace period with it (show says so); the sweep leaves it alone
    const rev = await app.inject({
      method: 'POST',
      url: '/api/projects/shop/envs/dev/apikeys/BBBBBBBBBBB1/revoke',
      payload: {},
      headers: { authorization: `Bearer ${token}` },
    });
    expect(rev.statusCode, rev.body).toBe(200);
    expect(await graceFigures(ctx, 'BBBBBBBBBBB1')).toMatchObject({ endReason: 'revoked', endedAt: expect.any(String), endsAfter: null });
    expect(await sweeper.sweep()).toBe(0);
  });
});
