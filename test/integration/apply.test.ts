import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openSqlite } from '../helpers/sqlite.js';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHub, TEST_OWNER } from '../helpers/procs.js';
import { loginToken, runStk, tempConfigDir, type RunResult } from '../helpers/cli.js';
import { createTestDatabase, query } from '../helpers/pg.js';
import { rememberSecret } from '../helpers/secrets.js';
import { HubApi } from '../helpers/hub-api.js';

type Hub = Awaited<ReturnType<typeof startHub>>;
type TestDb = Awaited<ReturnType<typeof createTestDatabase>>;
const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/** The schema of the main test: several files, every type, FK with `as`, unique, indexes, defaults, two connections. */
const FILES: Record<string, string> = {
  'schema/users.yaml': `version: 1
tables:
  users:
    id: { name: id, generate: ulid }
    columns:
      email: { type: string, unique: true }
      name: { type: string, nullable: true }
      age: { type: int, default: 0 }
      created_at: { type: timestamp, default: now }
`,
  'schema/catalog.yml': `version: 1
tables:
  products:
    id: { generate: uuid_v4 }
    columns:
      title: { type: string }
      qty: { type: int, default: 1 }
      views: { type: bigint, default: "0" }
      price: { type: decimal, default: "9.99" }
      rating: { type: float, nullable: true }
      active: { type: boolean, default: true }
      attrs: { type: json, nullable: true }
      released: { type: timestamp, nullable: true }
      photo: { type: bytes, nullable: true }
      tags: { type: array, items: string, nullable: true }
      label: { type: string, default: "it's new" }
      owner_id: { type: string, nullable: true, references: { table: users, as: owner, onDelete: set_null } }
    indexes:
      - { columns: [title] }
      - { columns: [owner_id, title], unique: true }
  orders:
    id: { generate: auto_increment }
    columns:
      product_id: { type: string, references: { table: products, as: product, onDelete: cascade, onUpdate: cascade } }
      amount: { type: int }
`,
  'schema/reports.yaml': `version: 1
tables:
  events:
    connection: reports
    id: { generate: nanoid }
    columns:
      kind: { type: string }
`,
  'config/permissions.yaml': `tables:
  users:
    select:
      - roles: [admin]
      - roles: [authenticated]
        condition: resource.id == request.auth.sub
        columns: [id, email, name]
  products:
    select: { roles: [reader], condition: 'resource.active == true && resource.title == "x"' }
`,
};

