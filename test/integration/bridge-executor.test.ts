/**
 * The Bridge's executor against real PostgreSQL: pipelined connections must keep every query's
 * answer, error and timeout its own, never queue a fast query behind a slow one, re-prepare a
 * statement whose plan the schema invalidated, and recover from connections killed under it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyBaseLogger } from 'fastify';
import { closePool, execute, openPool, ping, type Pool, type QueryContext } from '../../src/bridge/executor/index.js';
import { compileRelease } from '../../src/bridge/release-cache/compile.js';
import { AppError } from '../../src/protocol/errors.js';
import { HostPolicy } from '../../src/common/net-policy.js';
import { createTestDatabase, query, TEST_ALLOW_HOSTS } from '../helpers/pg.js';
import { FIXTURE_DDL, fixtureRelease } from '../unit/sql-fixture.js';

const silent = {
  fatal() {},
  error() {},
  warn() {},
  info() {},
  debug() {},
  trace() {},
  silent() {},
  level: 'silent',
  child: () => silent,
} as unknown as FastifyBaseLogger;
const tables = compileRelease(fixtureRelease()).tables;
const ctx = (timeoutMs = 5000): QueryContext => ({ table: tables.get('users')!, tables, op: 'select', timeoutMs, log: silent });

let db: Awaited<ReturnType<typeof createTestDatabase>>;
const pools: Pool[] = [];
function pool(max: number, queryTimeoutMs = 5000): Pool {
  const p = openPool(db.url, 'main', { max, queryTimeoutMs, allow });
  pools.push(p);
  return p;
}
const allow = HostPolicy.parse(TEST_ALLOW_HOSTS);
const q = (text: string, values: Array<string | null> = []) => ({ text, values });
/** rows without the `count` property the executor attaches */
const run = async (p: Pool, text: string, values: Array<string | null> = [], c = ctx()) => [...(await execute(p, q(text, values), c))];
async function outcome(p: Promise<unknown>): Promise<{ ok: unknown } | { code: string; status: number; message: string }> {
  try {
    const v = await p;
    return { ok: Array.isArray(v) ? [...v] : v };
  } catch (e) {
    if (!(e instanceof AppError)) throw e;
    return { code: e.code, status: e.status, message: e.message };
  }
}

beforeAll(async () => {
  db = await createTestDatabase('executor');
  await query(db.url, FIXTURE_DDL);
  await query(db.url, `CREATE TABLE shapes (id text PRIMARY KEY, n integer)`);
  await query(db.url, `INSERT INTO shapes VALUES ('a', 1)`);
});

afterAll(async () => {
  await Promise.all(pools.map((p) => closePool(p, 1)));
  await db?.drop();
});

