/**
 * The upstream Santokit Hub routes (docs/compat.md "Hub routes") driven end to end as a script written
 * for the reference implementation would: a real Hub and Bridge (processes), PostgreSQL, upstream
 * names (`shop_1a2b3c4d`), upstream paths and snake_case shapes, with our RBAC and safety on top.
 * OPERATOR-001 (project, envs, connections, apply) → 002 (keys, /call, revoke by name) → 005
 * (releases: list, promote, rollback) → 006 (invites, roles, removal).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compat } from '../../src/protocol/api/compat.js';
import { API_KEY_RE } from '../../src/protocol/key-format.js';
import { HubApi } from '../helpers/hub-api.js';
import { loginToken } from '../helpers/cli.js';
import { createTestDatabase } from '../helpers/pg.js';
import { startBridge, startHub, TEST_OWNER, waitFor, type Proc } from '../helpers/procs.js';
import { rememberSecret } from '../helpers/secrets.js';
import { call, EXAMPLE_DIR } from './apikeys.setup.js';

type Hub = Awaited<ReturnType<typeof startHub>>;
type Db = Awaited<ReturnType<typeof createTestDatabase>>;
/** the error envelope of a refused request (typed calls type only the success body) */
const errorOf = (r: { json: unknown }) => (r.json as { error: { code: string; message: string; requestId: string } }).error;

const PROJECT = `shop_${randomBytes(4).toString('hex')}`;
const OTHER = `other_${randomBytes(4).toString('hex')}`;
const PW = rememberSecret('password', 'upstream-password-1');
const DB_PASSWORD = rememberSecret('db-password', 'Up' + randomBytes(12).toString('hex'));
const schemaFiles = ['users.yaml', 'posts.yaml'].map((f) => readFileSync(join(EXAMPLE_DIR, 'schema', f), 'utf8'));
const permissionsV1 = readFileSync(join(EXAMPLE_DIR, 'config', 'permissions.yaml'), 'utf8');
// v2: readers may no longer select users (the rule block for reader on users is removed)
const permissionsV2 = permissionsV1.replace('      - roles: [reader]\n        columns: [id, email, name, created_at]\n', '');