describe('stk apply against real PostgreSQL', () => {
  let hub: Hub;
  let cfg: string;
  let owner: string;
  let main: TestDb;
  let reports: TestDb;
  let dir: string;
  const SECRET = rememberSecret('db-password', 'Pw' + randomBytes(12).toString('hex'));
  const seen: string[] = [];

  const stk = async (args: string[], token = owner): Promise<RunResult> => {
    const r = await runStk(args, { env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: token } });
    seen.push(r.output);
    return r;
  };
  const apply = (...extra: string[]) => stk(['apply', '--project', 'shop', '--env', 'dev', '--dir', dir, ...extra]);
  const applyJson = async (...extra: string[]) => {
    const r = await apply('--json', ...extra);
    expect(r.code, r.output).toBe(0);
    return JSON.parse(r.stdout) as {
      releaseId: string | null;
      reused: boolean;
      ref: string | null;
      plan: Array<{ connection: string; sql: string; destructive: boolean; description: string }>;
    };
  };
  const api = (method: string, path: string, body?: unknown, token: string | null = owner) =>
    new HubApi(hub.url, null, (_m, _p, text) => seen.push(text)).request(method, path, body, token);
  const write = (files: Record<string, string>) => {
    for (const [f, content] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, f)), { recursive: true });
      writeFileSync(join(dir, f), content);
    }
  };
  const remove = (f: string) => rmSync(join(dir, f), { force: true });
  const current = async () => (await api('GET', '/api/projects/shop/envs/dev/releases/current')).json.releaseId as string | undefined;
  const withPassword = (url: string) => {
    const u = new URL(url);
    u.password = SECRET; // the test cluster trusts local connections, so any password works
    return u.toString();
  };

  /** Everything observable about the public schema, from information_schema and pg_catalog (one connection). */
  async function catalog(url: string) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      const columns = (
        await c.query(
          `SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity, identity_generation
           FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position`,
        )
      ).rows;
      const constraints = (
        await c.query(
          `SELECT conrelid::regclass::text AS tbl, conname, contype::text, pg_get_constraintdef(oid) AS def
           FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY conrelid::regclass::text, conname`,
        )
      ).rows;
      const indexes = (await c.query(`SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY tablename, indexname`)).rows;
      return { columns, constraints, indexes };
    } finally {
      await c.end();
    }
  }

  beforeAll(async () => {
    [hub, main, reports] = await Promise.all([startHub(), createTestDatabase('apply_main'), createTestDatabase('apply_reports')]);
    owner = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
    cfg = tempConfigDir();
    dir = mkdtempSync(join(tmpdir(), 'stk-apply-'));
    expect((await api('POST', '/api/projects', { name: 'shop' })).status).toBe(201);
    expect((await api('POST', '/api/projects/shop/envs', { name: 'dev' })).status).toBe(201);
    for (const [name, db] of [
      ['main', main],
      ['reports', reports],
    ] as const) {
      const r = await api('PUT', `/api/projects/shop/envs/dev/connections/${name}`, { engine: 'postgres', dbUrl: withPassword(db.url) });
      expect(r.status, JSON.stringify(r.json)).toBe(200);
    }
    write(FILES);
    seen.length = 0; // the connection responses show the masked URL; from here on nothing may
  });
  afterAll(async () => {
    await hub?.stop();
    await main?.drop();
    await reports?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  let first: string;

  it('a multi-file schema with every type, FK with as, unique, index and default creates exactly the expected catalog', async () => {
    const r = await applyJson('--ref', 'v1');
    expect(r.releaseId).toMatch(ULID);
    expect(r.reused).toBe(false);
    expect(r.ref).toBe('v1');
    expect(r.plan.every((s) => !s.destructive)).toBe(true);
    expect(r.plan.map((s) => s.connection).sort()).toContain('reports');
    first = r.releaseId!;

    const c = await catalog(main.url);
    const cols = (t: string) =>
      c.columns.filter((x) => x.table_name === t).map((x) => [x.column_name, x.data_type, x.is_nullable, x.column_default, x.is_identity]);
    expect(cols('users')).toEqual([
      ['id', 'text', 'NO', null, 'NO'],
      ['email', 'text', 'NO', null, 'NO'],
      ['name', 'text', 'YES', null, 'NO'],
      ['age', 'integer', 'NO', '0', 'NO'],
      ['created_at', 'timestamp with time zone', 'NO', 'now()', 'NO'],
    ]);
    expect(cols('products')).toEqual([
      ['id', 'text', 'NO', null, 'NO'],
      ['title', 'text', 'NO', null, 'NO'],
      ['qty', 'integer', 'NO', '1', 'NO'],
      ['views', 'bigint', 'NO', "'0'::bigint", 'NO'],
      ['price', 'numeric', 'NO', '9.99', 'NO'],
      ['rating', 'double precision', 'YES', null, 'NO'],
      ['active', 'boolean', 'NO', 'true', 'NO'],
      ['attrs', 'jsonb', 'YES', null, 'NO'],
      ['released', 'timestamp with time zone', 'YES', null, 'NO'],
      ['photo', 'bytea', 'YES', null, 'NO'],
      ['tags', 'jsonb', 'YES', null, 'NO'],
      ['label', 'text', 'NO', "'it''s new'::text", 'NO'],
      ['owner_id', 'text', 'YES', null, 'NO'],
    ]);
    expect(cols('orders')).toEqual([
      ['id', 'bigint', 'NO', null, 'YES'],
      ['product_id', 'text', 'NO', null, 'NO'],
      ['amount', 'integer', 'NO', null, 'NO'],
    ]);
    expect(c.columns.find((x) => x.table_name === 'orders' && x.column_name === 'id')!.identity_generation).toBe('BY DEFAULT');
    expect(c.columns.some((x) => x.table_name === 'events')).toBe(false); // lives on the other connection

    expect(c.constraints.map((x) => [x.tbl, x.conname, x.contype, x.def])).toEqual([
      ['orders', 'orders_pkey', 'p', 'PRIMARY KEY (id)'],
      ['orders', 'orders_product_id_fkey', 'f', 'FOREIGN KEY (product_id) REFERENCES products(id) ON UPDATE CASCADE ON DELETE CASCADE'],
      ['products', 'products_owner_id_fkey', 'f', 'FOREIGN KEY (owner_id) REFERENCES users(id) ON UPDATE RESTRICT ON DELETE SET NULL'],
      ['products', 'products_pkey', 'p', 'PRIMARY KEY (id)'],
      ['users', 'users_email_key', 'u', 'UNIQUE (email)'],
      ['users', 'users_pkey', 'p', 'PRIMARY KEY (id)'],
    ]);
    expect(c.indexes.map((x) => [x.tablename, x.indexname, x.indexdef])).toEqual([
      ['orders', 'orders_pkey', 'CREATE UNIQUE INDEX orders_pkey ON public.orders USING btree (id)'],
      ['products', 'products_owner_id_title_key', 'CREATE UNIQUE INDEX products_owner_id_title_key ON public.products USING btree (owner_id, title)'],
      ['products', 'products_pkey', 'CREATE UNIQUE INDEX products_pkey ON public.products USING btree (id)'],
      ['products', 'products_title_idx', 'CREATE INDEX products_title_idx ON public.products USING btree (title)'],
      ['users', 'users_email_key', 'CREATE UNIQUE INDEX users_email_key ON public.users USING btree (email)'],
      ['users', 'users_pkey', 'CREATE UNIQUE INDEX users_pkey ON public.users USING btree (id)'],
    ]);

    const rc = await catalog(reports.url);
    expect(rc.columns.map((x) => [x.table_name, x.column_name, x.data_type, x.is_nullable])).toEqual([
      ['events', 'id', 'text', 'NO'],
      ['events', 'kind', 'text', 'NO'],
    ]);

    // the defaults really work
    await query(main.url, `INSERT INTO users (id, email) VALUES ('u1', 'a@example.com')`);
    const [p] = await query(main.url, `INSERT INTO products (id, title, owner_id) VALUES ('p1', 't', 'u1') RETURNING qty, views, price::text, active, label`);
    expect(p).toEqual({ qty: 1, views: '0', price: '9.99', active: true, label: "it's new" });
  });

  it('re-apply is a no-op that returns the same release id', async () => {
    const before = await catalog(main.url);
    const r = await applyJson('--ref', 'v1');
    expect(r).toEqual({ releaseId: first, reused: true, ref: 'v1', plan: [], notes: [] });
    const human = await apply('--ref', 'v1');
    expect(human.code, human.output).toBe(0);
    expect(human.stdout).toContain('No schema changes.');
    expect(human.stdout).toContain(`Release: ${first} (reused)`);
    expect(await catalog(main.url)).toEqual(before);
    expect(await current()).toBe(first);
  });

  let second: string;
  it('adding a nullable column is one safe step and a new release', async () => {
    write({ 'schema/users.yaml': FILES['schema/users.yaml']!.replace('      age:', '      nickname: { type: string, nullable: true }\n      age:') });
    const r = await applyJson('--ref', 'v2');
    expect(r.plan).toEqual([
      {
        connection: 'main',
        destructive: false,
        description: 'add column users.nickname (string, nullable)',
        sql: 'ALTER TABLE "public"."users" ADD COLUMN "nickname" text',
      },
    ]);
    expect(r.releaseId).not.toBe(first);
    expect(r.reused).toBe(false);
    second = r.releaseId!;
    const [col] = await query(main.url, `SELECT is_nullable FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'nickname'`);
    expect(col).toEqual({ is_nullable: 'YES' });
    expect(await current()).toBe(second);
  });

  it('dropping a column needs --force; without it nothing changes', async () => {
    write({ 'schema/users.yaml': FILES['schema/users.yaml']! });
    const refused = await apply();
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('(409 CONFLICT)');
    expect(refused.stderr).toContain('drop column users.nickname');
    expect(refused.stderr).toContain('--force');
    expect((await query(main.url, `SELECT 1 FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'nickname'`)).length).toBe(1);
    expect(await current()).toBe(second);

    const dry = await apply('--dry-run');
    expect(dry.code, dry.output).toBe(0);
    expect(dry.stdout).toMatch(/! main: drop column users\.nickname and its data\s+\[destructive\]/);
    expect(dry.stdout).toContain('Dry run: nothing was applied.');

    const forced = await applyJson('--force', '--ref', 'v1');
    expect(forced.plan.map((s) => [s.description, s.destructive])).toEqual([['drop column users.nickname and its data', true]]);
    expect(forced.releaseId).toBe(first); // the same inputs as the first apply: the same release
    expect(forced.reused).toBe(true);
    expect((await query(main.url, `SELECT 1 FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'nickname'`)).length).toBe(0);
    expect(await current()).toBe(first);
  });

  describe('a bad schema is rejected before any DDL runs (database unchanged)', () => {
    // each case also adds a valid new table, which must not appear
    let baseline: [Awaited<ReturnType<typeof catalog>>, Awaited<ReturnType<typeof catalog>>] | undefined;
    const FRESH = { 'schema/zz-fresh.yaml': 'version: 1\ntables:\n  fresh:\n    columns:\n      x: { type: int, nullable: true }\n' };
    const cases: Array<[string, Record<string, string>, RegExp, number]> = [
      [
        'unknown type',
        { 'schema/bad.yaml': 'tables:\n  bad: { columns: { c: { type: text } } }\n' },
        /schema\/bad\.yaml: table "bad", column "c": unknown type "text"/,
        400,
      ],
      [
        'table defined twice',
        { 'schema/bad.yaml': 'tables:\n  users: {}\n' },
        /table "users" is defined twice: in schema\/bad\.yaml and in schema\/users\.yaml/,
        400,
      ],
      [
        'FK to an unknown table',
        { 'schema/bad.yaml': 'tables:\n  bad: { columns: { u: { type: string, references: { table: ghosts } } } }\n' },
        /column "u", references: unknown table "ghosts"/,
        400,
      ],
      ['FK type mismatch', { 'schema/bad.yaml': 'tables:\n  bad: { columns: { o: { type: int, references: { table: users } } } }\n' }, /type mismatch/, 400],
      [
        'FK across connections',
        { 'schema/bad.yaml': 'tables:\n  bad: { connection: reports, columns: { u: { type: string, references: { table: users } } } }\n' },
        /cannot cross connections/,
        400,
      ],
      [
        'invalid default',
        { 'schema/bad.yaml': 'tables:\n  bad: { columns: { n: { type: int, default: many } } }\n' },
        /column "n": invalid default "many"/,
        400,
      ],
      [
        'primary key repeated in columns',
        { 'schema/bad.yaml': 'tables:\n  bad: { columns: { id: { type: string } } }\n' },
        /column "id": this is the primary key/,
        400,
      ],
      [
        'generate/type conflict',
        { 'schema/bad.yaml': 'tables:\n  bad: { id: { generate: auto_increment, type: string } }\n' },
        /auto_increment always has type bigint/,
        400,
      ],
      [
        'index on an unknown column',
        { 'schema/bad.yaml': 'tables:\n  bad: { indexes: [{ columns: [nope] }] }\n' },
        /table "bad", index #1: unknown column "nope"/,
        400,
      ],
      ['YAML syntax error', { 'schema/bad.yaml': 'tables:\n  bad: { columns: [\n' }, /schema\/bad\.yaml: invalid YAML/, 400],
      [
        'unknown connection',
        { 'schema/bad.yaml': 'tables:\n  bad: { connection: warehouse }\n' },
        /connection "warehouse" \(used by bad\) does not exist in shop\/dev/,
        400,
      ],
      [
        'unsupported cast',
        { 'schema/users.yaml': FILES['schema/users.yaml']!.replace('name: { type: string, nullable: true }', 'name: { type: int, nullable: true }') },
        /cannot change type from text to integer/,
        400,
      ],
      [
        'bad CEL',
        { 'config/permissions.yaml': FILES['config/permissions.yaml']!.replace('resource.id == request.auth.sub', 'resource.id != request.auth.sub') },
        /tables\.users\.select rule #2: condition "resource\.id != request\.auth\.sub": operator "!=" is not supported/,
        400,
      ],
      [
        'CEL on an unknown column',
        { 'config/permissions.yaml': FILES['config/permissions.yaml']!.replace('resource.active', 'resource.enabled') },
        /tables\.products\.select rule #1: .*unknown column resource\.enabled/,
        400,
      ],
      ['CEL with ||', { 'config/permissions.yaml': FILES['config/permissions.yaml']!.replace('&&', '||') }, /"\|\|" is not supported/, 400],
      [
        'permissions for an unknown table',
        { 'config/permissions.yaml': FILES['config/permissions.yaml']! + '  ghosts:\n    select: { roles: [a] }\n' },
        /tables\.ghosts: unknown table "ghosts"/,
        400,
      ],
    ];
    for (const [name, files, re, status] of cases) {
      it(name, async () => {
        baseline ??= await Promise.all([catalog(main.url), catalog(reports.url)]);
        const [before, beforeReports] = baseline;
        write({ ...FRESH, ...files });
        try {
          const r = await apply();
          expect(r.code, r.output).toBe(1);
          expect(r.stderr).toMatch(re);
          expect(r.stderr).toContain(`(${status} BAD_REQUEST)`);
        } finally {
          write(FILES);
          remove('schema/bad.yaml');
          remove('schema/zz-fresh.yaml');
        }
        const [after, afterReports, cur] = await Promise.all([catalog(main.url), catalog(reports.url), current()]);
        expect(after).toEqual(before);
        expect(afterReports).toEqual(beforeReports);
        expect(cur).toBe(first);
      });
    }
  });

  it('--only schema applies DDL without a release; --only release refuses while drift remains', async () => {
    write({ 'schema/zz-extra.yaml': 'version: 1\ntables:\n  extra: {}\n' });
    try {
      const s = await applyJson('--only', 'schema');
      expect(s.releaseId).toBeNull();
      expect(s.plan.map((x) => x.description)).toEqual(['create table extra (1 columns)']);
      expect(await current()).toBe(first);

      await query(main.url, 'ALTER TABLE users ADD COLUMN sneaky int');
      const drift = await apply('--only', 'release');
      expect(drift.code).toBe(1);
      expect(drift.stderr).toMatch(/drift between the declared schema and shop\/dev: main: drop column users\.sneaky and its data .*\(409 CONFLICT\)/);
      expect(await current()).toBe(first);

      await query(main.url, 'ALTER TABLE users DROP COLUMN sneaky');
      const rel = await applyJson('--only', 'release');
      expect(rel.releaseId).toMatch(ULID);
      expect(rel.releaseId).not.toBe(first);
      expect(rel.plan).toEqual([]);
    } finally {
      remove('schema/zz-extra.yaml');
    }
    // back to the original files: the table the last release managed is now a destructive drop
    const back = await applyJson('--force');
    expect(back.plan.map((x) => [x.description, x.destructive])).toEqual([['drop table extra and all its rows', true]]);
    expect(back.releaseId).not.toBe(first); // ref differs (none vs v1)
  });

  it('bad --only values and a missing schema folder are usage errors before any request', async () => {
    const r = await apply('--only', 'schema,tables');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown: tables');
    const empty = mkdtempSync(join(tmpdir(), 'stk-empty-'));
    const m = await stk(['apply', '--project', 'shop', '--env', 'dev', '--dir', empty]);
    expect(m.code).toBe(1);
    expect(m.stderr).toContain('no schema/ directory');
    rmSync(empty, { recursive: true, force: true });
  });

  it('the API validates the body shape, the env and the project', async () => {
    const bad = await api('POST', '/api/projects/shop/envs/dev/apply', { schema: 'nope' });
    expect(bad.status).toBe(400);
    expect(bad.json.error.message).toContain('"schema" must be a list');
    const only = await api('POST', '/api/projects/shop/envs/dev/apply', { schema: [], only: ['everything'] });
    expect(only.status).toBe(400);
    const env = await api('POST', '/api/projects/shop/envs/nope/apply', { schema: [], permissions: null });
    expect(env.status).toBe(404);
    const anon = await api('POST', '/api/projects/shop/envs/dev/apply', { schema: [] }, '');
    expect(anon.status).toBe(401);
  });

  it('a deployer can apply; a viewer gets 403', async () => {
    const join = async (email: string, role: string) => {
      const inv = await api('POST', '/api/projects/shop/invites', { email, role });
      expect(inv.status, JSON.stringify(inv.json)).toBe(201);
      const acc = await api('POST', '/api/invites/accept', { email, code: inv.json.inviteCode, password: 'member-password-1' }, '');
      expect(acc.status, JSON.stringify(acc.json)).toBe(200);
      return loginToken(hub.url, email, 'member-password-1');
    };
    const deployer = await join('deployer@example.com', 'deployer');
    const viewer = await join('viewer@example.com', 'viewer');
    const ok = await stk(['apply', '--project', 'shop', '--env', 'dev', '--dir', dir, '--json'], deployer);
    expect(ok.code, ok.output).toBe(0);
    expect(JSON.parse(ok.stdout).releaseId).toMatch(ULID);
    const denied = await stk(['apply', '--project', 'shop', '--env', 'dev', '--dir', dir], viewer);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain('(403 FORBIDDEN)');
    expect(denied.stderr).toContain('project:deployer');
  });

  it('audits apply.run and release.create without SQL or URLs; the DB password appears nowhere', async () => {
    const s = openSqlite(hub.dbUrl.replace(/^sqlite:\/\//, ''), { readonly: true, fileMustExist: true });
    let rows: Array<{ action: string; detail_json: string; actor_email: string }>;
    try {
      rows = s
        .prepare(`SELECT action, detail_json, actor_email FROM audit_log WHERE action IN ('apply.run', 'release.create') ORDER BY ts`)
        .all() as typeof rows;
    } finally {
      s.close();
    }
    const creates = rows.filter((r) => r.action === 'release.create');
    expect(creates[0]!.actor_email).toBe(TEST_OWNER.email);
    expect(JSON.parse(creates[0]!.detail_json)).toMatchObject({ releaseId: first, ref: 'v1', tables: 4, connections: ['main', 'reports'] });
    const runs = rows.filter((r) => r.action === 'apply.run');
    expect(runs.length).toBeGreaterThanOrEqual(5);
    expect(JSON.parse(runs[0]!.detail_json)).toMatchObject({ releaseId: first, reused: false, ref: 'v1', steps: expect.any(Number) });
    for (const r of rows) {
      expect(r.detail_json).not.toMatch(/CREATE|ALTER|postgres:\/\//);
    }
    const everything = seen.join('\n') + hub.logs() + JSON.stringify(rows);
    expect(everything).not.toContain(SECRET);
    expect(everything).not.toContain(main.name); // apply and release output never show any part of the URL
  });
});