describe('pipelined pool', () => {
  it('96 concurrent queries (just under the pool cap of 100) on two connections: each gets its own rows or its own error', async () => {
    const p = pool(2);
    const jobs: Array<Promise<void>> = [];
    for (let i = 0; i < 96; i++) {
      if (i % 3 === 0) {
        // every sixth insert reuses an email: a unique violation that must not leak into its neighbours
        const email = i % 6 === 0 ? 'dup@example.com' : `u${i}@example.com`;
        jobs.push(
          outcome(execute(p, q('INSERT INTO users (id, email) VALUES ($1::text, $2::text) RETURNING id', [`id${i}`, email]), ctx())).then((r) => {
            if (i % 6 !== 0 || i === 0) return; // the first 'dup' may win
            if ('ok' in r) expect((r.ok as Array<{ id: string }>)[0]!.id).toBe(`id${i}`);
            else expect(r.code).toBe('CONFLICT');
          }),
        );
      } else if (i % 3 === 1) {
        jobs.push(
          outcome(execute(p, q('SELECT $1::integer AS v', [i % 5 === 0 ? 'not-a-number' : String(i)]), ctx())).then((r) => {
            if (i % 5 === 0) expect(r).toMatchObject({ code: 'BAD_REQUEST', status: 400 });
            else expect(r).toEqual({ ok: [{ v: i }] });
          }),
        );
      } else {
        jobs.push(
          outcome(execute(p, q('SELECT $1::text AS s, $2::bigint AS b', [`s${i}`, String(i)]), ctx())).then((r) => {
            expect(r).toEqual({ ok: [{ s: `s${i}`, b: String(i) }] });
          }),
        );
      }
    }
    await Promise.all(jobs);
    const dups = await query<{ n: string }>(db.url, `SELECT count(*) AS n FROM users WHERE email = 'dup@example.com'`);
    expect(dups[0]!.n).toBe('1');
    expect(p.inflight).toBe(0);
  });

  it('fast queries started together with a slow one are never queued behind it', async () => {
    const p = pool(2);
    const fast = q('SELECT $1::text AS s', ['x']);
    for (let i = 0; i < 5; i++) await execute(p, fast, ctx()); // now a known-fast statement
    const order: string[] = [];
    const slow = execute(p, q('SELECT pg_sleep(1.5) IS NULL AS slept'), ctx()).then(() => order.push('slow'));
    const fasts = Array.from({ length: 40 }, (_, i) => execute(p, q('SELECT $1::text AS s', [`f${i}`]), ctx()).then(() => order.push('fast')));
    await Promise.all([slow, ...fasts]);
    expect(order.indexOf('slow')).toBe(40); // every fast query answered before the slow one
  });

  it('a statement timeout fails only its own query; pipelined neighbours succeed', async () => {
    const p = pool(1, 1000);
    const sleeper = outcome(execute(p, q('SELECT pg_sleep(3) IS NULL AS slept'), ctx(1000)));
    const others = Array.from({ length: 10 }, (_, i) => outcome(execute(p, q('SELECT $1::text AS s', [`n${i}`]), ctx(1000))));
    expect(await sleeper).toMatchObject({ code: 'GATEWAY_TIMEOUT', status: 504, message: "query on 'users' exceeded the 1s timeout" });
    expect(await Promise.all(others)).toEqual(Array.from({ length: 10 }, (_, i) => ({ ok: [{ s: `n${i}` }] })));
  });

  it('a prepared statement whose plan the schema changed is re-prepared, not failed', async () => {
    const p = pool(2);
    const sel = q('SELECT n FROM shapes WHERE id = $1::text', ['a']);
    for (let i = 0; i < 3; i++) expect(await run(p, sel.text, sel.values)).toEqual([{ n: 1 }]);
    await query(db.url, 'ALTER TABLE shapes ALTER COLUMN n TYPE text');
    expect(await run(p, sel.text, sel.values)).toEqual([{ n: '1' }]);
    await query(db.url, 'ALTER TABLE shapes ALTER COLUMN n TYPE bigint USING n::bigint');
    expect(await Promise.all(Array.from({ length: 8 }, () => run(p, sel.text, sel.values)))).toEqual(Array.from({ length: 8 }, () => [{ n: '1' }]));
  });

  it('connections killed by the server: queries in flight get 503, the next ones work on new connections', async () => {
    const p = pool(2);
    await execute(p, q('SELECT 1 AS one'), ctx());
    const slow = outcome(execute(p, q('SELECT pg_sleep(5) IS NULL AS slept'), ctx()));
    await query(db.url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'santokit-bridge' AND datname = current_database()");
    expect(await slow).toMatchObject({ code: 'SERVICE_UNAVAILABLE', status: 503, message: "database of connection 'main' is unavailable" });
    const after = await Promise.all(Array.from({ length: 6 }, (_, i) => run(p, 'SELECT $1::integer AS v', [String(i)])));
    expect(after).toEqual(Array.from({ length: 6 }, (_, i) => [{ v: i }]));
    expect(await ping(p, 2000)).toBe(true);
  });

  it('an unreachable database: every waiting query gets 503, not a hang, and ping is false', async () => {
    const p = openPool('postgres://postgres@127.0.0.1:1/nothing', 'main', { max: 2, queryTimeoutMs: 2000, allow });
    pools.push(p);
    const rs = await Promise.all(Array.from({ length: 5 }, () => outcome(execute(p, q('SELECT 1 AS one'), ctx(2000)))));
    for (const r of rs) expect(r).toMatchObject({ code: 'SERVICE_UNAVAILABLE', status: 503 });
    expect(await ping(p, 1000)).toBe(false);
  });

  it('rejects a URL it cannot parse without echoing it', () => {
    expect(() => openPool('postgres://u:secret-pw@[broken', 'main', { max: 1, queryTimeoutMs: 1000, allow })).toThrow(/not a valid URL/);
    try {
      openPool('postgres://u:secret-pw@[broken', 'main', { max: 1, queryTimeoutMs: 1000, allow });
    } catch (e) {
      expect(String((e as Error).message)).not.toContain('secret-pw');
    }
  });

  it('result types: booleans, numbers, int8/numeric as strings, json parsed, bytea as base64, timestamps as ISO strings', async () => {
    const p = pool(1);
    const [row] = await run(
      p,
      `SELECT true AS t, 2::int2 AS i2, 3::int4 AS i4, 9007199254740993::int8 AS i8, 1.5::float8 AS f, 1.10::numeric AS d,
                '{"a":[1,2]}'::jsonb AS j, '\\x0102ff'::bytea AS by, '2024-05-06 07:08:09.123456+00'::timestamptz AS ts, NULL::text AS nothing`,
    );
    expect(row).toEqual({
      t: true,
      i2: 2,
      i4: 3,
      i8: '9007199254740993',
      f: 1.5,
      d: '1.10',
      j: { a: [1, 2] },
      by: 'AQL/',
      ts: '2024-05-06T07:08:09.123456Z',
      nothing: null,
    });
  });
});
