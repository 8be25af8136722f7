import { describe, expect, it } from 'vitest';
import { AppError } from '../../src/protocol/errors.js';
import type { Principal } from '../../src/bridge/context.js';
import { compileRelease, type CompiledTable } from '../../src/bridge/release-cache/compile.js';
import { buildDelete, buildInsert, buildSelect, buildUpdate, DEFAULT } from '../../src/bridge/sql/build.js';
import { nanoid, uuidv7 } from '../../src/bridge/sql/ids.js';
import { ulid } from '../../src/common/ulid.js';
import { encodeTime } from 'ulid';
import { checkParamNames, planDelete, planExpand, planInsert, planSelect, planUpdate } from '../../src/bridge/sql/params.js';
import { qualified, quoteIdent } from '../../src/common/quote-ident.js';
import { INVALID, arrayLiteral, converter } from '../../src/bridge/sql/values.js';
import { ODD_COLUMN, ODD_TABLE, fixtureRelease } from './sql-fixture.js';

const release = compileRelease(fixtureRelease());
const t = (name: string) => release.tables.get(name)!;
const dev: Principal = { kind: 'dev', sub: 'dev', roles: [], project: 'shop', env: 'dev' };
const alice: Principal = { kind: 'enduser', sub: 'u_alice', roles: ['authenticated'], project: 'shop', env: 'dev' };
const rule = (tb: CompiledTable, p: Principal, op: 'select' | 'insert' | 'update' | 'delete') => {
  if (p.kind === 'dev') return tb.devRule;
  const r = tb.rules[op].find((x) => x.matchesAny || (x.matchesEndUser && p.kind === 'enduser') || x.roles.some((y) => p.roles.includes(y)));
  if (!r) throw new Error('no rule');
  return r;
};
const select = (table: string, params: Record<string, unknown>, p: Principal = dev, max = 100) => {
  const tb = t(table);
  return buildSelect(planSelect(tb, rule(tb, p, 'select'), p, params, max).plan);
};

function expect400(fn: () => unknown, msg: RegExp) {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(AppError);
    expect((e as AppError).status).toBe(400);
    expect((e as AppError).message).toMatch(msg);
    return;
  }
  throw new Error('expected a 400');
}

describe('quoteIdent', () => {
  it('double-quotes and doubles embedded quotes', () => {
    expect(quoteIdent('users')).toBe('"users"');
    expect(quoteIdent('a"b')).toBe('"a""b"');
    expect(quoteIdent(ODD_COLUMN)).toBe('"co""l; DROP TABLE canary; --"');
    expect(quoteIdent('ünï')).toBe('"ünï"');
  });
  it('rejects NUL and empty names', () => {
    expect(() => quoteIdent('a\u0000b')).toThrow(/NUL/);
    expect(() => quoteIdent('')).toThrow();
  });

  it('qualifies tables with their schema', () => {
    expect(qualified('users')).toBe('"public"."users"');
    expect(qualified('a"b')).toBe('"public"."a""b"');
  });
});

