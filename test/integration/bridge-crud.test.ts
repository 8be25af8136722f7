/**
 * `/call` against real PostgreSQL, in process: the Bridge is built with `buildBridge`, a hand-built
 * release (test/unit/sql-fixture.ts, the shape `stk apply` produces) is put into its release cache,
 * and the credential verifier is replaced by a test double that maps `x-test-principal` to a Principal.
 */
import { DEFAULT_HTTP } from '../../src/common/http-config.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildBridge } from '../../src/bridge/app.js';
import { RESPONSE_INFLIGHT_MAX_BYTES, RESPONSE_MAX_BYTES, loadBridgeConfig, type BridgeConfig } from '../../src/bridge/config.js';
import type { BridgeContext, Principal } from '../../src/bridge/context.js';
import { unauthorized } from '../../src/protocol/errors.js';
import { HostPolicy } from '../../src/common/net-policy.js';
import { createTestDatabase, query, TEST_ALLOW_HOSTS } from '../helpers/pg.js';
import { FIXTURE_DDL, ODD_COLUMN, ODD_TABLE, fixtureRelease } from '../unit/sql-fixture.js';

const U_ALICE = '01HALICE000000000000000000';
const U_BOB = '01HBOB00000000000000000000';
const MAX_ROWS = 50;

const principals: Record<string, Omit<Principal, 'project' | 'env'>> = {
  admin: { kind: 'apikey', sub: 'key_admin', roles: ['admin'] },
  reader: { kind: 'apikey', sub: 'key_reader', roles: ['reader'] },
  writer: { kind: 'apikey', sub: 'key_writer', roles: ['writer'] },
  moderator: { kind: 'apikey', sub: 'key_mod', roles: ['moderator'] },
  anon: { kind: 'apikey', sub: 'key_anon', roles: [] },
  alice: { kind: 'enduser', sub: U_ALICE, roles: ['authenticated'] },
  bob: { kind: 'enduser', sub: U_BOB, roles: ['authenticated'] },
  fakeauth: { kind: 'apikey', sub: 'key_x', roles: ['authenticated'] },
};

const SERVICE = { 'x-santokit-service-token': 'test-service-token' };

function testConfig(over: Partial<BridgeConfig> = {}): BridgeConfig {
  return {
    port: 0,
    host: '127.0.0.1',
    hubUrls: [],
    serviceToken: 'test-service-token',
    bridgeId: 'bridge-crud-test',
    disableAuth: false,
    selectMaxRows: MAX_ROWS,
    queryTimeoutMs: 2000,
    maxStaleMs: 3600_000,
    rateLimitPerApiKey: 100000,
    invalidKeyLimitPerMin: 100,
    rateLimit: { redisUrl: undefined, syncMs: 100, windowMs: 60_000, timeoutMs: 500 },
    refusalLogMs: 10_000,
    poolMax: 4,
    connectionAllow: HostPolicy.parse(TEST_ALLOW_HOSTS),
    responseMaxBytes: RESPONSE_MAX_BYTES,
    responseInflightMaxBytes: RESPONSE_INFLIGHT_MAX_BYTES,
    sync: { heartbeatMs: 10_000, maxBackoffMs: 5000, usageIntervalMs: 60_000, initialTimeoutMs: 0 },
    http: DEFAULT_HTTP,
    ...over,
  };
}

interface Reply {
  status: number;
  body: { data?: unknown; error?: { code: string; message: string; requestId: string } };
  raw: string;
}

let app: FastifyInstance;
let ctx: BridgeContext;
let db: Awaited<ReturnType<typeof createTestDatabase>>;
let db2: Awaited<ReturnType<typeof createTestDatabase>>;

async function call(who: string | null, path: string, params?: unknown, headers: Record<string, string> = {}, env = 'dev'): Promise<Reply> {
  const h: Record<string, string> = { 'content-type': 'application/json', ...headers };
  if (who) {
    h['x-test-principal'] = who;
    h['x-test-env'] = env;
  }
  const res = await app.inject({ method: 'POST', url: '/call', headers: h, payload: JSON.stringify(params === undefined ? { path } : { path, params }) });
  return { status: res.statusCode, body: res.json(), raw: res.body };
}
function rows(r: Reply) {
  expect(r.status, r.raw).toBe(200);
  return r.body.data as Array<Record<string, unknown>>;
}
function row(r: Reply) {
  expect(r.status, r.raw).toBe(200);
  return r.body.data as Record<string, unknown>;
}

function expectError(r: Reply, status: number, message?: RegExp) {
  expect(r.status, r.raw).toBe(status);
  expect(r.body.error?.requestId).toMatch(/^[0-9A-Z]{26}$/);
  if (message) expect(r.body.error?.message).toMatch(message);
}

