import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import type { HubContext } from '../../src/hub/context.js';
import { recordUsage } from '../../src/hub/services/apikeys.js';
import { graceFigures, startGrace } from '../../src/hub/services/apikey-grace.js';
import { newKeyId } from '../../src/protocol/key-format.js';
import { KeyTable, SECRET_PREVIOUS } from '../../src/bridge/credentials/key-table.js';
import { UsageCounter } from '../../src/bridge/credentials/usage.js';
import { HubSync } from '../../src/bridge/sync/hub-sync.js';
import { rememberSecret } from '../helpers/secrets.js';

/**
 * A Bridge's usage report is one POST per interval (60 s by default). With ~46,000 keys used in an
 * interval it passed the Hub's 10 MB body limit (and 100,000 keys its schema): the Hub answered 413/400
 * and the Bridge dropped every count of the interval — "Last used", the per-minute figures and the
 * per-secret counts of rotation grace periods, so `--grace auto` could end a grace period whose previous
 * secret was in use (its one report of that use was lost, the next report said "covered up to now").
 * Here a real in-process Hub (SQLite) and the Bridge's real sync: 50,000 keys and one previous-secret
 * request of a key rotated with --grace auto.
 */
describe('usage reports of many keys reach the Hub whole (in chunks)', () => {
  let app: FastifyInstance;
  let ctx: HubContext;
  let url: string;
  let token = '';
  const serviceToken = randomBytes(24).toString('hex');
  const owner = { email: 'owner@example.com', password: 'owner-password-1' };
  const log = { warn() {}, info() {}, error() {}, debug() {}, trace() {}, fatal() {}, child: () => log, level: 'silent' } as never;

  beforeAll(async () => {
    const cfg = loadHubConfig({
      STK_SECRET_KEY: randomBytes(32).toString('hex'),
      STK_SERVICE_TOKEN: serviceToken,
      STK_HUB_DB_URL: 'sqlite::memory:',
      STK_OWNER_EMAIL: owner.email,
      STK_OWNER_PASSWORD: owner.password,
      STK_APIKEY_GRACE_QUIET: '1h',
    });
    ({ app, ctx } = await buildHub(cfg, { logger: false }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    const login = await app.inject({ method: 'POST', url: '/api/auth/login', payload: owner });
    token = rememberSecret('session-token', login.json().token as string);
  });
  afterAll(async () => {
    await app?.close();
  });
  const post = (path: string, payload: object) => app.inject({ method: 'POST', url: path, payload, headers: { authorization: `Bearer ${token}` } });

  it('50,000 keys in one interval: every count arrives, the grace period sees its previous-secret request', async () => {
    expect((await post('/api/projects', { name: 'shop' })).statusCode).toBe(201);
    expect((await post('/api/projects/shop/envs', { name: 'prod' })).statusCode).toBe(201);
    // a key rotated with --grace auto an hour ago (as rotateKey leaves it; the hashes are placeholders)
    const project = await ctx.db.selectFrom('projects').select('id').where('name', '=', 'shop').executeTakeFirstOrThrow();
    const env = await ctx.db.selectFrom('envs').select('id').where('project_id', '=', project.id).executeTakeFirstOrThrow();
    const keyId = newKeyId();
    const rotatedAt = new Date(Date.now() - 3600_000).toISOString();
    const deadline = new Date(Date.now() + 6 * 24 * 3600_000).toISOString();
    await ctx.db
      .insertInto('api_keys')
      .values({
        id: keyId,
        project_id: project.id,
        env_id: env.id,
        name: 'app',
        roles_json: '["reader"]',
        secret_hash: 'a'.repeat(64),
        prev_secret_hash: 'b'.repeat(64),
        prev_expires_at: deadline,
        grace_auto: 1,
        status: 'active',
        created_at: rotatedAt,
        rotated_at: rotatedAt,
      })
      .execute();
    await startGrace(ctx.db, keyId, rotatedAt, deadline, true);

    const table = new KeyTable();
    const usage = new UsageCounter();
    const sync = new HubSync(
      {
        hubUrls: [url],
        serviceToken,
        bridgeId: 'bridge-many',
        maxStaleMs: 3600_000,
        usageIntervalMs: 60_000,
        idleTimeoutMs: 30_000,
        minBackoffMs: 200,
        maxBackoffMs: 1000,
      },
      { table, usage, log, releases: { set() {}, delete() {} } },
    );
    try {
      expect(await sync.start()).toBe(true);
      const entry = table.get(keyId);
      expect(entry?.prevUntil).toBeGreaterThan(Date.now());
      const now = Date.now();
      for (let i = 0; i < 50_000; i++) usage.count('K' + String(i).padStart(11, '0'), `10.0.${i % 250}.${i % 200}`, now);
      usage.count(keyId, '198.51.100.7', now, SECRET_PREVIOUS, entry!.prevUntil);
      expect(await sync.flushUsage()).toBe(true);
      const g = await graceFigures(ctx, keyId);
      expect(g).toMatchObject({ auto: true, previous: { requests: 1 } });
      expect(g!.previous.sources).toEqual([expect.objectContaining({ address: '198.51.100.7', requests: 1 })]);
      const last = await ctx.db.selectFrom('api_keys').select('last_used_at').where('id', '=', keyId).executeTakeFirstOrThrow();
      expect(last.last_used_at).not.toBeNull();
      expect(usage.pending).toBe(0);
    } finally {
      await sync.stop();
    }
  }, 60_000);

  it('a part of a report that says more follow does not yet mark the Bridge as reported (the --grace auto sweep waits for the whole)', async () => {
    const reportedAt = () =>
      ctx.db
        .withTables<{ usage_reports: { bridge_id: string; reported_at: string } }>()
        .selectFrom('usage_reports')
        .select('reported_at')
        .where('bridge_id', '=', 'bridge-parts')
        .executeTakeFirst();
    await recordUsage(ctx, { bridgeId: 'bridge-parts', perSecret: true, more: true, keys: [] });
    expect(await reportedAt()).toBeUndefined();
    await recordUsage(ctx, { bridgeId: 'bridge-parts', perSecret: true, keys: [] });
    expect(await reportedAt()).toBeDefined();
  });
});