describe('value converters', () => {
  it('accept each type in its JSON form and reject the rest', () => {
    const cases: Array<[Parameters<typeof converter>[0], unknown, string | typeof INVALID]> = [
      [{ type: 'string' }, 'héllo', 'héllo'],
      [{ type: 'string' }, 5, INVALID],
      [{ type: 'string' }, 'a\u0000b', INVALID],
      [{ type: 'int' }, 42, '42'],
      [{ type: 'int' }, 2147483648, INVALID],
      [{ type: 'int' }, 1.5, INVALID],
      [{ type: 'int' }, '42', INVALID],
      [{ type: 'bigint' }, '9223372036854775807', '9223372036854775807'],
      [{ type: 'bigint' }, '9223372036854775808', INVALID],
      [{ type: 'bigint' }, 12, '12'],
      [{ type: 'bigint' }, 2 ** 60, INVALID],
      [{ type: 'bigint' }, '1e3', INVALID],
      [{ type: 'float' }, 1.25, '1.25'],
      [{ type: 'float' }, '1.25', INVALID],
      [{ type: 'decimal' }, '12.3400', '12.3400'],
      [{ type: 'decimal' }, 0.5, '0.5'],
      [{ type: 'decimal' }, '1; DROP', INVALID],
      [{ type: 'boolean' }, true, 'true'],
      [{ type: 'boolean' }, 'true', INVALID],
      [{ type: 'json' }, { a: [1, 'x'] }, '{"a":[1,"x"]}'],
      [{ type: 'timestamp' }, '2024-05-01T10:20:30.123Z', '2024-05-01T10:20:30.123Z'],
      [{ type: 'timestamp' }, '2024-05-01', '2024-05-01'],
      [{ type: 'timestamp' }, 'yesterday', INVALID],
      [{ type: 'timestamp' }, '2024-13-01T00:00:00Z', INVALID],
      [{ type: 'bytes' }, 'aGk=', '\\x6869'],
      [{ type: 'bytes' }, 'not base64!', INVALID],
      [{ type: 'array', items: { type: 'int' } }, [1, 2], '[1,2]'],
      [{ type: 'array', items: { type: 'int' } }, [1, 'x'], INVALID],
      [{ type: 'array', items: { type: 'int' } }, 'x', INVALID],
      [{ type: 'array', items: { type: 'array', items: { type: 'int' } } }, [[1], []], '[[1],[]]'],
      [{ type: 'array', items: { type: 'array', items: { type: 'int' } } }, [[1], [2.5]], INVALID],
      [{ type: 'array', items: { type: 'bigint' } }, [1, '2'], '["1","2"]'],
      [{ type: 'array', items: { type: 'string' } }, ['a', null], INVALID],
    ];
    for (const [spec, v, want] of cases) expect(converter(spec)(v), `${JSON.stringify(spec)} ${JSON.stringify(v)}`).toBe(want);
  });

  it('array literals escape quotes and backslashes', () => {
    expect(arrayLiteral(['a', 'b"c', 'd\\e', "'; --"])).toBe('{"a","b\\"c","d\\\\e","\'; --"}');
  });
});