beforeAll(async () => {
  db = await createTestDatabase('bridgecrud');
  db2 = await createTestDatabase('bridgecrud2');
  await query(db.url, FIXTURE_DDL);
  await query(
    db.url,
    `CREATE TABLE slow (id text PRIMARY KEY, label text);
    CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(20); RETURN NEW; END $$;
    CREATE TRIGGER slow_insert BEFORE INSERT ON slow FOR EACH ROW EXECUTE FUNCTION slow_down();`,
  );
  await query(db.url, `INSERT INTO users (id, email, name) VALUES ('${U_ALICE}', 'alice@example.com', 'Alice'), ('${U_BOB}', 'bob@example.com', 'Bob')`);
  await query(
    db.url,
    `INSERT INTO posts (id, title, author_id, published, status) VALUES
    ('p_a1', 'Alice one', '${U_ALICE}', true, 'draft'), ('p_a2', 'Alice two', '${U_ALICE}', false, 'flagged'),
    ('p_b1', 'Bob one', '${U_BOB}', true, 'flagged'), ('p_b2', 'Bob two', '${U_BOB}', false, 'draft')`,
  );
  await query(db2.url, FIXTURE_DDL);
  await query(db2.url, `INSERT INTO clients (code, note) VALUES ('in-db2', 'second database')`);

  ({ app, ctx } = await buildBridge(testConfig(), { logger: false }));
  ctx.credentials = {
    authenticate(req) {
      const name = req.headers['x-test-principal'];
      const p = typeof name === 'string' ? principals[name] : undefined;
      if (!p) throw unauthorized('no credential');
      return { ...p, roles: [...p.roles], project: 'shop', env: String(req.headers['x-test-env'] ?? 'dev') };
    },
  };
  const ir = fixtureRelease();
  ir.schema.tables.slow = {
    name: 'slow',
    connection: 'main',
    primaryKey: { name: 'id', type: 'string', generate: 'ulid' },
    columns: [{ name: 'label', type: 'string', nullable: true, unique: false }],
    indexes: [],
  };
  ir.permissions.tables.slow = { insert: [{ roles: ['admin'], columns: null }] };
  const releases = ctx.releases;
  releases.set('shop', 'dev', ir, { main: db.url });
  // an env whose database is down, and one with connections but no release yet
  releases.set('shop', 'down', fixtureRelease('rel_down'), { main: 'postgres://postgres@127.0.0.1:1/nothing' });
  releases.set('shop', 'empty', null, { main: db.url });
  await app.ready();
});

afterAll(async () => {
  await app?.close();
  await db?.drop();
  await db2?.drop();
});

describe('select', () => {
  it('returns {"data":[rows]} with every type in its JSON form', async () => {
    const ins = await call('admin', 'db/everything/insert', {
      data: {
        s: 'héllo "wörld"',
        i: -7,
        b: '9007199254740993',
        f: 1.5,
        d: '12345678901234567890.123456789',
        flag: true,
        doc: { nested: [1, 'two', null] },
        ts: '2024-05-01T10:20:30.123456Z',
        raw: Buffer.from([0, 1, 2, 255]).toString('base64'),
        tags: ['a', 'b'],
        grid: [[1, 2], []],
      },
    });
    expect(ins.status, ins.raw).toBe(200);
    const id = row(ins).id as string;
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const r = await call('admin', 'db/everything/select', { where: { id } });
    expect(r.status).toBe(200);
    expect(rows(r)).toEqual([
      {
        id,
        s: 'héllo "wörld"',
        i: -7,
        b: '9007199254740993',
        f: 1.5,
        d: '12345678901234567890.123456789',
        flag: true,
        doc: { nested: [1, 'two', null] },
        ts: '2024-05-01T10:20:30.123456Z',
        raw: 'AAEC/w==',
        tags: ['a', 'b'],
        grid: [[1, 2], []],
      },
    ]);
  });

  it('supports every where operator', async () => {
    const seed = [
      { s: 'apple', i: 1, b: '10', f: 0.5, d: '1.10', flag: true, ts: '2024-01-01T00:00:00Z', raw: 'YQ==', doc: { k: 1 }, tags: ['x'] },
      { s: 'banana', i: 2, b: '20', f: 1.5, d: '2.20', flag: false, ts: '2024-06-01T00:00:00Z', raw: 'Yg==', doc: { k: 2 }, tags: [] },
      { s: 'cherry', i: 3, b: '30', f: 2.5, d: '3.30', flag: null, ts: null, raw: null, doc: null, tags: null },
    ];
    const ins = await call('admin', 'db/everything/insert', { data: seed.map((x) => ({ ...x, grid: [[0]] })) });
    expect(ins.status, ins.raw).toBe(200);
    expect(rows(ins)).toHaveLength(3);
    const names = async (where: unknown) => {
      const r = await call('admin', 'db/everything/select', { where: { ...(where as object), grid: [[0]] }, select: ['s'], orderBy: { s: 'asc' } });
      expect(r.status, r.raw).toBe(200);
      return rows(r).map((x) => x.s);
    };
    expect(await names({ s: 'apple' })).toEqual(['apple']);
    expect(await names({ i: { $eq: 2 } })).toEqual(['banana']);
    expect(await names({ i: { $ne: 2 } })).toEqual(['apple', 'cherry']);
    expect(await names({ b: { $gt: '10' } })).toEqual(['banana', 'cherry']);
    expect(await names({ f: { $gte: 1.5 } })).toEqual(['banana', 'cherry']);
    expect(await names({ d: { $lt: '2.2' } })).toEqual(['apple']);
    expect(await names({ ts: { $lte: '2024-01-01T00:00:00.000Z' } })).toEqual(['apple']);
    expect(await names({ s: { $in: ['apple', 'cherry', 'nope'] } })).toEqual(['apple', 'cherry']);
    expect(await names({ i: { $notIn: [1, 3] } })).toEqual(['banana']);
    expect(await names({ s: { $like: '%an%' } })).toEqual(['banana']);
    expect(await names({ flag: { $isNull: true } })).toEqual(['cherry']);
    expect(await names({ raw: { $isNotNull: true } })).toEqual(['apple', 'banana']);
    expect(await names({ flag: null })).toEqual(['cherry']);
    expect(await names({ raw: { $in: ['YQ=='] } })).toEqual(['apple']);
    expect(await names({ doc: { k: 2 } })).toEqual(['banana']);
    expect(await names({ tags: ['x'] })).toEqual(['apple']);
    expect(await names({ i: { $gt: 1, $lt: 3 } })).toEqual(['banana']);
  });

  it('orders by several keys, pages with limit/offset, limit 0 is empty', async () => {
    await call('admin', 'db/counters/insert', {
      data: [
        { label: 'c', hits: 1 },
        { label: 'a', hits: 2 },
        { label: 'b', hits: 2 },
      ],
    });
    const r = await call('admin', 'db/counters/select', {
      select: ['label'],
      orderBy: [{ hits: 'desc' }, { label: 'asc' }],
      where: { label: { $in: ['a', 'b', 'c'] } },
    });
    expect(rows(r).map((x) => x.label)).toEqual(['a', 'b', 'c']);
    const page = await call('admin', 'db/counters/select', {
      select: ['label'],
      orderBy: { label: 'asc' },
      where: { label: { $in: ['a', 'b', 'c'] } },
      limit: 1,
      offset: 1,
    });
    expect(rows(page)).toEqual([{ label: 'b' }]);
    const none = await call('admin', 'db/counters/select', { limit: 0 });
    expect(rows(none)).toEqual([]);
  });

  it('caps results at STK_SELECT_MAX_ROWS: a larger limit is 400, an unbounded oversized result is 400', async () => {
    const many = Array.from({ length: MAX_ROWS + 1 }, (_, i) => ({ label: `t${i}` }));
    expect((await call('admin', 'db/tokens/insert', { data: many })).status).toBe(200);
    expectError(await call('admin', 'db/tokens/select', { limit: MAX_ROWS + 1 }), 400, new RegExp(`at most ${MAX_ROWS}`));
    expectError(await call('admin', 'db/tokens/select', {}), 400, new RegExp(`exceeds ${MAX_ROWS} rows`));
    expect(rows(await call('admin', 'db/tokens/select', { limit: MAX_ROWS }))).toHaveLength(MAX_ROWS);
  });
});