describe('upstream Hub routes end to end (OPERATOR-001/002/005/006)', () => {
  let hub: Hub;
  let bridge: Proc;
  let dev: Db;
  let prod: Db;
  let stage: Db;
  let api: HubApi;
  /** every response body: none may hold the DB password */
  const seen: string[] = [];
  const withPassword = (url: string) => {
    const u = new URL(url);
    u.password = DB_PASSWORD; // the test cluster trusts local connections: any password works
    return u.toString();
  };
  const invitee = async (email: string, role: string, project?: string) => {
    const inv = project
      ? await api.call(compat.projectInvite, { body: { project, email, role } })
      : await api.call(compat.orgInvite, { body: { email, role } });
    expect(inv.status, inv.text).toBe(200);
    const code = rememberSecret('invite-code', inv.json.invite_code);
    const acc = await api.request('POST', '/api/invites/accept', { email, code, password: PW }, null);
    expect(acc.status, acc.text).toBe(200);
    return loginToken(hub.url, email, PW);
  };

  let releaseV1: string;
  let releaseV2: string;
  let viewer: string;
  let otherAdmin: string;

  beforeAll(async () => {
    [hub, dev, prod, stage] = await Promise.all([startHub(), createTestDatabase('updev'), createTestDatabase('upprod'), createTestDatabase('upstage')]);
    bridge = await startBridge({ hubUrl: hub.url, serviceToken: hub.serviceToken, env: { STK_BRIDGE_ID: 'bridge-upstream' } });
    await waitFor(
      async () => {
        const r = await fetch(hub.url + '/internal/sync/bridges', { headers: { 'x-santokit-service-token': hub.serviceToken } });
        return ((await r.json()) as { items: unknown[] }).items.length === 1;
      },
      20_000,
      'bridge connected to the hub',
    );
    // upstream login: {email, password} → {token}
    const login = await fetch(hub.url + '/api/auth/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(TEST_OWNER),
    });
    expect(login.status).toBe(200);
    const token = rememberSecret('session-token', ((await login.json()) as { token: string }).token);
    api = new HubApi(hub.url, token, (_m, _p, text) => seen.push(text));
  }, 120_000);
  afterAll(async () => {
    await bridge?.stop();
    await hub?.stop();
    await Promise.all([dev?.drop(), prod?.drop(), stage?.drop()]);
  });

  it('POST /api/projects {project} and POST /api/envs {project, env}: 200 {ok}, idempotent for re-run scripts', async () => {
    const p = await api.request('POST', '/api/projects', { project: PROJECT });
    expect(p.status, p.text).toBe(200);
    expect(p.json).toEqual({ ok: true, created: true });
    const again = await api.request('POST', '/api/projects', { project: PROJECT });
    expect(again.status).toBe(200);
    expect(again.json).toEqual({ ok: true, created: false });
    // our own spelling keeps its 409 for a duplicate
    const ours = await api.request('POST', '/api/projects', { name: PROJECT });
    expect(ours.status).toBe(409);
    const both = await api.request('POST', '/api/projects', { name: 'x1', project: 'x1' });
    expect(both.status).toBe(400);
    const bad = await api.request('POST', '/api/projects', { project: 'Shop_1A2B' });
    expect(bad.status).toBe(400);
    expect(errorOf(bad).message).toContain("use 1-63 lowercase letters, digits, '_' or '-'");

    for (const env of ['dev', 'prod']) {
      const e = await api.call(compat.createEnv, { body: { project: PROJECT, env } });
      expect(e.status, e.text).toBe(200);
      expect(e.json).toEqual({ ok: true, created: true });
    }
    expect((await api.call(compat.createEnv, { body: { project: PROJECT, env: 'dev' } })).json).toEqual({ ok: true, created: false });
    const badEnv = await api.call(compat.createEnv, { body: { project: PROJECT, env: '../dev' } });
    expect(badEnv.status).toBe(400);
    expect(errorOf(badEnv).message).toContain('invalid env name "../dev"');
    // upstream did not check that the project exists; we do
    const noProject = await api.call(compat.createEnv, { body: { project: 'nope_1', env: 'dev' } });
    expect(noProject.status).toBe(404);
    const envs = await api.request('GET', `/api/projects/${PROJECT}/envs`);
    expect(envs.json.items.map((e: { name: string }) => e.name)).toEqual(['dev', 'prod']);
  });

  it('POST /api/connections/set and /test: {ok}; the URL is stored encrypted and never comes back', async () => {
    for (const [env, db] of [
      ['dev', dev],
      ['prod', prod],
    ] as const) {
      const s = await api.call(compat.setConnection, { body: { project: PROJECT, env, name: 'main', engine: 'postgres', db_url: withPassword(db.url) } });
      expect(s.status, s.text).toBe(200);
      expect(s.json).toEqual({ ok: true });
      const t = await api.call(compat.testConnection, { body: { project: PROJECT, env, name: 'main' } });
      expect(t.status, t.text).toBe(200);
      expect(t.json).toEqual({ ok: true });
    }
    const missing = await api.call(compat.testConnection, { body: { project: PROJECT, env: 'dev', name: 'nosuch' } });
    expect(missing.status).toBe(404);
    const engine = await api.call(compat.setConnection, {
      body: { project: PROJECT, env: 'dev', name: 'other', engine: 'mysql', db_url: withPassword(dev.url) },
    });
    expect(engine.status).toBe(400);
    expect(errorOf(engine).message).toContain('engine must be one of: postgres');
    const list = await api.request('GET', `/api/projects/${PROJECT}/envs/dev/connections`);
    expect(list.json.items.map((c: { name: string }) => c.name)).toEqual(['main']);
  });

  it('POST /api/apply {project, env, ref, schema:[yaml…], permissions, storage:null, logics:{}} → {release_id, reused, dry_run}', async () => {
    const a = await api.call(compat.apply, {
      body: { project: PROJECT, env: 'dev', ref: 'v1', schema: schemaFiles, permissions: permissionsV1, storage: null, logics: {} },
    });
    expect(a.status, a.text).toBe(200);
    expect(a.json).toEqual({ release_id: expect.any(String), reused: false, dry_run: false });
    releaseV1 = a.json.release_id!;
    // the same inputs again: the same release
    const again = await api.call(compat.apply, { body: { project: PROJECT, env: 'dev', ref: 'v1', schema: schemaFiles, permissions: permissionsV1 } });
    expect(again.json).toEqual({ release_id: releaseV1, reused: true, dry_run: false });
    // what this Hub does not do is refused, not ignored
    const storage = await api.call(compat.apply, { body: { project: PROJECT, env: 'dev', schema: schemaFiles, storage: 'buckets: {}' } });
    expect(storage.status).toBe(400);
    expect(errorOf(storage).message).toContain('storage policies');
    const logics = await api.call(compat.apply, { body: { project: PROJECT, env: 'dev', schema: schemaFiles, logics: { hello: 'select 1' } } });
    expect(logics.status).toBe(400);
    expect(errorOf(logics).message).toContain('custom logics');
    const unknown = await api.request('POST', '/api/apply', { project: PROJECT, env: 'dev', schema: schemaFiles, only: ['schema'] });
    expect(unknown.status).toBe(400);
    // a condition outside the supported CEL subset is refused here, not at /call
    const cel = await api.call(compat.apply, {
      body: {
        project: PROJECT,
        env: 'dev',
        schema: schemaFiles,
        permissions: permissionsV1.replace('resource.published == true', 'resource.title.matches("^a")'),
      },
    });
    expect(cel.status, cel.text).toBe(400);
    expect(errorOf(cel).message).toContain('matches');
    // a broken file is named by its position
    const broken = await api.call(compat.apply, { body: { project: PROJECT, env: 'dev', schema: [schemaFiles[0]!, 'tables: [oops'] } });
    expect(broken.status).toBe(400);
    expect(errorOf(broken).message).toContain('schema/2.yaml');
  });

  it('POST /api/apply over a table made by hand: 409 asking for adopt (ours), then adopt:true applies without force', async () => {
    const c = new pg.Client({ connectionString: stage.url });
    await c.connect();
    try {
      await c.query(
        'CREATE TABLE users (id text PRIMARY KEY, email varchar(255) NOT NULL UNIQUE, name varchar(100), created_at timestamp NOT NULL DEFAULT now())',
      );
      await c.query("INSERT INTO users (id, email) VALUES ('u1', 'kept@example.com')");
    } finally {
      await c.end();
    }
    expect((await api.call(compat.createEnv, { body: { project: PROJECT, env: 'stage' } })).status).toBe(200);
    expect(
      (await api.call(compat.setConnection, { body: { project: PROJECT, env: 'stage', name: 'main', engine: 'postgres', db_url: withPassword(stage.url) } }))
        .status,
    ).toBe(200);
    const body = { project: PROJECT, env: 'stage', ref: 'v1', schema: schemaFiles, permissions: permissionsV1, storage: null, logics: {} };
    const first = await api.call(compat.apply, { body });
    expect(first.status, first.text).toBe(409);
    expect(errorOf(first).message).toContain('--adopt');
    const adopted = await api.call(compat.apply, { body: { ...body, adopt: true } });
    expect(adopted.status, adopted.text).toBe(200);
    expect(adopted.json).toEqual({ release_id: releaseV1, reused: true, dry_run: false });
    const c2 = new pg.Client({ connectionString: stage.url });
    await c2.connect();
    try {
      expect((await c2.query('SELECT email FROM users')).rows).toEqual([{ email: 'kept@example.com' }]);
    } finally {
      await c2.end();
    }
  });

  let apiKey: string;
  let keyId: string;
  it('POST /api/apikeys/create → {key_id, api_key}; /call 200; GET /api/apikeys/list; revoke by name → the next /call 401', async () => {
    const c = await api.call(compat.createKey, { body: { project: PROJECT, env: 'dev', name: 'server', roles: ['admin'] } });
    expect(c.status, c.text).toBe(200);
    expect(Object.keys(c.json).sort()).toEqual(['api_key', 'key_id']);
    expect(c.headers.get('cache-control')).toBe('no-store');
    apiKey = rememberSecret('api-key', c.json.api_key);
    keyId = c.json.key_id;
    expect(apiKey).toMatch(API_KEY_RE);
    expect(apiKey).toMatch(/^stk_dev_/);

    const bad = await api.call(compat.createKey, { body: { project: PROJECT, env: 'dev', name: 'bad', roles: ['superuser'] } });
    expect(bad.status).toBe(422);
    expect(errorOf(bad).code).toBe('INVALID_ROLE');
    const dup = await api.call(compat.createKey, { body: { project: PROJECT, env: 'dev', name: 'server', roles: ['admin'] } });
    expect(dup.status).toBe(409);

    const ok = await call(bridge, apiKey, { project: PROJECT, env: 'dev', path: 'db/users/select' });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    const ins = await call(bridge, apiKey, {
      project: PROJECT,
      env: 'dev',
      path: 'db/users/insert',
      params: { data: { email: 'ada@example.com', name: 'Ada' } },
    });
    expect(ins.status, JSON.stringify(ins.body)).toBe(200);

    const other = await api.call(compat.createKey, { body: { project: PROJECT, env: 'dev', name: 'reader_1', roles: ['reader'] } });
    expect(other.status).toBe(200);
    rememberSecret('api-key', other.json.api_key);
    const list = await api.call(compat.listKeys, { query: { project: PROJECT, env: 'dev' } });
    expect(list.status, list.text).toBe(200);
    // newest first, never a secret
    expect(list.json.map((k) => [k.id, k.name, k.revoked])).toEqual([
      [other.json.key_id, 'reader_1', false],
      [keyId, 'server', false],
    ]);
    expect(list.text).not.toContain(apiKey.slice(-28));

    // upstream revokes by id or name: by name here, and it returns once the Bridge refuses the key
    const r = await api.call(compat.revokeKey, { body: { project: PROJECT, env: 'dev', key_id: 'server' } });
    expect(r.status, r.text).toBe(200);
    expect(r.json).toEqual({ ok: true, key_id: keyId, name: 'server', already_revoked: false });
    const refused = await call(bridge, apiKey, { project: PROJECT, env: 'dev', path: 'db/users/select' });
    expect(refused.status).toBe(401);
    expect((await api.call(compat.listKeys, { query: { project: PROJECT, env: 'dev' } })).json.find((k) => k.name === 'server')).toMatchObject({
      revoked: true,
      status: 'revoked',
    });
    const again = await api.call(compat.revokeKey, { body: { project: PROJECT, env: 'dev', key_id: keyId } });
    expect(again.json).toEqual({ ok: true, key_id: keyId, name: 'server', already_revoked: true });
    // upstream answered ok for a typo; here it is 404
    const typo = await api.call(compat.revokeKey, { body: { project: PROJECT, env: 'dev', key_id: 'sever' } });
    expect(typo.status).toBe(404);

    // the same services: the audit log has the upstream calls
    const audit = await api.request('GET', `/api/audit?project=${PROJECT}&action=apikey.*`);
    expect(audit.json.items.map((i: { action: string; detail: { name: string } }) => `${i.action} ${i.detail.name}`)).toEqual([
      'apikey.revoke server',
      'apikey.create reader_1',
      'apikey.create server',
    ]);
  });

  it('GET /api/releases, POST /api/releases/promote dev→prod, POST /api/releases/rollback', async () => {
    const l = await api.call(compat.listReleases, { query: { project: PROJECT, env: 'dev' } });
    expect(l.status, l.text).toBe(200);
    expect(l.json).toEqual([{ id: releaseV1, ref: 'v1', created_at: expect.any(String), envs: ['dev', 'stage'], current: true }]);
    expect((await api.call(compat.listReleases, { query: { project: PROJECT, env: 'nope' } })).status).toBe(404);
    expect((await api.call(compat.listReleases, { query: { project: PROJECT, limit: '0' } })).status).toBe(400);

    // prod has no tables yet: promote applies the release's schema there, then makes it current
    const p = await api.call(compat.promote, { body: { project: PROJECT, from: 'dev', to: 'prod' } });
    expect(p.status, p.text).toBe(200);
    expect(p.json).toMatchObject({ ok: true, release_id: releaseV1, previous_release_id: null, moved: true, bridges: { bridges: 1, acked: 1, lagging: [] } });
    const prodKey = await api.call(compat.createKey, { body: { project: PROJECT, env: 'prod', name: 'server', roles: ['admin'] } });
    expect(prodKey.status, prodKey.text).toBe(200);
    const onProd = await call(bridge, rememberSecret('api-key', prodKey.json.api_key), { project: PROJECT, env: 'prod', path: 'db/users/select' });
    expect(onProd.status, JSON.stringify(onProd.body)).toBe(200);
    expect(onProd.body.data).toEqual([]); // prod's own database

    // v2 on dev takes users away from readers; rolling back to v1 gives them back, before it returns
    const readerKey = await api.call(compat.createKey, { body: { project: PROJECT, env: 'dev', name: 'reader_2', roles: ['reader'] } });
    const reader = rememberSecret('api-key', readerKey.json.api_key);
    expect((await call(bridge, reader, { project: PROJECT, env: 'dev', path: 'db/users/select' })).status).toBe(200);
    expect(permissionsV2).not.toBe(permissionsV1);
    const v2 = await api.call(compat.apply, { body: { project: PROJECT, env: 'dev', ref: 'v2', schema: schemaFiles, permissions: permissionsV2 } });
    expect(v2.status, v2.text).toBe(200);
    releaseV2 = v2.json.release_id!;
    // a role with no rule for the operation: 403 (upstream 400)
    const denied = await call(bridge, reader, { project: PROJECT, env: 'dev', path: 'db/users/select' });
    expect(denied.status).toBe(403);
    expect(denied.body.error.code).toBe('FORBIDDEN');
    const rb = await api.call(compat.rollback, { body: { project: PROJECT, env: 'dev', to_release_id: releaseV1 } });
    expect(rb.status, rb.text).toBe(200);
    expect(rb.json).toMatchObject({ ok: true, release_id: releaseV1, previous_release_id: releaseV2, moved: true, bridges: { acked: 1, lagging: [] } });
    expect((await call(bridge, reader, { project: PROJECT, env: 'dev', path: 'db/users/select' })).status).toBe(200);
    const after = await api.call(compat.listReleases, { query: { project: PROJECT, env: 'dev', limit: '10' } });
    expect(after.json.map((r) => [r.id, r.ref, r.current, r.envs])).toEqual([
      [releaseV2, 'v2', false, []],
      [releaseV1, 'v1', true, ['dev', 'prod', 'stage']],
    ]);
    const unknown = await api.call(compat.rollback, { body: { project: PROJECT, env: 'dev', to_release_id: '01NOSUCHRELEASE' } });
    expect(unknown.status).toBe(404);
  });

  it('operator RBAC through the upstream routes: invites answer with the code and the accept command; a viewer gets 403 on keys and release changes', async () => {
    const inv = await api.call(compat.projectInvite, { body: { project: PROJECT, email: 'viewer@example.com', role: 'viewer' } });
    expect(inv.status, inv.text).toBe(200);
    const code = rememberSecret('invite-code', inv.json.invite_code);
    expect(inv.json).toEqual({
      ok: true,
      email: 'viewer@example.com',
      role: 'viewer',
      invite_code: code,
      expires_at: expect.any(String),
      accept_command: `npx --no stk invite accept --hub ${hub.url} --email viewer@example.com --code ${code}`,
    });
    // the invite is pending until accepted: no login with upstream's fixed password
    expect((await api.request('POST', '/api/auth/login', { email: 'viewer@example.com', password: 'password' }, null)).status).toBe(401);
    const accepted = await api.request('POST', '/api/invites/accept', { email: 'viewer@example.com', code, password: PW }, null);
    expect(accepted.status, accepted.text).toBe(200);
    viewer = await loginToken(hub.url, 'viewer@example.com', PW);

    const badRole = await api.call(compat.projectInvite, { body: { project: PROJECT, email: 'x@example.com', role: 'superuser' } });
    expect(badRole.status).toBe(422);
    expect(errorOf(badRole).code).toBe('INVALID_ROLE');

    const create = await api.call(compat.createKey, { body: { project: PROJECT, env: 'dev', name: 'nope', roles: ['admin'] } }, viewer);
    expect(create.status).toBe(403);
    expect(errorOf(create).message).toContain('you need project:admin');
    expect((await api.call(compat.listKeys, { query: { project: PROJECT, env: 'dev' } }, viewer)).status).toBe(403);
    expect((await api.call(compat.revokeKey, { body: { project: PROJECT, env: 'dev', key_id: 'reader_1' } }, viewer)).status).toBe(403);
    expect((await api.call(compat.promote, { body: { project: PROJECT, from: 'dev', to: 'prod' } }, viewer)).status).toBe(403);
    expect((await api.call(compat.rollback, { body: { project: PROJECT, env: 'dev', to_release_id: releaseV2 } }, viewer)).status).toBe(403);
    expect((await api.call(compat.apply, { body: { project: PROJECT, env: 'dev', schema: schemaFiles } }, viewer)).status).toBe(403);
    // upstream let any token list releases; here it takes project:viewer, which this is
    expect((await api.call(compat.listReleases, { query: { project: PROJECT } }, viewer)).status).toBe(200);

    // set-role takes effect at once (the OPERATOR-006 flow), remove takes it away
    const promoteRole = await api.call(compat.projectSetRole, { body: { project: PROJECT, user: 'viewer@example.com', role: 'admin' } });
    expect(promoteRole.status, promoteRole.text).toBe(200);
    expect(promoteRole.json).toEqual({ ok: true });
    const nowAdmin = await api.call(compat.createKey, { body: { project: PROJECT, env: 'dev', name: 'by_viewer', roles: ['admin'] } }, viewer);
    expect(nowAdmin.status, nowAdmin.text).toBe(200);
    rememberSecret('api-key', nowAdmin.json.api_key);
    const removed = await api.call(compat.projectRemove, { body: { project: PROJECT, user: 'viewer@example.com' } });
    expect(removed.json).toEqual({ ok: true });
    expect((await api.call(compat.listKeys, { query: { project: PROJECT, env: 'dev' } }, viewer)).status).toBe(403);
    expect((await api.call(compat.listReleases, { query: { project: PROJECT } }, viewer)).status).toBe(403);
  });

  it('org routes: invite (code + command), set-role, remove; org member rights stop at the org admin routes', async () => {
    const token = await invitee('member@example.com', 'member');
    expect((await api.call(compat.orgInvite, { body: { email: 'y@example.com', role: 'member' } }, token)).status).toBe(403);
    const bad = await api.call(compat.orgSetRole, { body: { user: 'member@example.com', role: 'deployer' } });
    expect(bad.status).toBe(422);
    const up = await api.call(compat.orgSetRole, { body: { user: 'member@example.com', role: 'admin' } });
    expect(up.status, up.text).toBe(200);
    // an org admin acts as project admin everywhere
    expect((await api.call(compat.listKeys, { query: { project: PROJECT, env: 'dev' } }, token)).status).toBe(200);
    const gone = await api.call(compat.orgRemove, { body: { user: 'member@example.com' } });
    expect(gone.status, gone.text).toBe(200);
    expect((await api.call(compat.listKeys, { query: { project: PROJECT, env: 'dev' } }, token)).status).toBe(403);
    // upstream set-role on a stranger silently made them a member; here they need an invite
    expect((await api.call(compat.orgSetRole, { body: { user: 'stranger@example.com', role: 'admin' } })).status).toBe(404);
  });

  it("an attacker: no session, another project's admin, the project named twice, odd names, big bodies", async () => {
    const p = await api.request('POST', '/api/projects', { project: OTHER });
    expect(p.status).toBe(200);
    otherAdmin = await invitee('otheradmin@example.com', 'admin', OTHER);
    // their own project works…
    expect((await api.call(compat.createEnv, { body: { project: OTHER, env: 'dev' } }, otherAdmin)).status).toBe(200);
    // …ours does not, whatever the route
    const attempts = [
      api.call(compat.createKey, { body: { project: PROJECT, env: 'dev', name: 'evil', roles: ['admin'] } }, otherAdmin),
      api.call(compat.revokeKey, { body: { project: PROJECT, env: 'dev', key_id: 'reader_1' } }, otherAdmin),
      api.call(compat.listKeys, { query: { project: PROJECT, env: 'dev' } }, otherAdmin),
      api.call(
        compat.setConnection,
        { body: { project: PROJECT, env: 'dev', name: 'main', engine: 'postgres', db_url: 'postgres://evil@10.0.0.1/x' } },
        otherAdmin,
      ),
      api.call(compat.listReleases, { query: { project: PROJECT } }, otherAdmin),
      api.call(compat.rollback, { body: { project: PROJECT, env: 'dev', to_release_id: releaseV2 } }, otherAdmin),
      api.call(compat.projectSetRole, { body: { project: PROJECT, user: 'otheradmin@example.com', role: 'admin' } }, otherAdmin),
      // a JSON body naming the project twice: the last one is what gets checked and used
      api.request('POST', '/api/apikeys/revoke', `{"project":"${OTHER}","env":"dev","key_id":"reader_1","project":"${PROJECT}"}`, otherAdmin),
      // a query naming it twice is no string: refused before anything runs
      api.request('GET', `/api/apikeys/list?project=${OTHER}&project=${PROJECT}&env=dev`, undefined, otherAdmin),
      api.request('GET', `/api/releases?project=${PROJECT}&project=${OTHER}`, undefined, otherAdmin),
    ];
    for (const r of await Promise.all(attempts)) {
      expect([400, 403], r.text).toContain(r.status);
      expect(errorOf(r).requestId).toEqual(expect.any(String));
    }
    // the reader key still works: nothing above changed anything
    expect((await api.call(compat.listKeys, { query: { project: PROJECT, env: 'dev' } })).json.find((k) => k.name === 'reader_1')).toMatchObject({
      revoked: false,
    });

    // no session: 401 before the body is read
    const anonymous = [
      await api.call(compat.createKey, { body: { project: PROJECT, env: 'dev', name: 'x', roles: ['admin'] } }, null),
      await api.call(compat.listReleases, { query: { project: PROJECT } }, null),
      await api.call(compat.promote, { body: { project: PROJECT, from: 'dev', to: 'prod' } }, null),
      await api.call(compat.createKey, { body: { project: PROJECT, env: 'dev', name: 'x', roles: ['admin'] } }, 'stks_forged'),
    ];
    for (const r of anonymous) expect(r.status, r.text).toBe(401);
    expect((await api.request('POST', '/api/apikeys/create', '{"project":', null)).status).toBe(401);
    // a body without its project: 400 naming the field
    const noProject = await api.request('POST', '/api/apikeys/revoke', { env: 'dev', key_id: 'reader_1' });
    expect(noProject.status).toBe(400);
    expect(errorOf(noProject).message).toContain('"project"');
    // path-ish and encoded names are just names that do not exist (or are refused)
    for (const project of ['..', '../' + PROJECT, `${PROJECT}/..`, '%2e%2e', PROJECT.toUpperCase()]) {
      const r = await api.call(compat.createEnv, { body: { project, env: 'x' } });
      expect([400, 404], `${project}: ${r.text}`).toContain(r.status);
      const q = await api.request('GET', `/api/releases?project=${encodeURIComponent(project)}`);
      expect([400, 404], `${project}: ${q.text}`).toContain(q.status);
    }
    // oversized and deeply nested bodies
    const big = await api.request('POST', '/api/apply', JSON.stringify({ project: PROJECT, env: 'dev', schema: ['x'.repeat(11 * 1024 * 1024)] }));
    expect(big.status).toBe(413);
    const deep = await api.request('POST', '/api/apply', `{"project":"${PROJECT}","env":"dev","schema":[],"logics":${'['.repeat(200)}${']'.repeat(200)}}`);
    expect(deep.status).toBe(400);
  });

  it('a revoke that a Bridge did not confirm is 503 naming it (never a bare ok), and that Bridge refuses the key once it catches up', async () => {
    const b2 = await startBridge({ hubUrl: hub.url, serviceToken: hub.serviceToken, env: { STK_BRIDGE_ID: 'bridge-frozen' } });
    try {
      await waitFor(
        async () => {
          const r = await fetch(hub.url + '/internal/sync/bridges', { headers: { 'x-santokit-service-token': hub.serviceToken } });
          return ((await r.json()) as { items: unknown[] }).items.length === 2;
        },
        20_000,
        'second bridge connected',
      );
      const c = await api.call(compat.createKey, { body: { project: PROJECT, env: 'dev', name: 'leaked', roles: ['admin'] } });
      const key = rememberSecret('api-key', c.json.api_key);
      expect((await call(b2, key, { project: PROJECT, env: 'dev' })).status).toBe(200);
      b2.child.kill('SIGSTOP'); // the stream stays open, nothing is applied or acknowledged
      try {
        const r = await api.call(compat.revokeKey, { body: { project: PROJECT, env: 'dev', key_id: 'leaked' } });
        expect(r.status, r.text).toBe(503);
        expect(errorOf(r).code).toBe('SERVICE_UNAVAILABLE');
        expect(errorOf(r).message).toContain('is revoked, but 1 of 2 Bridge(s) did not confirm in time: bridge-frozen');
        expect((await call(bridge, key, { project: PROJECT, env: 'dev' })).status).toBe(401);
      } finally {
        b2.child.kill('SIGCONT');
      }
      await waitFor(async () => (await call(b2, key, { project: PROJECT, env: 'dev' })).status === 401, 10_000, 'the frozen bridge to catch up');
      const again = await api.call(compat.revokeKey, { body: { project: PROJECT, env: 'dev', key_id: 'leaked' } });
      expect(again.json).toMatchObject({ ok: true, already_revoked: true });
    } finally {
      await b2.stop();
    }
  });

  it('no response carried the DB password', () => {
    expect(seen.length).toBeGreaterThan(50);
    for (const t of seen) expect(t).not.toContain(DB_PASSWORD);
  });
});
