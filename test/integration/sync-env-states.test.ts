import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import type { HubContext } from '../../src/hub/context.js';
import { allEnvStates, loadEnvState } from '../../src/hub/services/sync/feed.js';

/**
 * The snapshot's env states are read for all envs at once (two queries, not two per env: 10,000 envs
 * were 20,000 queries per Bridge snapshot). Each env must still get exactly its own current release
 * and its own connections, as the per-env read gives them.
 */
describe('sync snapshot env states (batched)', () => {
  let app: FastifyInstance;
  let ctx: HubContext;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'stk-envstates-'));
    const cfg = loadHubConfig({
      STK_SECRET_KEY: randomBytes(32).toString('hex'),
      STK_SERVICE_TOKEN: randomBytes(24).toString('hex'),
      STK_HUB_DB_URL: `sqlite://${join(dir, 'hub.db')}`,
    });
    ({ app, ctx } = await buildHub(cfg, { logger: false }));
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every env gets its own release and connections, the same as the per-env read; another org is left out', async () => {
    const now = new Date().toISOString();
    const org = (await ctx.db.selectFrom('orgs').select('id').where('name', '=', 'default').executeTakeFirstOrThrow()).id;
    await ctx.db.insertInto('orgs').values({ id: 'org-other', name: 'other', created_at: now }).execute();
    const projects = [
      { id: 'p-a', org_id: org, name: 'alpha', created_at: now },
      { id: 'p-b', org_id: org, name: 'beta', created_at: now },
      { id: 'p-x', org_id: 'org-other', name: 'xeno', created_at: now },
    ];
    await ctx.db.insertInto('projects').values(projects).execute();
    const envs = [
      { id: 'e-a1', project_id: 'p-a', name: 'dev', created_at: now },
      { id: 'e-a2', project_id: 'p-a', name: 'prod', created_at: now },
      { id: 'e-b1', project_id: 'p-b', name: 'dev', created_at: now },
      { id: 'e-b2', project_id: 'p-b', name: 'empty', created_at: now },
      { id: 'e-x1', project_id: 'p-x', name: 'dev', created_at: now },
    ];
    await ctx.db.insertInto('envs').values(envs).execute();
    const release = (id: string, project: string, table: string) => ({
      id,
      project_id: project,
      content_hash: id,
      ref: `ref-${id}`,
      schema_json: JSON.stringify({ tables: { [table]: {} } }),
      permissions_json: JSON.stringify({ tables: {} }),
      connections_json: JSON.stringify(['main']),
      created_by: null,
      created_at: now,
    });
    await ctx.db
      .insertInto('releases')
      .values([release('r-a1', 'p-a', 'one'), release('r-a2', 'p-a', 'two'), release('r-b1', 'p-b', 'three'), release('r-x1', 'p-x', 'xeno')])
      .execute();
    await ctx.db
      .insertInto('current_releases')
      .values([
        { env_id: 'e-a1', release_id: 'r-a1', updated_at: now },
        { env_id: 'e-a2', release_id: 'r-a2', updated_at: now },
        { env_id: 'e-b1', release_id: 'r-b1', updated_at: now },
        { env_id: 'e-x1', release_id: 'r-x1', updated_at: now },
      ])
      .execute();
    const conn = (id: string, project: string, env: string, name: string, url: string) => ({
      id,
      project_id: project,
      env_id: env,
      name,
      engine: 'postgres' as const,
      db_url_enc: ctx.crypto.encrypt(url),
      display_url: 'postgres://…',
      created_at: now,
      updated_at: now,
    });
    await ctx.db
      .insertInto('connections')
      .values([
        conn('c1', 'p-a', 'e-a1', 'main', 'postgres://u@db-a1/x'),
        conn('c2', 'p-a', 'e-a1', 'replica', 'postgres://u@db-a1r/x'),
        conn('c3', 'p-a', 'e-a2', 'main', 'postgres://u@db-a2/x'),
        conn('c4', 'p-b', 'e-b1', 'main', 'postgres://u@db-b1/x'),
        conn('c5', 'p-x', 'e-x1', 'main', 'postgres://u@db-x1/x'),
      ])
      .execute();

    const batched = await allEnvStates(ctx);
    expect(batched.map((s) => `${s.project}/${s.env}`)).toEqual(['alpha/dev', 'alpha/prod', 'beta/dev', 'beta/empty']);
    for (const s of batched) expect(s).toEqual(await loadEnvState(ctx, s.project, s.env));
    const byName = new Map(batched.map((s) => [`${s.project}/${s.env}`, s]));
    expect(byName.get('alpha/dev')!.release!.releaseId).toBe('r-a1');
    expect(byName.get('alpha/dev')!.connections).toEqual({ main: 'postgres://u@db-a1/x', replica: 'postgres://u@db-a1r/x' });
    expect(byName.get('alpha/prod')!.release!.releaseId).toBe('r-a2');
    expect(byName.get('alpha/prod')!.connections).toEqual({ main: 'postgres://u@db-a2/x' });
    expect(byName.get('beta/dev')!.release!.schema).toEqual({ tables: { three: {} } });
    expect(byName.get('beta/empty')).toEqual({ project: 'beta', env: 'empty', release: null, connections: {} });
  });
});