describe('SQL builder (golden)', () => {
  it('select: default columns, every operator, ordering, paging', () => {
    const q = select('everything', {
      where: {
        s: { $like: 'a%', $ne: 'x' },
        i: { $gt: 1, $lte: 9 },
        b: { $in: ['1', 2] },
        f: { $notIn: [1.5] },
        flag: true,
        doc: { a: 1 },
        ts: { $gte: '2024-01-01T00:00:00Z', $lt: '2025-01-01' },
        raw: { $isNull: false },
        tags: null,
        d: { $isNotNull: true, $eq: '1.50' },
      },
      orderBy: [{ i: 'desc' }, { s: 'ASC' }],
      limit: 10,
      offset: 20,
    });
    expect(q.text).toBe(
      'SELECT "id", "s", "i", "b", "f", "d", "flag", "doc", "ts", "raw", "tags", "grid" FROM "public"."everything" WHERE ' +
        '"s" LIKE $1::text AND "s" <> $2::text AND "i" > $3::integer AND "i" <= $4::integer AND "b" = ANY($5::bigint[]) AND ' +
        '"f" <> ALL($6::double precision[]) AND "flag" = $7::boolean AND "doc" = $8::jsonb AND "ts" >= $9::timestamptz AND ' +
        '"ts" < $10::timestamptz AND "raw" IS NOT NULL AND "tags" IS NULL AND "d" IS NOT NULL AND "d" = $11::numeric ' +
        'ORDER BY "i" DESC, "s" ASC LIMIT $12::bigint OFFSET $13::bigint',
    );
    expect(q.values).toEqual(['a%', 'x', '1', '9', '{"1","2"}', '{"1.5"}', 'true', '{"a":1}', '2024-01-01T00:00:00Z', '2025-01-01', '1.50', '10', '20']);
  });

  it('select without a limit asks for one row more than the cap', () => {
    const q = select('users', {}, dev, 100);
    expect(q.text).toBe('SELECT "id", "email", "name", "created_at" FROM "public"."users" LIMIT $1::bigint');
    expect(q.values).toEqual(['101']);
  });

  it('select columns are projected, disallowed ones dropped, the permission filter ANDed first', () => {
    const q = select('users', { select: ['name', 'created_at', 'email'], where: { name: 'Al' }, limit: 5 }, alice);
    expect(q.text).toBe('SELECT "email", "name" FROM "public"."users" WHERE "id" = $1::text AND "name" = $2::text LIMIT $3::bigint');
    expect(q.values).toEqual(['u_alice', 'Al', '5']);
  });

  it('literal conditions bind their value; a public rule restricts columns', () => {
    const anon: Principal = { kind: 'apikey', sub: 'k', roles: [], project: 'shop', env: 'dev' };
    const q = select('posts', { limit: 1 }, anon);
    expect(q.text).toBe('SELECT "id", "title", "author_id" FROM "public"."posts" WHERE "published" = $1::boolean LIMIT $2::bigint');
    expect(q.values).toEqual(['true', '1']);
  });

  it('injection-shaped identifiers come out quoted, values only as parameters', () => {
    const q = select(ODD_TABLE, { where: { [ODD_COLUMN]: "x'; DROP TABLE canary; --" }, limit: 1 });
    expect(q.text).toBe(
      `SELECT "id", "co""l; DROP TABLE canary; --", "ref""id" FROM "public"."odd ""table""; --" WHERE "co""l; DROP TABLE canary; --" = $1::text LIMIT $2::bigint`,
    );
    expect(q.values[0]).toBe("x'; DROP TABLE canary; --");
  });

  it('insert: generated id, defaults for missing columns across rows, returning', () => {
    const tb = t('posts');
    const { plan, many } = planInsert(tb, tb.devRule, dev, {
      data: [
        { title: 'a', author_id: 'u1' },
        { title: 'b', author_id: 'u1', body: 'x' },
      ],
    });
    expect(many).toBe(true);
    const q = buildInsert(plan);
    expect(q.text).toBe(
      'INSERT INTO "public"."posts" ("id", "title", "body", "author_id") VALUES ($1::text, $2::text, DEFAULT, $3::text), ($4::text, $5::text, $6::text, $7::text) ' +
        'RETURNING "id", "title", "body", "author_id", "published", "status"',
    );
    expect(q.values[0]).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
    expect(q.values.slice(1, 3)).toEqual(['a', 'u1']);
  });

  it('insert into an auto_increment table with only defaults', () => {
    const tb = t('counters');
    expect(buildInsert(planInsert(tb, tb.devRule, dev, { values: { label: 'x' } }).plan).text).toBe(
      'INSERT INTO "public"."counters" ("label") VALUES ($1::text) RETURNING "id", "label", "hits"',
    );
    const all = buildInsert({ table: '"t"', columns: [], rows: [[]], returning: '"id"' });
    expect(all.text).toBe('INSERT INTO "t" DEFAULT VALUES RETURNING "id"');
    expect(buildInsert({ table: '"t"', columns: [{ q: '"id"', cast: 'bigint' }], rows: [[DEFAULT], [DEFAULT]], returning: '"id"' }).text).toBe(
      'INSERT INTO "t" ("id") VALUES (DEFAULT), (DEFAULT) RETURNING "id"',
    );
  });

  it('update: SET parameters first, then caller where, then the rule filter; returning allow-list + key', () => {
    const tb = t('users');
    const q = buildUpdate(planUpdate(tb, rule(tb, alice, 'update'), alice, { data: { name: 'A' }, where: { id: 'u_alice' } }));
    expect(q.text).toBe('UPDATE "public"."users" SET "name" = $1::text WHERE "id" = $2::text AND "id" = $3::text RETURNING "id", "name"');
    expect(q.values).toEqual(['A', 'u_alice', 'u_alice']);
  });

  it('delete with a where', () => {
    const tb = t('posts');
    const q = buildDelete(planDelete(tb, rule(tb, alice, 'delete'), alice, { where: { id: { $in: ['p1', 'p2'] } } }));
    expect(q.text).toBe('DELETE FROM "public"."posts" WHERE "id" = ANY($1::text[]) AND "author_id" = $2::text');
    expect(q.values).toEqual(['{"p1","p2"}', 'u_alice']);
  });

  it('expand: one batched query per relation with the target rule and its key column', () => {
    const rel = t('posts').relations.get('author')!;
    const { plan, strip } = planExpand(rel, alice, ['u_alice', 'u_bob']);
    expect(strip).toBe(false);
    expect(buildSelect(plan).text).toBe('SELECT "id", "email", "name" FROM "public"."users" WHERE "id" = $1::text AND "id" = ANY($2::text[])');
  });

  it('the builders refuse an update or delete without a where', () => {
    expect(() => buildDelete({ table: '"t"', where: [] })).toThrow();
    expect(() => buildUpdate({ table: '"t"', set: [{ col: { q: '"a"', cast: 'text' }, value: 'x' }], where: [], returning: '"id"' })).toThrow();
  });
});

