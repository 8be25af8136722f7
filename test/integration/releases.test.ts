import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqlite } from '../helpers/sqlite.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, startHub, TEST_OWNER } from '../helpers/procs.js';
import { loginToken, runStk, tempConfigDir, type RunResult } from '../helpers/cli.js';
import { createTestDatabase, query } from '../helpers/pg.js';
import { HubApi } from '../helpers/hub-api.js';

type Hub = Awaited<ReturnType<typeof startHub>>;
type TestDb = Awaited<ReturnType<typeof createTestDatabase>>;

/** Releases: list/current/show, promote dev→prod (schema first), rollback (pointer only, compatibility-checked), internal endpoint. */
describe('releases', () => {
  let hub: Hub;
  let cfg: string;
  let owner: string;
  let viewer: string;
  let dev: TestDb;
  let prod: TestDb;
  let dir: string;
  let v1: string;
  let v2: string;

  const stk = (args: string[], token = owner): Promise<RunResult> =>
    runStk(args, { env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: token } });
  const stkJson = async <T = any>(args: string[], token = owner): Promise<T> => {
    const r = await stk([...args, '--json'], token);
    expect(r.code, r.output).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  const api = (method: string, path: string, body?: unknown, token: string | null = owner) => new HubApi(hub.url).request(method, path, body, token);
  const currentOf = async (env: string) => (await api('GET', `/api/projects/shop/envs/${env}/releases/current`)).json.releaseId as string | undefined;
  const usersFile = () => join(dir, 'schema/users.yaml');
  const store = () => openSqlite(hub.dbUrl.replace(/^sqlite:\/\//, ''), { readonly: true, fileMustExist: true });

  beforeAll(async () => {
    [hub, dev, prod] = await Promise.all([startHub(), createTestDatabase('rel_dev'), createTestDatabase('rel_prod')]);
    owner = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
    cfg = tempConfigDir();
    dir = mkdtempSync(join(tmpdir(), 'stk-rel-'));
    cpSync(join(ROOT, 'examples/basic'), dir, { recursive: true });
    expect((await api('POST', '/api/projects', { name: 'shop' })).status).toBe(201);
    for (const [env, db] of [
      ['dev', dev],
      ['prod', prod],
    ] as const) {
      expect((await api('POST', '/api/projects/shop/envs', { name: env })).status).toBe(201);
      expect((await api('PUT', `/api/projects/shop/envs/${env}/connections/main`, { engine: 'postgres', dbUrl: db.url })).status).toBe(200);
    }
    const inv = await api('POST', '/api/projects/shop/invites', { email: 'viewer@example.com', role: 'viewer' });
    expect(inv.status).toBe(201);
    expect(
      (await api('POST', '/api/invites/accept', { email: 'viewer@example.com', code: inv.json.inviteCode, password: 'viewer-password-1' }, '')).status,
    ).toBe(200);
    viewer = await loginToken(hub.url, 'viewer@example.com', 'viewer-password-1');

    v1 = (await stkJson(['apply', '--project', 'shop', '--env', 'dev', '--dir', dir, '--ref', 'v1'])).releaseId;
    writeFileSync(
      usersFile(),
      readFileSync(usersFile(), 'utf8').replace('      created_at:', '      bio: { type: string, nullable: true }\n      created_at:'),
    );
    v2 = (await stkJson(['apply', '--project', 'shop', '--env', 'dev', '--dir', dir, '--ref', 'v2'])).releaseId;
    expect(v2).not.toBe(v1);
  });
  afterAll(async () => {
    await hub?.stop();
    await dev?.drop();
    await prod?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('release list / current / show', async () => {
    const list = await stkJson(['release', 'list', '--project', 'shop']);
    expect(list.map((r: any) => [r.releaseId, r.ref, r.envs])).toEqual([
      [v2, 'v2', ['dev']],
      [v1, 'v1', []],
    ]);
    expect(list[0].tables).toEqual(['posts', 'users']);

    const piped = await stk(['release', 'list', '--project', 'shop', '--limit', '1']);
    expect(piped.code, piped.output).toBe(0);
    expect(piped.stdout.trim().split('\n')).toHaveLength(1);
    expect(piped.stdout).toMatch(new RegExp(`^${v2}\tv2\t2\tdev\t`));

    const cur = await stkJson(['release', 'current', '--project', 'shop', '--env', 'dev']);
    expect(cur).toMatchObject({ releaseId: v2, ref: 'v2', env: 'dev', envs: ['dev'], connections: ['main'] });
    const none = await stk(['release', 'current', '--project', 'shop', '--env', 'prod']);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('(404 NOT_FOUND)');

    const show = await stkJson(['release', 'show', '--project', 'shop', '--release-id', v1]);
    expect(show).toMatchObject({ releaseId: v1, project: 'shop', ref: 'v1', envs: [], connections: ['main'] });
    expect(show.schema.tables.users.columns.map((c: any) => c.name)).toEqual(['email', 'name', 'created_at']);
    expect(show.permissions.tables.posts.select[2].condition.terms).toEqual([{ column: 'author_id', equals: { kind: 'authSub' } }]);
    const human = await stk(['release', 'show', '--project', 'shop', '--release-id', v2]);
    expect(human.stdout).toContain('author_id: string (not null, → users.id as author)');
    expect(human.stdout).toContain('select #3: roles authenticated if resource.author_id == request.auth.sub');

    const missing = await stk(['release', 'show', '--project', 'shop', '--release-id', '01ARZ3NDEKTSV4RRFFQ69G5FAV']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('(404 NOT_FOUND)');
  });

  it('the viewer reads releases but cannot promote, roll back or apply', async () => {
    expect((await stk(['release', 'list', '--project', 'shop'], viewer)).code).toBe(0);
    for (const args of [
      ['release', 'promote', '--project', 'shop', '--from', 'dev', '--to', 'prod'],
      ['release', 'rollback', '--project', 'shop', '--env', 'dev', '--to-release-id', v1],
    ]) {
      const r = await stk(args, viewer);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('(403 FORBIDDEN)');
    }
    expect(await currentOf('prod')).toBeUndefined();
    expect(await currentOf('dev')).toBe(v2);
  });

  it('promote dev→prod applies the schema to prod first, then moves the pointer', async () => {
    const dry = await stkJson(['release', 'promote', '--project', 'shop', '--from', 'dev', '--to', 'prod', '--dry-run']);
    expect(dry.moved).toBe(false);
    expect(dry.plan.map((s: any) => s.description)).toContain('create table users (5 columns)');
    expect(await query(prod.url, `SELECT 1 FROM pg_tables WHERE schemaname = 'public'`)).toEqual([]);

    const r = await stk(['release', 'promote', '--project', 'shop', '--from', 'dev', '--to', 'prod']);
    expect(r.code, r.output).toBe(0);
    expect(r.stderr).toContain(`shop/prod now runs release ${v2}`);
    expect(await currentOf('prod')).toBe(v2);
    const cols = await query(prod.url, `SELECT column_name FROM information_schema.columns WHERE table_name = 'users' ORDER BY ordinal_position`);
    expect(cols.map((c) => c.column_name)).toEqual(['id', 'email', 'name', 'bio', 'created_at']);
    const list = await stkJson(['release', 'list', '--project', 'shop']);
    expect(list[0]).toMatchObject({ releaseId: v2, envs: ['dev', 'prod'] });

    const again = await stkJson(['release', 'promote', '--project', 'shop', '--from', 'dev', '--to', 'prod']);
    expect(again).toMatchObject({ releaseId: v2, moved: false, plan: [] });
  });

  it('promote refuses when the target has drift that needs destructive steps', async () => {
    await query(prod.url, 'ALTER TABLE posts ADD COLUMN junk int');
    const r = await stk(['release', 'promote', '--project', 'shop', '--to', 'prod', '--release-id', v1]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('(409 CONFLICT)');
    expect(r.stderr).toContain('drop column posts.junk');
    expect(await currentOf('prod')).toBe(v2);
    expect((await query(prod.url, `SELECT 1 FROM information_schema.columns WHERE table_name = 'posts' AND column_name = 'junk'`)).length).toBe(1);
    await query(prod.url, 'ALTER TABLE posts DROP COLUMN junk');
  });

  it('rollback moves the pointer only, and is refused when the release no longer fits the live database', async () => {
    // v1 lacks users.bio: the live table has an extra column, which v1 can live with
    const back = await stkJson(['release', 'rollback', '--project', 'shop', '--env', 'dev', '--to-release-id', v1]);
    expect(back).toEqual({ releaseId: v1, env: 'dev', previousReleaseId: v2, moved: true });
    expect(await currentOf('dev')).toBe(v1);
    expect((await query(dev.url, `SELECT 1 FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'bio'`)).length).toBe(1);

    // v3 drops users.name (forced); v1 needs it, so going back is refused
    writeFileSync(usersFile(), readFileSync(usersFile(), 'utf8').replace(/ {6}name: .*\n/, ''));
    const perms = join(dir, 'config/permissions.yaml');
    writeFileSync(perms, readFileSync(perms, 'utf8').replace('columns: [id, email, name, created_at]', 'columns: [id, email, created_at]'));
    const v3 = (await stkJson(['apply', '--project', 'shop', '--env', 'dev', '--dir', dir, '--ref', 'v3', '--force'])).releaseId;
    const refused = await stk(['release', 'rollback', '--project', 'shop', '--env', 'dev', '--to-release-id', v1]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('main: column users.name is missing');
    expect(refused.stderr).toContain('(409 CONFLICT)');
    expect(await currentOf('dev')).toBe(v3);

    const unknown = await stk(['release', 'rollback', '--project', 'shop', '--env', 'dev', '--to-release-id', 'NOPE']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('(404 NOT_FOUND)');
  });

  it('every pointer move is a release change event (what Bridges follow), and promote/rollback are audited', async () => {
    const s = store();
    try {
      const events = s.prepare(`SELECT env, payload_json FROM change_events WHERE project = 'shop' AND kind = 'release' ORDER BY seq`).all() as Array<{
        env: string;
        payload_json: string;
      }>;
      expect(events.map((e) => [e.env, JSON.parse(e.payload_json).releaseId])).toEqual([
        ['dev', v1],
        ['dev', v2],
        ['prod', v2],
        ['dev', v1],
        ['dev', expect.any(String)], // v3
      ]);
      const audits = s.prepare(`SELECT action, env, detail_json FROM audit_log WHERE action LIKE 'release.%' ORDER BY ts`).all() as Array<{
        action: string;
        env: string;
        detail_json: string;
      }>;
      expect(audits.map((a) => a.action)).toEqual([
        'release.create',
        'release.create',
        'release.promote',
        'release.promote',
        'release.rollback',
        'release.create',
      ]);
      expect(JSON.parse(audits[2]!.detail_json)).toMatchObject({ releaseId: v2, from: 'dev', to: 'prod', previousReleaseId: null, moved: true });
      expect(JSON.parse(audits[3]!.detail_json)).toMatchObject({ releaseId: v2, moved: false }); // the repeated promote
      expect(JSON.parse(audits[4]!.detail_json)).toMatchObject({ releaseId: v1, previousReleaseId: v2, moved: true });
    } finally {
      s.close();
    }
  });

  it('GET /internal/releases/:project/:env/current serves the ReleaseIR to Bridges with the service token and an ETag', async () => {
    const url = `${hub.url}/internal/releases/shop/prod/current`;
    expect((await fetch(url)).status).toBe(401);
    const r = await fetch(url, { headers: { 'x-santokit-service-token': hub.serviceToken } });
    expect(r.status).toBe(200);
    const rel = (await r.json()) as any;
    expect(rel).toMatchObject({ releaseId: v2, project: 'shop', ref: 'v2', connections: ['main'] });
    expect(Object.keys(rel.schema.tables).sort()).toEqual(['posts', 'users']);
    expect(r.headers.get('etag')).toBe(`"${v2}"`);
    const same = await fetch(url, { headers: { 'x-santokit-service-token': hub.serviceToken, 'if-none-match': `"${v2}"` } });
    expect(same.status).toBe(304);
    const none = await fetch(`${hub.url}/internal/releases/shop/nope/current`, { headers: { 'x-santokit-service-token': hub.serviceToken } });
    expect(none.status).toBe(404);
  });

  it('the API validates promote and rollback bodies', async () => {
    expect((await api('POST', '/api/projects/shop/releases/promote', { from: 'dev' })).status).toBe(400);
    expect((await api('POST', '/api/projects/shop/releases/promote', { from: 'dev', to: 'dev' })).status).toBe(400);
    expect((await api('POST', '/api/projects/shop/releases/promote', { from: 'dev', to: 'qa' })).status).toBe(404);
    expect((await api('POST', '/api/projects/shop/releases/promote', { to: 'prod', releaseId: 'x'.repeat(100) })).status).toBe(400);
    expect((await api('POST', '/api/projects/shop/envs/dev/rollback', {})).status).toBe(400);
    expect((await api('POST', '/api/projects/shop/envs/dev/rollback', { releaseId: v1, extra: 1 })).status).toBe(400);
    expect((await api('GET', '/api/projects/shop/releases?limit=0')).status).toBe(400);
    expect((await api('GET', '/api/projects/nope/releases')).status).toBe(404);
  });
});