describe('bad input → the right status, never a 500', () => {
  const cases: Array<[string, string, unknown, number, RegExp]> = [
    ['unknown table', 'db/nope/select', {}, 404, /unknown table 'nope'/],
    ['unknown op', 'db/users/upsert', {}, 400, /unknown operation 'upsert'/],
    ['bad path', 'users/select', {}, 400, /unsupported path/],
    ['logics path', 'logics/do_it', {}, 400, /unsupported path/],
    ['unknown column', 'db/users/select', { where: { nope: 1 } }, 400, /unknown column 'nope'/],
    ['unknown operator', 'db/users/select', { where: { name: { $regex: '.*' } } }, 400, /unknown operator '\$regex'/],
    ['wrong type', 'db/everything/select', { where: { i: '1' } }, 400, /column 'i' expects an integer in int32 range/],
    ['int out of range', 'db/everything/insert', { data: { i: 2 ** 31 } }, 400, /column 'i' expects/],
    ['bad timestamp', 'db/everything/insert', { data: { ts: 'tomorrow' } }, 400, /column 'ts' expects an ISO-8601/],
    ['bad base64', 'db/everything/insert', { data: { raw: '***' } }, 400, /column 'raw' expects a base64/],
    ['array element mismatch', 'db/everything/insert', { data: { tags: ['a', 1] } }, 400, /column 'tags' expects an array of string/],
    ['non-array for array', 'db/everything/insert', { data: { tags: 'a' } }, 400, /column 'tags' expects an array/],
    ['empty $in', 'db/users/select', { where: { id: { $in: [] } } }, 400, /non-empty array/],
    ['$in over 1000', 'db/users/select', { where: { id: { $in: Array.from({ length: 1001 }, (_, i) => `x${i}`) } } }, 400, /at most 1000/],
    ['negative limit', 'db/users/select', { limit: -1 }, 400, /limit must be a non-negative integer/],
    ['bad orderBy direction', 'db/users/select', { orderBy: { name: 'sideways' } }, 400, /"asc" or "desc"/],
    ['orderBy unknown column', 'db/users/select', { orderBy: { nope: 'asc' } }, 400, /unknown column 'nope'/],
    ['unknown expand', 'db/posts/select', { expand: ['editor'] }, 400, /unknown relation 'editor'/],
    ['client id for ulid', 'db/users/insert', { data: { id: 'mine', email: 'x@y' } }, 400, /primary key is generated/],
    ['client id for auto_increment', 'db/counters/insert', { data: { id: '5', label: 'x' } }, 400, /primary key is generated/],
    ['missing client id', 'db/clients/insert', { data: { note: 'x' } }, 400, /primary key 'code' is required/],
    ['update without where', 'db/users/update', { data: { name: 'x' } }, 400, /where is required/],
    ['delete with empty where', 'db/users/delete', { where: {} }, 400, /where is required/],
    ['update without data', 'db/users/update', { where: { id: 'x' } }, 400, /update needs data/],
    ['insert without data', 'db/users/insert', {}, 400, /insert needs data/],
    ['params not an object', 'db/users/select', [1], 400, /params must be an object/],
    ['unknown param', 'db/users/select', { filter: {} }, 400, /unknown parameter 'filter'/],
    ['null into not-null', 'db/users/insert', { data: { email: null } }, 400, /'email' must not be null/],
  ];
  for (const [name, path, params, status, msg] of cases) {
    it(name, async () => expectError(await call('admin', path, params), status, msg));
  }

  it('body shape', async () => {
    const noPath = await app.inject({
      method: 'POST',
      url: '/call',
      headers: { 'content-type': 'application/json', 'x-test-principal': 'admin' },
      payload: '{"params":{}}',
    });
    expect(noPath.statusCode).toBe(400);
    expect(noPath.json().error.message).toMatch(/path is required/);
    const arr = await app.inject({ method: 'POST', url: '/call', headers: { 'content-type': 'application/json', 'x-test-principal': 'admin' }, payload: '[]' });
    expect(arr.statusCode).toBe(400);
    const proto = await app.inject({
      method: 'POST',
      url: '/call',
      headers: { 'content-type': 'application/json', 'x-test-principal': 'admin' },
      payload: '{"path":"db/users/select","params":{"where":{"__proto__":{"x":1}}}}',
    });
    expect(proto.statusCode).toBe(400);
  });

  // the API-key verifier's own checks (max-stale, hint headers vs the key's binding): test/unit/credentials.test.ts
  // and, with real keys, test/integration/bridge-crud-e2e.test.ts
  it('no credential → 401', async () => {
    expectError(await call(null, 'db/users/select'), 401);
  });

  it('no release loaded → 503 telling to run stk apply', async () => {
    expectError(await call('admin', 'db/users/select', {}, {}, 'empty'), 503, /no release loaded for shop\/empty; run stk apply/);
  });

  it('no matching rule → 403', async () => {
    expectError(await call('writer', 'db/users/select'), 403, /allows select/);
    expectError(await call('reader', 'db/users/delete', { where: { id: U_ALICE } }), 403);
    expectError(await call('fakeauth', 'db/users/select'), 403); // an API key never satisfies `authenticated`
  });
});

