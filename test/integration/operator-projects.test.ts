import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSqlite } from '../helpers/sqlite.js';
import { randomBytes } from 'node:crypto';
import { startHub, TEST_OWNER } from '../helpers/procs.js';
import { loginToken, runStk, tempConfigDir, type RunResult } from '../helpers/cli.js';
import { createTestDatabase } from '../helpers/pg.js';
import { rememberSecret } from '../helpers/secrets.js';
import { HubApi } from '../helpers/hub-api.js';

type Hub = Awaited<ReturnType<typeof startHub>>;

/** Projects, envs and connections through the real `stk` binary against a real Hub and PostgreSQL. */
describe('projects, envs and connections (OPERATOR-001)', () => {
  let hub: Hub;
  let token: string;
  let cfg: string;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  /** every byte any command or response printed: checked for the secret at the end */
  const seen: string[] = [];
  const SECRET = rememberSecret('db-password', 'Pw' + randomBytes(12).toString('hex'));
  let goodUrl: string;

  const stk = async (args: string[], input?: string): Promise<RunResult> => {
    const r = await runStk(args, { env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: token }, input });
    seen.push(r.output);
    return r;
  };
  const api = (method: string, path: string, body?: unknown) => new HubApi(hub.url, token, (_m, _p, text) => seen.push(text)).request(method, path, body);
  const store = () => openSqlite(hub.dbUrl.replace(/^sqlite:\/\//, ''), { readonly: true, fileMustExist: true });

  beforeAll(async () => {
    [hub, db] = await Promise.all([startHub(), createTestDatabase('opconn')]);
    token = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
    cfg = tempConfigDir();
    const u = new URL(db.url);
    u.password = SECRET; // the test cluster trusts local connections, so any password works
    goodUrl = u.toString();
  });
  afterAll(async () => {
    await hub?.stop();
    await db?.drop();
  });

  describe('projects', () => {
    it('stk project create prints a success line on stderr (stdout carries only results); --json gives {name, createdAt}', async () => {
      const r = await stk(['project', 'create', 'shop']);
      expect(r.code, r.output).toBe(0);
      expect(r.stderr).toContain('✓ Created project shop');
      expect(r.stdout).toBe('');
      const j = await stk(['project', 'create', 'blog', '--json']);
      expect(j.code, j.output).toBe(0);
      const p = JSON.parse(j.stdout);
      expect(Object.keys(p).sort()).toEqual(['createdAt', 'name']);
      expect(p.name).toBe('blog');
      expect(Number.isNaN(Date.parse(p.createdAt))).toBe(false);
    });

    it('a duplicate is 409 CONFLICT saying it exists, exit 1', async () => {
      const r = await stk(['project', 'create', 'shop']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('Error: project shop already exists (409 CONFLICT)');
      expect(r.stdout).toBe('');
    });

    it.each(['Shop', '-shop', 'shop-', 'shop_', '_shop', 'a'.repeat(64), 'shop.prod', '..', 'a/b', '%2e', '%2e%2e', 'sh op', 'shöp'])(
      'bad name %j → 400 with the rule',
      async (name) => {
        const r = await stk(['project', 'create', '--', name]);
        expect(r.code).toBe(1);
        expect(r.stderr).toContain('(400 BAD_REQUEST)');
        expect(r.stderr).toContain("use 1-63 lowercase letters, digits, '_' or '-', starting and ending with a letter or digit");
      },
    );

    it('a missing or non-string name is a 400 envelope over HTTP', async () => {
      for (const body of [{}, { name: 42 }, { name: null }]) {
        const r = await api('POST', '/api/projects', body);
        expect(r.status).toBe(400);
        expect(r.json.error.code).toBe('BAD_REQUEST');
        expect(typeof r.json.error.requestId).toBe('string');
      }
    });

    it('stk project list shows the projects with the caller role; --json is an array', async () => {
      const r = await stk(['project', 'list', '--json']);
      expect(r.code, r.output).toBe(0);
      const items = JSON.parse(r.stdout) as Array<{ name: string; role: string; createdAt: string }>;
      expect(items.map((p) => p.name)).toEqual(['blog', 'shop']);
      expect(items.every((p) => p.role === 'admin')).toBe(true);
      const piped = await stk(['project', 'list']);
      expect(piped.stdout.split('\n')[0]).toMatch(/^blog\tadmin\t\d{4}-/);
    });

    it("upstream names with '_' are accepted (1-63 chars); upper case is refused with its lowercase form, so Shop never shadows shop", async () => {
      for (const name of ['shop_1a2b3c4d', 'a', '0_x-y', 'a'.repeat(63)]) {
        const r = await api('POST', '/api/projects', { name });
        expect(r.status, r.text).toBe(201);
        expect(r.json.name).toBe(name);
      }
      const upper = await api('POST', '/api/projects', { name: 'Shop_1A2B3C4D' });
      expect(upper.status).toBe(400);
      expect(upper.json.error.message).toBe(
        `invalid project name "Shop_1A2B3C4D": use 1-63 lowercase letters, digits, '_' or '-', starting and ending with a letter or digit (names are lowercase: "shop_1a2b3c4d")`,
      );
      const env = await api('POST', '/api/projects/shop_1a2b3c4d/envs', { name: 'dev_eu-1' });
      expect(env.status, env.text).toBe(201);
      const badEnv = await api('POST', '/api/projects/shop_1a2b3c4d/envs', { name: '../dev' });
      expect(badEnv.status).toBe(400);
      expect(badEnv.json.error.message).toContain("invalid env name \"../dev\": use 1-63 lowercase letters, digits, '_' or '-'");
      // an encoded dot segment is resolved as one: this is GET /api/envs (POST only), never a project named '..'
      const encoded = await api('GET', '/api/projects/%2e%2e/envs');
      expect(encoded.status).toBe(405);
      const dotted = await api('GET', '/api/projects/%2e%2e%2e/envs');
      expect(dotted.status).toBe(404);
      // an org admin's project list shows them all, exactly as spelt
      const list = await api('GET', '/api/projects');
      expect(list.json.items.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(['shop_1a2b3c4d', 'a', '0_x-y']));
    });
  });

  describe('envs', () => {
    it('create, list (with currentReleaseId null), duplicate 409, bad name 400, unknown project 404', async () => {
      const c = await stk(['env', 'create', '--project', 'shop', 'dev']);
      expect(c.code, c.output).toBe(0);
      expect(c.stderr).toContain('✓ Created env dev in project shop');
      const j = await stk(['env', 'create', '--project', 'shop', 'prod', '--json']);
      expect(JSON.parse(j.stdout)).toMatchObject({ name: 'prod' });

      const l = await stk(['env', 'list', '--project', 'shop', '--json']);
      expect(l.code, l.output).toBe(0);
      const envs = JSON.parse(l.stdout);
      expect(envs.map((e: { name: string }) => e.name)).toEqual(['dev', 'prod']);
      expect(envs[0]).toEqual({ name: 'dev', createdAt: expect.any(String), currentReleaseId: null });

      const dup = await stk(['env', 'create', '--project', 'shop', 'dev']);
      expect(dup.code).toBe(1);
      expect(dup.stderr).toContain('env dev already exists in project shop (409 CONFLICT)');

      const bad = await stk(['env', 'create', '--project', 'shop', 'Dev']);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain('invalid env name "Dev"');
      expect(bad.stderr).toContain('(400 BAD_REQUEST)');

      const missing = await stk(['env', 'create', '--project', 'nope', 'dev']);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toContain('project "nope" not found (404 NOT_FOUND)');
      const missingList = await stk(['env', 'list', '--project', 'nope']);
      expect(missingList.stderr).toContain('(404 NOT_FOUND)');
    });

    it('--project falls back to STK_PROJECT; none at all is a usage error (exit 2)', async () => {
      const r = await runStk(['env', 'list', '--json'], { env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: token, STK_PROJECT: 'shop' } });
      expect(r.code, r.output).toBe(0);
      expect(JSON.parse(r.stdout)).toHaveLength(2);
      const none = await runStk(['env', 'list'], {
        env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: token, STK_PROJECT: undefined },
        cwd: cfg,
      });
      expect(none.code).toBe(2);
      expect(none.stderr).toContain('no project');
    });

    it('the 11th env of a project is 409 naming the limit of 10', async () => {
      for (let i = 0; i < 8; i++) expect((await api('POST', '/api/projects/blog/envs', { name: `e${i}` })).status).toBe(201);
      expect((await api('POST', '/api/projects/blog/envs', { name: 'e8' })).status).toBe(201);
      expect((await api('POST', '/api/projects/blog/envs', { name: 'e9' })).status).toBe(201);
      const r = await stk(['env', 'create', '--project', 'blog', 'e10']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('at most 10 envs (409 CONFLICT)');
      expect((await api('GET', '/api/projects/blog/envs')).json.items).toHaveLength(10);
    });
  });

  describe('connections', () => {
    it('set --db-url-stdin stores the URL encrypted and shows it masked', async () => {
      const r = await stk(['connections', 'set', '--project', 'shop', '--env', 'dev', '--name', 'main', '--engine', 'postgres', '--db-url-stdin'], goodUrl);
      expect(r.code, r.output).toBe(0);
      const masked = `postgres://postgres:****@127.0.0.1:${new URL(db.url).port}/${db.name}`;
      expect(r.stderr).toContain(`✓ Saved connection main in shop/dev: ${masked}`);

      const s = store();
      try {
        const row = s.prepare("select db_url_enc, display_url from connections where name = 'main'").get() as { db_url_enc: string; display_url: string };
        expect(row.db_url_enc).toMatch(/^v1:/);
        expect(row.db_url_enc).not.toContain(SECRET);
        expect(row.db_url_enc).not.toContain('127.0.0.1');
        expect(row.display_url).toBe(masked);
        const ev = s.prepare("select project, env, kind, payload_json from change_events where kind = 'connection' order by seq").all();
        expect(ev).toEqual([{ project: 'shop', env: 'dev', kind: 'connection', payload_json: '{"name":"main"}' }]);
      } finally {
        s.close();
      }
    });

    it('set --db-url and --json; setting again replaces it (createdAt kept, updatedAt moves)', async () => {
      const first = await stk(['connections', 'set', '--project', 'shop', '--env', 'dev', '--name', 'replica', '--db-url', goodUrl, '--json']);
      expect(first.code, first.output).toBe(0);
      const a = JSON.parse(first.stdout);
      expect(Object.keys(a).sort()).toEqual(['createdAt', 'engine', 'name', 'updatedAt', 'url']);
      expect(a).toMatchObject({ name: 'replica', engine: 'postgres' });
      expect(a.url).toContain(':****@');
      const second = await stk(
        ['connections', 'set', '--project', 'shop', '--env', 'dev', '--name', 'replica', '--json', '--db-url-stdin'],
        goodUrl.replace(SECRET, SECRET + 'x'),
      );
      const b = JSON.parse(second.stdout);
      expect(b.createdAt).toBe(a.createdAt);
      expect(b.updatedAt >= a.updatedAt).toBe(true);
    });

    it('list shows name, engine and the masked URL only', async () => {
      const j = await stk(['connections', 'list', '--project', 'shop', '--env', 'dev', '--json']);
      expect(j.code, j.output).toBe(0);
      const items = JSON.parse(j.stdout);
      expect(items.map((c: { name: string }) => c.name)).toEqual(['main', 'replica']);
      for (const c of items) expect(c.url).toMatch(/^postgres:\/\/postgres:\*\*\*\*@127\.0\.0\.1:\d+\/stk_opconn_/);
      const table = await stk(['connections', 'list', '--project', 'shop', '--env', 'dev']);
      expect(table.stdout).toMatch(/^main\tpostgres\tpostgres:\/\/postgres:\*\*\*\*@/m);
      const http = await api('GET', '/api/projects/shop/envs/dev/connections');
      expect(http.status).toBe(200);
      expect(JSON.stringify(http.json)).not.toMatch(/db_?url/i);
    });

    it('test really connects and runs SELECT 1', async () => {
      const r = await stk(['connections', 'test', '--project', 'shop', '--env', 'dev', '--name', 'main']);
      expect(r.code, r.output).toBe(0);
      expect(r.stderr).toMatch(/✓ Connection main in shop\/dev works \(\d+ ms\)/);
      const j = await stk(['connections', 'test', '--project', 'shop', '--env', 'dev', '--json']);
      const body = JSON.parse(j.stdout);
      expect(body.ok).toBe(true);
      expect(Number.isInteger(body.latencyMs)).toBe(true);
    });

    it('a failing test exits 1 with the driver reason and no secret', async () => {
      const refused = goodUrl.replace(`:${new URL(db.url).port}/`, ':1/');
      await stk(['connections', 'set', '--project', 'shop', '--env', 'prod', '--name', 'refused', '--db-url-stdin'], refused);
      const r = await stk(['connections', 'test', '--project', 'shop', '--env', 'prod', '--name', 'refused']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('Error: connection refused failed: connection refused at 127.0.0.1:1 (400 BAD_REQUEST)');

      const u = new URL(goodUrl);
      u.pathname = '/stk_no_such_database';
      await stk(['connections', 'set', '--project', 'shop', '--env', 'prod', '--name', 'nodb', '--db-url-stdin'], u.toString());
      const n = await stk(['connections', 'test', '--project', 'shop', '--env', 'prod', '--name', 'nodb']);
      expect(n.code).toBe(1);
      expect(n.stderr).toContain('database "stk_no_such_database" does not exist');
      expect(n.stderr).toContain('(400 BAD_REQUEST)');

      const none = await stk(['connections', 'test', '--project', 'shop', '--env', 'prod', '--name', 'ghost']);
      expect(none.code).toBe(1);
      expect(none.stderr).toContain('(404 NOT_FOUND)');
    });

    it('engine must be postgres; a bad URL is 400 without the URL; unknown env 404', async () => {
      const eng = await stk(['connections', 'set', '--project', 'shop', '--env', 'dev', '--name', 'm2', '--engine', 'mysql', '--db-url-stdin'], goodUrl);
      expect(eng.code).toBe(1);
      expect(eng.stderr).toContain('engine must be one of: postgres (400 BAD_REQUEST)');
      for (const bad of [`mysql://root:${SECRET}@db/app`, `postgres://:${SECRET}@/app`, `${SECRET}`, `postgres://u:${SECRET}@h/db?sslkey=/etc/shadow`]) {
        const r = await stk(['connections', 'set', '--project', 'shop', '--env', 'dev', '--name', 'm2', '--db-url-stdin'], bad);
        expect(r.code, bad).toBe(1);
        expect(r.stderr).toContain('(400 BAD_REQUEST)');
        expect(r.stderr).not.toContain(SECRET);
      }
      const env = await stk(['connections', 'set', '--project', 'shop', '--env', 'staging', '--db-url-stdin'], goodUrl);
      expect(env.stderr).toContain('env "staging" not found in project shop (404 NOT_FOUND)');
    });

    it('usage errors exit 2: both URL flags, or no URL off a terminal', async () => {
      const both = await stk(['connections', 'set', '--project', 'shop', '--env', 'dev', '--db-url', goodUrl, '--db-url-stdin'], goodUrl);
      expect(both.code).toBe(2);
      const none = await stk(['connections', 'set', '--project', 'shop', '--env', 'dev']);
      expect(none.code).toBe(2);
      expect(none.stderr).toContain('--db-url-stdin');
    });

    it('the 11th connection of a project (across envs) is 409 naming the limit of 10', async () => {
      // main, replica (dev) + refused, nodb (prod) = 4 so far
      for (let i = 0; i < 6; i++) {
        const r = await api('PUT', `/api/projects/shop/envs/prod/connections/c${i}`, { engine: 'postgres', dbUrl: goodUrl });
        expect(r.status).toBe(200);
      }
      const r = await stk(['connections', 'set', '--project', 'shop', '--env', 'dev', '--name', 'eleventh', '--db-url-stdin'], goodUrl);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('at most 10 connections');
      expect(r.stderr).toContain('(409 CONFLICT)');
      // replacing an existing one is still fine at the limit
      expect((await api('PUT', '/api/projects/shop/envs/prod/connections/c0', { engine: 'postgres', dbUrl: goodUrl })).status).toBe(200);
    });

    it('the URL and its password appear in no response, no log line and no audit row', async () => {
      const audit = await api('GET', '/api/audit?limit=1000');
      expect(audit.status).toBe(200);
      expect(audit.json.items.some((a: { action: string }) => a.action === 'connection.set')).toBe(true);
      const everything = seen.join('\n') + hub.logs();
      expect(everything).not.toContain(SECRET);
      expect(everything).not.toContain(goodUrl);
      const s = store();
      try {
        const rows = s.prepare('select * from audit_log').all();
        expect(JSON.stringify(rows)).not.toContain(SECRET);
      } finally {
        s.close();
      }
    });
  });

  it('the 501st project of the org is 409 naming the limit of 500', async () => {
    // fill the store directly (499 more rows) rather than making 498 API calls
    const s = openSqlite(hub.dbUrl.replace(/^sqlite:\/\//, ''), { fileMustExist: true });
    try {
      s.pragma('busy_timeout = 5000');
      const org = s.prepare("select id from orgs where name = 'default'").get() as { id: string };
      const { n } = s.prepare('select count(*) as n from projects').get() as { n: number };
      const ins = s.prepare('insert into projects (id, org_id, name, created_at) values (?, ?, ?, ?)');
      s.transaction(() => {
        for (let i = n; i < 500; i++) ins.run(`fill${i}`, org.id, `fill-${i}`, new Date().toISOString());
      })();
    } finally {
      s.close();
    }
    const r = await stk(['project', 'create', 'one-too-many']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('at most 500 projects (409 CONFLICT)');
  });
});