describe('params validation (400s)', () => {
  const users = t('users');
  const every = t('everything');
  it.each([
    ['unknown column', () => planSelect(users, users.devRule, dev, { where: { nope: 1 } }, 10), /unknown column 'nope'/],
    ['unknown operator', () => planSelect(users, users.devRule, dev, { where: { name: { $regex: 'x' } } }, 10), /unknown operator '\$regex'/],
    ['wrong type', () => planSelect(every, every.devRule, dev, { where: { i: 'x' } }, 10), /column 'i' expects an integer/],
    ['like on a number', () => planSelect(every, every.devRule, dev, { where: { i: { $like: '1%' } } }, 10), /\$like is not supported for int/],
    ['$gt on json', () => planSelect(every, every.devRule, dev, { where: { doc: { $gt: 1 } } }, 10), /\$gt is not supported for json/],
    ['empty $in', () => planSelect(users, users.devRule, dev, { where: { name: { $in: [] } } }, 10), /non-empty array/],
    [
      '$in too long',
      () => planSelect(users, users.devRule, dev, { where: { name: { $in: Array.from({ length: 1001 }, (_, i) => String(i)) } } }, 10),
      /at most 1000/,
    ],
    ['$in non-scalars', () => planSelect(users, users.devRule, dev, { where: { name: { $in: [['a']] } } }, 10), /non-null scalars/],
    ['array equality on a scalar', () => planSelect(users, users.devRule, dev, { where: { name: ['a'] } }, 10), /use \{"\$in"/],
    ['null with $gt', () => planSelect(every, every.devRule, dev, { where: { i: { $gt: null } } }, 10), /null cannot be compared/],
    ['empty operator object', () => planSelect(users, users.devRule, dev, { where: { name: {} } }, 10), /empty condition/],
    ['$isNull non-boolean', () => planSelect(users, users.devRule, dev, { where: { name: { $isNull: 1 } } }, 10), /true or false/],
    [
      'too many conditions',
      () =>
        planSelect(
          every,
          every.devRule,
          dev,
          {
            where: Object.fromEntries(
              ['i', 'b', 'f', 'd', 'ts', 's'].map((c) => [
                c,
                {
                  $isNull: false,
                  $isNotNull: true,
                  $eq: null,
                  $ne: null,
                  $in: c === 'ts' ? ['2024-01-01'] : c === 's' ? ['x'] : [1],
                  $notIn: c === 'ts' ? ['2024-01-01'] : c === 's' ? ['x'] : [1],
                  $gt: c === 'ts' ? '2024-01-01' : c === 's' ? 'x' : 1,
                  $lt: c === 'ts' ? '2024-01-01' : c === 's' ? 'x' : 1,
                  $gte: c === 'ts' ? '2024-01-01' : c === 's' ? 'x' : 1,
                },
              ]),
            ),
          },
          10,
        ),
      /more than 50 conditions/,
    ],
    ['bad direction', () => planSelect(users, users.devRule, dev, { orderBy: { name: 'up' } }, 10), /"asc" or "desc"/],
    ['negative limit', () => planSelect(users, users.devRule, dev, { limit: -1 }, 10), /limit must be a non-negative integer/],
    ['limit over cap', () => planSelect(users, users.devRule, dev, { limit: 11 }, 10), /at most 10/],
    ['fractional offset', () => planSelect(users, users.devRule, dev, { offset: 1.5 }, 10), /offset/],
    ['unknown expand', () => planSelect(users, users.devRule, dev, { expand: ['friends'] }, 10), /unknown relation 'friends'/],
    ['unknown select column', () => planSelect(users, users.devRule, dev, { select: ['id', 'password'] }, 10), /unknown column 'password'/],
    ['client id for ulid', () => planInsert(users, users.devRule, dev, { data: { id: 'x', email: 'a' } }), /primary key is generated/],
    ['missing required', () => planInsert(users, users.devRule, dev, { data: { name: 'a' } }), /column 'email' is required/],
    ['null into not null', () => planInsert(users, users.devRule, dev, { data: { email: null } }), /must not be null/],
    ['data and values', () => planInsert(users, users.devRule, dev, { data: {}, values: {} }), /either data or values/],
    ['empty batch', () => planInsert(users, users.devRule, dev, { data: [] }), /empty array/],
    ['batch too big', () => planInsert(users, users.devRule, dev, { data: Array.from({ length: 1001 }, () => ({ email: 'x' })) }), /at most 1000 rows/],
    ['non-object row', () => planInsert(users, users.devRule, dev, { data: [1] }), /data\[0\] must be an object/],
    ['client key missing', () => planInsert(t('clients'), t('clients').devRule, dev, { data: { note: 'x' } }), /primary key 'code' is required/],
    ['update without where', () => planUpdate(users, users.devRule, dev, { data: { name: 'x' } }), /where is required/],
    ['update with empty where', () => planUpdate(users, users.devRule, dev, { data: { name: 'x' }, where: {} }), /where is required/],
    ['update of the key', () => planUpdate(users, users.devRule, dev, { data: { id: 'x' }, where: { id: 'y' } }), /primary key cannot be updated/],
    ['update without data', () => planUpdate(users, users.devRule, dev, { data: {}, where: { id: 'y' } }), /at least one column/],
    ['delete with empty where', () => planDelete(users, users.devRule, dev, { where: {} }), /where is required/],
    ['array element type', () => planInsert(every, every.devRule, dev, { data: { grid: [[1, 'x']] } }), /column 'grid' expects an array of array of integer/],
    ['unknown param', () => checkParamNames('select', { wher: {} }), /unknown parameter 'wher'/],
  ])('%s', (_name, fn, msg) => expect400(fn, msg));

  it('a disallowed column on insert/update is a 400; on select it is dropped', () => {
    const writer: Principal = { kind: 'apikey', sub: 'k', roles: ['writer'], project: 'shop', env: 'dev' };
    expect400(
      () => planInsert(users, rule(users, writer, 'insert'), writer, { data: { email: 'a', created_at: '2024-01-01' } }),
      /'created_at' is not writable/,
    );
    expect400(() => planUpdate(users, rule(users, alice, 'update'), alice, { data: { email: 'x' }, where: { id: 'u_alice' } }), /'email' is not writable/);
    expect400(
      () => planSelect(users, rule(users, alice, 'select'), alice, { where: { created_at: { $isNull: false } } }, 10),
      /outside this credential's column allow-list/,
    );
    expect400(() => planUpdate(users, rule(users, alice, 'update'), alice, { data: { name: 'x' }, where: { email: 'a@x' } }), /'email' is outside/);
  });

  it('generates well-formed ids', () => {
    expect(nanoid()).toMatch(/^[A-Za-z0-9_-]{21}$/);
    for (const t of [0, 1, 1_700_000_000_123, 2 ** 48 - 1]) {
      const id = ulid(t);
      expect(id).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
      expect(id.slice(0, 10)).toBe(encodeTime(t, 10));
    }
    expect(new Set(Array.from({ length: 5000 }, () => ulid())).size).toBe(5000);
    const v7 = uuidv7(0x0189_aabb_ccdd);
    expect(v7).toMatch(/^0189aabb-ccdd-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});