describe('column rules on all four ops', () => {
  it('select: disallowed columns are dropped (default and explicit select)', async () => {
    const r = await call('reader', 'db/users/select', { orderBy: { id: 'asc' }, where: { id: { $in: [U_ALICE, U_BOB] } } });
    expect(rows(r)).toEqual([
      { id: U_ALICE, name: 'Alice' },
      { id: U_BOB, name: 'Bob' },
    ]);
    const e = await call('reader', 'db/users/select', { select: ['name', 'email'], where: { id: U_ALICE } });
    expect(rows(e)).toEqual([{ name: 'Alice' }]);
    expectError(await call('reader', 'db/users/select', { where: { email: 'alice@example.com' } }), 400, /outside this credential's column allow-list/);
  });

  it('insert: a disallowed column → 400; allowed ones insert and the row comes back projected', async () => {
    expectError(
      await call('writer', 'db/users/insert', { data: { email: 'w@example.com', created_at: '2020-01-01T00:00:00Z' } }),
      400,
      /'created_at' is not writable/,
    );
    const ok = await call('writer', 'db/users/insert', { values: { email: 'w@example.com', name: 'W' } });
    expect(ok.status, ok.raw).toBe(200);
    expect(Object.keys(row(ok)).sort()).toEqual(['email', 'id', 'name']);
    expect(row(ok).id).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
  });

  it('update: a disallowed column → 400; allowed ones update, returned rows projected', async () => {
    expectError(await call('alice', 'db/users/update', { where: { id: U_ALICE }, data: { email: 'evil@example.com' } }), 400, /'email' is not writable/);
    const r = await call('alice', 'db/users/update', { where: { id: U_ALICE }, data: { name: 'Alice A.' } });
    expect(r.status, r.raw).toBe(200);
    expect(rows(r)).toEqual([{ id: U_ALICE, name: 'Alice A.' }]);
  });

  it('delete: where may only use allowed columns', async () => {
    await call('admin', 'db/counters/insert', { data: { label: 'doomed', hits: 9 } });
    expectError(await call('reader', 'db/counters/delete', { where: { hits: 9 } }), 400, /'hits' is outside/);
    const r = await call('reader', 'db/counters/delete', { where: { label: 'doomed' } });
    expect(r.body).toEqual({ data: { affected: 1 } });
  });
});

describe('CEL row filters', () => {
  it('owner filter on select: each end user sees only their rows', async () => {
    const a = await call('alice', 'db/posts/select', { orderBy: { id: 'asc' } });
    expect(rows(a).map((p) => p.id)).toEqual(['p_a1', 'p_a2']);
    const b = await call('bob', 'db/posts/select', { where: { id: 'p_a1' } });
    expect(rows(b)).toEqual([]); // narrowing never widens
    const me = await call('alice', 'db/users/select', {});
    expect(rows(me).map((u) => u.id)).toEqual([U_ALICE]);
  });

  it('literal filters: public sees published posts only (with its columns); moderator sees flagged only', async () => {
    const pub = await call('anon', 'db/posts/select', { orderBy: { id: 'asc' } });
    expect(rows(pub)).toEqual([
      { id: 'p_a1', title: 'Alice one', author_id: U_ALICE },
      { id: 'p_b1', title: 'Bob one', author_id: U_BOB },
    ]);
    const mod = await call('moderator', 'db/posts/select', { select: ['id'], orderBy: { id: 'asc' } });
    expect(rows(mod)).toEqual([{ id: 'p_a2' }, { id: 'p_b1' }]);
  });

  it('owner filter on update: outside the filter affects 0 rows', async () => {
    const miss = await call('alice', 'db/posts/update', { where: { id: 'p_b2' }, data: { title: 'hijacked' } });
    expect(miss.status).toBe(200);
    expect(miss.body).toEqual({ data: [] });
    const hit = await call('alice', 'db/posts/update', { where: { id: 'p_a1' }, data: { title: 'Alice one (edited)' } });
    expect(rows(hit)).toHaveLength(1);
    expect(rows(hit)[0]!.title).toBe('Alice one (edited)');
    expect((await query(db.url, "SELECT title FROM posts WHERE id = 'p_b2'"))[0]!.title).toBe('Bob two');
  });

  it('literal filter on update and delete (moderator: flagged only)', async () => {
    const upd = await call('moderator', 'db/posts/update', { where: { id: { $in: ['p_a1', 'p_b1'] } }, data: { status: 'reviewed' } });
    expect(rows(upd).map((p) => p.id)).toEqual(['p_b1']);
    await query(db.url, "INSERT INTO posts (id, title, author_id, status) VALUES ('p_f1', 'flagged one', $1, 'flagged'), ('p_d1', 'draft one', $1, 'draft')", [
      U_BOB,
    ]);
    const del = await call('moderator', 'db/posts/delete', { where: { id: { $in: ['p_f1', 'p_d1'] } } });
    expect(del.body).toEqual({ data: { affected: 1 } });
    expect((await query(db.url, "SELECT id FROM posts WHERE id IN ('p_f1','p_d1')")).map((r) => r.id)).toEqual(['p_d1']);
  });

  it('owner filter on delete, and on insert the condition is enforced (filled in when absent)', async () => {
    const other = await call('alice', 'db/posts/delete', { where: { id: 'p_d1' } });
    expect(other.body).toEqual({ data: { affected: 0 } });
    expectError(await call('alice', 'db/posts/insert', { data: { title: 'as bob', author_id: U_BOB } }), 403, /does not satisfy the insert condition/);
    const mine = await call('alice', 'db/posts/insert', { data: { title: 'mine' } });
    expect(mine.status, mine.raw).toBe(200);
    expect(row(mine).author_id).toBe(U_ALICE);
    const gone = await call('alice', 'db/posts/delete', { where: { id: row(mine).id } });
    expect(gone.body).toEqual({ data: { affected: 1 } });
    expectError(await call('alice', 'db/posts/update', { where: { id: 'p_a1' }, data: { author_id: U_BOB } }), 400, /not writable/);
  });
});

describe('expand', () => {
  it('one hop via references.as, with the target columns and filter', async () => {
    const r = await call('admin', 'db/posts/select', {
      where: { id: { $in: ['p_a2', 'p_b2'] } },
      expand: ['author'],
      orderBy: { id: 'asc' },
      select: ['id', 'title'],
    });
    expect(r.status, r.raw).toBe(200);
    expect(rows(r).map((p) => [p.id, (p.author as { email: string }).email, 'author_id' in p])).toEqual([
      ['p_a2', 'alice@example.com', false],
      ['p_b2', 'bob@example.com', false],
    ]);
    const reader = await call('reader', 'db/posts/select', { where: { id: 'p_a1' }, expand: ['author'] });
    expect(rows(reader)[0]!.author).toEqual({ id: U_ALICE, name: 'Alice A.' });
    // alice may read posts of hers only, and users row of hers only: the author of her post resolves
    const alice = await call('alice', 'db/posts/select', { where: { id: 'p_a2' }, expand: ['author'] });
    expect(rows(alice)[0]!.author).toEqual({ id: U_ALICE, email: 'alice@example.com', name: 'Alice A.' });
  });

  it('a target the caller may not select → 403', async () => {
    expectError(await call('anon', 'db/posts/select', { expand: ['author'] }), 403, /expand 'author'/);
  });

  it('rows the target filter hides expand to null', async () => {
    await query(db.url, "INSERT INTO posts (id, title, author_id, status) VALUES ('p_b4', 'Bob flagged', $1, 'flagged')", [U_BOB]);
    // an end user who moderates: posts via the moderator rule (flagged ones), users via the owner rule (own row only)
    principals.modalice = { kind: 'enduser', sub: U_ALICE, roles: ['moderator', 'authenticated'] };
    const r = await call('modalice', 'db/posts/select', {
      where: { id: { $in: ['p_a2', 'p_b4'] } },
      expand: ['author'],
      orderBy: { id: 'asc' },
      select: ['id'],
    });
    expect(r.status, r.raw).toBe(200);
    expect(rows(r)).toEqual([
      { id: 'p_a2', author: { id: U_ALICE, email: 'alice@example.com', name: 'Alice A.' } },
      { id: 'p_b4', author: null },
    ]);
    expectError(await call('moderator', 'db/posts/select', { expand: ['author'] }), 403); // an API key moderator has no users rule
  });
});

describe('insert ids', () => {
  it('generates ulid, uuid_v4, uuid_v7, nanoid; reads auto_increment back; requires client ids', async () => {
    const u = await call('admin', 'db/users/insert', { data: { email: 'ids@example.com' } });
    expect(row(u).id).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
    expect(row(u).created_at).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
    const e = await call('admin', 'db/events/insert', { data: [{ kind: 'a' }, { kind: 'b' }] });
    expect(rows(e).map((x) => x.kind)).toEqual(['a', 'b']);
    for (const x of rows(e)) expect(x.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const n = await call('admin', 'db/tokens/insert', { data: { label: 'n' } });
    expect(row(n).id).toMatch(/^[A-Za-z0-9_-]{21}$/);
    const c1 = await call('admin', 'db/counters/insert', { data: { label: 'auto-1' } });
    const c2 = await call('admin', 'db/counters/insert', { data: { label: 'auto-2' } });
    expect(row(c1).id).toMatch(/^\d+$/);
    expect(BigInt(row(c2).id as string)).toBe(BigInt(row(c1).id as string) + 1n);
    expect(row(c1).hits).toBe(0);
    const cl = await call('admin', 'db/clients/insert', { data: { code: 'my-own-id', note: 'x' } });
    expect(row(cl)).toEqual({ code: 'my-own-id', note: 'x' });
  });
});

describe('constraint violations', () => {
  it('duplicate unique value → 409 naming the column, never the value', async () => {
    const r = await call('admin', 'db/users/insert', { data: { email: 'alice@example.com' } });
    expectError(r, 409, /'email'/);
    expect(r.raw).not.toContain('alice@example.com');
    const dupKey = await call('admin', 'db/clients/insert', { data: { code: 'my-own-id' } });
    expectError(dupKey, 409, /'code'/);
  });

  it('missing referenced row → 400 naming the column; deleting a referenced row → 409', async () => {
    const fk = await call('admin', 'db/posts/insert', { data: { title: 't', author_id: 'no-such-user' } });
    expectError(fk, 400, /'author_id' must reference an existing row of 'users'/);
    expect(fk.raw).not.toContain('no-such-user');
    const del = await call('admin', 'db/users/delete', { where: { id: U_BOB } });
    expectError(del, 409, /still referenced from 'posts' \('author_id'\)/);
    expect(del.raw).not.toContain(U_BOB);
  });

  it('a value the column cannot hold → 400', async () => {
    const r = await call('admin', 'db/everything/insert', { data: { ts: '0000-01-01T00:00:00Z' } });
    expectError(r, 400, /invalid date\/time value/);
    expect(r.raw).not.toContain('0000-01-01');
  });
});

describe('injection corpus', () => {
  const nasty = [
    "'; DROP TABLE canary; --",
    '"; DROP TABLE canary; --',
    "Robert'); DELETE FROM canary; --",
    '/* comment */ 1=1',
    '-- trailing',
    '$1; SELECT pg_sleep(10)',
    '\\x00\\\\ back\\slash',
    'ünïcödé 🚀 ∑',
    "' OR '1'='1",
    '); TRUNCATE canary CASCADE; (',
  ];

  it('as values in every value position: stored and matched literally', async () => {
    for (const v of nasty) {
      const ins = await call('admin', `db/${ODD_TABLE}/insert`, { data: { [ODD_COLUMN]: v } });
      expect(ins.status, ins.raw).toBe(200);
      expect(row(ins)[ODD_COLUMN]).toBe(v);
      const eq = await call('admin', `db/${ODD_TABLE}/select`, { where: { [ODD_COLUMN]: v } });
      expect(rows(eq).map((r) => r[ODD_COLUMN])).toEqual([v]);
      const ops = await call('admin', `db/${ODD_TABLE}/select`, {
        where: { [ODD_COLUMN]: { $in: [v, 'x'], $like: v.replace(/[%_\\]/g, '\\$&'), $ne: 'zzz', $gte: v } },
      });
      expect(rows(ops), JSON.stringify(v)).toHaveLength(1);
      const upd = await call('admin', `db/${ODD_TABLE}/update`, { where: { [ODD_COLUMN]: v }, data: { [ODD_COLUMN]: v + '!' } });
      expect(rows(upd)).toHaveLength(1);
      const del = await call('admin', `db/${ODD_TABLE}/delete`, { where: { [ODD_COLUMN]: { $in: [v + '!'] } } });
      expect(del.body).toEqual({ data: { affected: 1 } });
      const json = await call('admin', 'db/everything/insert', { data: { s: v, doc: { [v]: v }, tags: [v] } });
      expect(json.status, json.raw).toBe(200);
      const back = await call('admin', 'db/everything/select', { where: { id: row(json).id, doc: { $eq: { [v]: v } }, tags: [v] }, select: ['s', 'doc'] });
      expect(rows(back)).toEqual([{ s: v, doc: { [v]: v } }]);
    }
  });

  it('as identifiers (column keys, select, orderBy, expand, path): 400/404, nothing reaches SQL', async () => {
    for (const v of nasty.concat(['id"', 'id" --', '"id"', 'id; --', 'name"; DROP TABLE canary; --'])) {
      expectError(await call('admin', 'db/users/select', { where: { [v]: 1 } }), 400, /unknown column/);
      expectError(await call('admin', 'db/users/select', { select: ['id', v] }), 400, /unknown column/);
      expectError(await call('admin', 'db/users/select', { orderBy: { [v]: 'asc' } }), 400, /unknown column/);
      expectError(await call('admin', 'db/users/select', { orderBy: { id: v } }), 400, /direction/);
      expectError(await call('admin', 'db/users/select', { where: { id: { [v]: 1 } } }), 400, /unknown operator/);
      expectError(await call('admin', 'db/posts/select', { expand: [v] }), 400, /unknown relation/);
      expectError(await call('admin', 'db/users/insert', { data: { email: 'x@y', [v]: 'x' } }), 400, /unknown column/);
      expectError(await call('admin', 'db/users/update', { where: { id: 'x' }, data: { [v]: 'x' } }), 400, /unknown column/);
      expectError(await call('admin', `db/${v}/select`), v.includes('/') ? 400 : 404);
      expectError(await call('admin', `db/users/${v}`), 400);
    }
  });

  it('odd identifiers from the schema work end to end, and expand across them', async () => {
    const ins = await call('admin', `db/${ODD_TABLE}/insert`, { data: { [ODD_COLUMN]: 'ok', 'ref"id': U_ALICE } });
    expect(ins.status, ins.raw).toBe(200);
    const r = await call('admin', `db/${ODD_TABLE}/select`, { where: { 'ref"id': U_ALICE }, expand: ['owner'], orderBy: { [ODD_COLUMN]: 'desc' } });
    expect(rows(r)[0]!.owner).toMatchObject({ id: U_ALICE });
  });

  it('the canary table is intact', async () => {
    expect(await query(db.url, 'SELECT id, note FROM canary')).toEqual([{ id: 1, note: 'still here' }]);
  });
});

describe('database failures', () => {
  it('a query over the timeout → 504 without SQL or values', async () => {
    const r = await call('admin', 'db/slow/insert', { data: { label: 'secret-value-123' } });
    expectError(r, 504, /exceeded the 2s timeout/);
    expect(r.raw).not.toMatch(/secret-value-123|INSERT|slow_down/);
    // the pool still works afterwards
    expect((await call('admin', 'db/users/select', { limit: 1 })).status).toBe(200);
  });

  it('too many queries queued on one pool → 503 before touching the database', async () => {
    const pool = ctx.releases.get('shop', 'dev')!.pools.get('main')!;
    const saved = pool.inflight;
    pool.inflight = pool.maxInflight;
    try {
      expectError(await call('admin', 'db/users/select', { limit: 1 }), 503, /too many concurrent queries on connection 'main'/);
    } finally {
      pool.inflight = saved;
    }
    expect((await call('admin', 'db/users/select', { limit: 1 })).status).toBe(200);
  });

  it('database down → 503 and not ready; a healthy env is ready', async () => {
    const r = await call('admin', 'db/users/select', {}, {}, 'down');
    expectError(r, 503, /database of connection 'main' is unavailable/);
    expect(r.raw).not.toContain('127.0.0.1:1');
    const down = await app.inject({ method: 'GET', url: '/readyz?project=shop&env=down', headers: SERVICE });
    expect(down.statusCode).toBe(503);
    const up = await app.inject({ method: 'GET', url: '/readyz?project=shop&env=dev', headers: SERVICE });
    expect(up.statusCode).toBe(200);
    expect(up.json()).toEqual({ ok: true });
    const empty = await app.inject({ method: 'GET', url: '/readyz?project=shop&env=empty', headers: SERVICE });
    expect(empty.statusCode).toBe(503);
    // without the service token a project's readiness is not told, whether the names exist or not
    for (const q of ['project=shop&env=dev', 'project=shop&env=down', 'project=nope&env=nope']) {
      const anon = await app.inject({ method: 'GET', url: `/readyz?${q}` });
      expect(anon.statusCode, q).toBe(401);
      expect(anon.json().error.code).toBe('UNAUTHORIZED');
      const wrong = await app.inject({ method: 'GET', url: `/readyz?${q}`, headers: { 'x-santokit-service-token': 'not-the-token' } });
      expect(wrong.statusCode, q).toBe(401);
    }
  });
});

describe('release cache and pools', () => {
  it('pools are per (project, env, connection) even for the same URL; a changed URL swaps the pool', async () => {
    const releases = ctx.releases;
    releases.set('shop', 'twin', fixtureRelease('rel_twin'), { main: db.url });
    expect(releases.get('shop', 'twin')!.pools.get('main')).not.toBe(releases.get('shop', 'dev')!.pools.get('main'));
    const before = await call('admin', 'db/clients/select', { where: { code: 'in-db2' } }, {}, 'twin');
    expect(rows(before)).toEqual([]);
    const oldPool = releases.get('shop', 'twin')!.pools.get('main');
    releases.set('shop', 'twin', fixtureRelease('rel_twin'), { main: db2.url });
    expect(releases.get('shop', 'twin')!.pools.get('main')).not.toBe(oldPool);
    const after = await call('admin', 'db/clients/select', { where: { code: 'in-db2' } }, {}, 'twin');
    expect(rows(after)).toEqual([{ code: 'in-db2', note: 'second database' }]);
    // same URL again: the pool is kept
    const kept = releases.get('shop', 'twin')!.pools.get('main');
    releases.set('shop', 'twin', fixtureRelease('rel_twin2'), { main: db2.url });
    expect(releases.get('shop', 'twin')!.pools.get('main')).toBe(kept);
    expect(releases.get('shop', 'twin')!.release.releaseId).toBe('rel_twin2');
    await releases.delete('shop', 'twin');
    expectError(await call('admin', 'db/clients/select', {}, {}, 'twin'), 503, /no release loaded/);
  });

  it('a table whose connection has no URL → 503 naming the connection', async () => {
    const releases = ctx.releases;
    releases.set('shop', 'noconn', fixtureRelease('rel_nc'), {});
    expectError(await call('admin', 'db/users/select', {}, {}, 'noconn'), 503, /connection 'main' of table 'users' is not configured/);
    // a URL the driver cannot parse leaves the connection unconfigured instead of failing the update
    releases.set('shop', 'noconn', fixtureRelease('rel_nc2'), { main: 'postgres://u:secret-pw@[broken' });
    const r = await call('admin', 'db/users/select', {}, {}, 'noconn');
    expectError(r, 503, /not configured/);
    expect(r.raw).not.toContain('secret-pw');
    await releases.delete('shop', 'noconn');
  });
});

describe('STK_DISABLE_AUTH', () => {
  it('is refused unless the Bridge listens on loopback only', () => {
    const base = { STK_SERVICE_TOKEN: 'dev-token-xxxxxxxx', STK_DISABLE_AUTH: 'true' };
    for (const host of ['0.0.0.0', '::', '10.0.0.5', 'bridge.internal']) {
      expect(() => loadBridgeConfig({ ...base, STK_BRIDGE_HOST: host }), host).toThrow(
        /STK_DISABLE_AUTH=true .* refused unless STK_BRIDGE_HOST is a loopback address/,
      );
    }
    for (const host of ['127.0.0.1', '::1', 'localhost', undefined]) expect(loadBridgeConfig({ ...base, STK_BRIDGE_HOST: host }).disableAuth).toBe(true);
    expect(loadBridgeConfig({ STK_SERVICE_TOKEN: 'x'.repeat(16), STK_BRIDGE_HOST: '0.0.0.0' }).disableAuth).toBe(false);
  });

  it('needs the hint headers, then serves without credentials or permission checks', async () => {
    const dev = await buildBridge(testConfig({ disableAuth: true }), { logger: false });
    try {
      dev.ctx.releases.set('shop', 'dev', fixtureRelease(), { main: db.url });
      const miss = await dev.app.inject({
        method: 'POST',
        url: '/call',
        headers: { 'content-type': 'application/json' },
        payload: { path: 'db/users/select' },
      });
      expect(miss.statusCode).toBe(400);
      expect(miss.json().error.message).toMatch(/X-Santokit-Project and X-Santokit-Env/);
      const ok = await dev.app.inject({
        method: 'POST',
        url: '/call',
        headers: { 'content-type': 'application/json', 'x-santokit-project': 'shop', 'x-santokit-env': 'dev' },
        payload: { path: 'db/users/select', params: { where: { id: U_ALICE } } },
      });
      expect(ok.statusCode).toBe(200);
      expect(Object.keys(ok.json().data[0]).sort()).toEqual(['created_at', 'email', 'id', 'name']);
      // without a verifier the max-stale check it would make is made by the route's auth hook
      dev.ctx.isStale = () => true;
      const stale = await dev.app.inject({
        method: 'POST',
        url: '/call',
        headers: { 'content-type': 'application/json', 'x-santokit-project': 'shop', 'x-santokit-env': 'dev' },
        payload: { path: 'db/users/select' },
      });
      expect(stale.statusCode).toBe(503);
      expect(stale.json().error.message).toMatch(/max-stale window/);
    } finally {
      await dev.app.close();
    }
  });
});

describe('tables are schema-qualified', () => {
  it("a schema named after the connecting role (first on PostgreSQL's default search_path) does not capture the Bridge's statements", async () => {
    const decoy = await createTestDatabase('bridgedecoy');
    const releases = ctx.releases;
    try {
      await query(decoy.url, FIXTURE_DDL);
      // search_path is "$user", public: without qualification `users` would be this table
      await query(
        decoy.url,
        `DO $$ BEGIN EXECUTE format('CREATE SCHEMA %I', current_user); EXECUTE format('CREATE TABLE %I.users (LIKE public.users INCLUDING ALL)', current_user); END $$;
         DO $$ BEGIN EXECUTE format('INSERT INTO %I.users (id, email) VALUES (''decoy'', ''decoy@example.com'')', current_user); END $$;`,
      );
      releases.set('shop', 'decoy', fixtureRelease('rel_decoy'), { main: decoy.url });
      const ins = row(await call('admin', 'db/users/insert', { data: { email: 'real@example.com' } }, {}, 'decoy'));
      expect(rows(await call('admin', 'db/users/select', { select: ['id', 'email'] }, {}, 'decoy'))).toEqual([{ id: ins.id, email: 'real@example.com' }]);
      expect(rows(await call('admin', 'db/users/update', { where: { id: ins.id }, data: { name: 'Real' } }, {}, 'decoy'))).toHaveLength(1);
      expect(row(await call('admin', 'db/users/delete', { where: { id: ins.id } }, {}, 'decoy'))).toEqual({ affected: 1 });
      const [decoyRows] = await query<{ n: string; emails: string[] }>(decoy.url, `SELECT count(*)::text AS n, array_agg(email) AS emails FROM users`);
      expect(decoyRows).toEqual({ n: '1', emails: ['decoy@example.com'] }); // the unqualified name still finds the decoy, untouched
      expect(await query(decoy.url, 'SELECT count(*)::int AS n FROM public.users')).toEqual([{ n: 0 }]);
    } finally {
      await releases.delete('shop', 'decoy');
      await decoy.drop();
    }
  });
});
