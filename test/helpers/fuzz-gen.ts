/**
 * Seeded request generators for the fuzz tests (fast-check `sample`, so a seed reproduces a run).
 *
 * JSON bodies are built as a small tree and serialized by hand, so a body can hold what
 * `JSON.stringify` never emits: duplicate keys, numbers beyond double range, lone surrogate escapes,
 * `__proto__` keys and nesting thousands of levels deep.
 */
import fc from 'fast-check';

/** A JSON value as text-to-be: raw tokens, objects as entry lists (duplicates allowed). */
export type JV = null | boolean | number | string | { t: 'raw'; s: string } | { t: 'arr'; a: JV[] } | { t: 'obj'; e: Array<[string, JV]> };

export const raw = (s: string): JV => ({ t: 'raw', s });
export const arr = (...a: JV[]): JV => ({ t: 'arr', a });
export const obj = (e: Array<[string, JV]> | Record<string, JV>): JV => ({ t: 'obj', e: Array.isArray(e) ? e : Object.entries(e) });

export function serialize(v: JV): string {
  if (v === null || typeof v === 'boolean') return String(v);
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  if (v.t === 'raw') return v.s;
  if (v.t === 'arr') return '[' + v.a.map(serialize).join(',') + ']';
  return '{' + v.e.map(([k, x]) => JSON.stringify(k) + ':' + serialize(x)).join(',') + '}';
}

const HUGE_NUMBERS = [
  '1e999',
  '-1e999',
  '123456789012345678901234567890',
  '-0',
  '1e-400',
  '9007199254740993',
  '2147483648',
  '-2147483649',
  '0.1e1',
  '1E+2',
  '9223372036854775808',
  '4.9e-324',
  '1.7976931348623157e308',
];
const NASTY_STRINGS = [
  '',
  ' ',
  '\u0000',
  'a\u0000b',
  "'; drop table users; --",
  '" or 1=1 --',
  '$1',
  '%',
  '_',
  '\\',
  '\\x00',
  '💥',
  '\u202e',
  '\ufeff',
  'null',
  'true',
  'NaN',
  '2024-01-01',
  '2024-13-45T99:99:99Z',
  '0000-00-00',
  '9999-12-31T23:59:59.999999999+14:00',
  '2024-02-30T00:00:00Z',
  'AAAA',
  '01ARZ3NDEKTSV4RRFFQ69G5FAV',
  '__proto__',
  'constructor',
];
const COLUMNS = ['id', 'email', 'name', 'created_at', 'title', 'body', 'author_id', 'published', 'status', 'author'];
const OPERATORS = [
  '$eq',
  '$ne',
  '$gt',
  '$gte',
  '$lt',
  '$lte',
  '$in',
  '$notIn',
  '$like',
  '$isNull',
  '$isNotNull',
  '$or',
  '$and',
  '$regex',
  'eq',
  '$',
  '$$',
  '$EQ',
];
const TABLES = ['users', 'posts'];
const OPS = ['select', 'insert', 'update', 'delete'];

const surrogate = fc.constantFrom('"\\ud800"', '"\\udfff"', '"a\\ud83d"', '"\\u0000"', '"\\uffff"', '"\\ud83d\\ude00"').map(raw);

/** Arrays or objects nested 20–20,000 levels, sometimes with a poisoned key at the bottom. */
const deep = fc
  .record({
    depth: fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 20, max: 200 }) }, { weight: 1, arbitrary: fc.integer({ min: 1000, max: 5000 }) }),
    kind: fc.constantFrom('arr', 'obj', 'proto'),
  })
  .map(({ depth, kind }) => {
    if (kind === 'arr') return raw('['.repeat(depth) + ']'.repeat(depth));
    const inner = kind === 'proto' ? '{"__proto__":{"x":1}}' : '1';
    return raw('{"a":'.repeat(depth) + inner + '}'.repeat(depth));
  });

const longString = fc
  .record({
    n: fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 256, max: 2000 }) }, { weight: 1, arbitrary: fc.integer({ min: 10_000, max: 20_000 }) }),
    c: fc.constantFrom('x', 'é', '😀', "'", '\u0000'),
  })
  .map(({ n, c }) => c.repeat(n));

const scalar: fc.Arbitrary<JV> = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 20 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
  { weight: 3, arbitrary: fc.constantFrom(...NASTY_STRINGS) },
  { weight: 2, arbitrary: fc.integer() },
  { weight: 1, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
  { weight: 2, arbitrary: fc.constantFrom(...HUGE_NUMBERS).map(raw) },
  { weight: 2, arbitrary: fc.boolean() },
  { weight: 2, arbitrary: fc.constant(null) },
  { weight: 1, arbitrary: surrogate },
);

const key = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...COLUMNS) },
  { weight: 1, arbitrary: fc.constantFrom(...OPERATORS) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '__proto__',
      'constructor',
      'prototype',
      'toString',
      'hasOwnProperty',
      'valueOf',
      '',
      ' ',
      'id; drop table users',
      'ID',
      'Email',
      'users.email',
      '"email"',
    ),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
);

/** Any JSON value, biased to the shapes the params parser looks at. */
const anyValue: fc.Arbitrary<JV> = fc.letrec<{ v: JV }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    { weight: 6, arbitrary: scalar },
    { weight: 1, arbitrary: fc.array(tie('v'), { maxLength: 4 }).map((a) => arr(...a)) },
    { weight: 1, arbitrary: fc.array(fc.tuple(key, tie('v')), { maxLength: 4 }).map((e) => obj(e)) },
    { weight: 1, arbitrary: fc.array(fc.tuple(fc.constantFrom(...OPERATORS), tie('v')), { minLength: 1, maxLength: 3 }).map((e) => obj(e)) },
  ),
})).v;
const weird: fc.Arbitrary<JV> = fc.oneof({ weight: 60, arbitrary: anyValue }, { weight: 1, arbitrary: deep }, { weight: 1, arbitrary: longString });

const colOrKey = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...COLUMNS) }, { weight: 1, arbitrary: key });
const where = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .array(
        fc.tuple(
          colOrKey,
          fc.oneof(
            weird,
            fc.array(fc.tuple(fc.constantFrom(...OPERATORS), weird), { maxLength: 3 }).map((e) => obj(e)),
          ),
        ),
        { maxLength: 4 },
      )
      .map((e) => obj(e)),
  },
  { weight: 1, arbitrary: weird },
);
const select = fc.oneof(
  fc.constant<JV>('*'),
  fc.array(fc.oneof(colOrKey as fc.Arbitrary<JV>, weird), { maxLength: 5 }).map((a) => arr(...a)),
  weird,
);
const orderTerm = fc
  .array(fc.tuple(colOrKey, fc.oneof(fc.constantFrom<JV>('asc', 'desc', 'ASC', 'Desc', 'asc; drop table users', ''), weird)), { maxLength: 3 })
  .map((e) => obj(e));
const orderBy = fc.oneof(
  orderTerm,
  fc.array(orderTerm, { maxLength: 3 }).map((a) => arr(...a)),
  weird,
);
const count = fc.oneof(fc.integer({ min: -5, max: 20000 }), fc.constantFrom(...HUGE_NUMBERS).map(raw), fc.constantFrom<JV>('10', 1.5, -1, null, true), weird);
const expand = fc.oneof(
  fc.constantFrom<JV>('author', 'posts', '', '__proto__'),
  fc.array(fc.oneof(fc.constantFrom<JV>('author', 'Author', 'users'), weird), { maxLength: 3 }).map((a) => arr(...a)),
  weird,
);
const row = fc.array(fc.tuple(colOrKey, weird), { maxLength: 6 }).map((e) => obj(e));
const data = fc.oneof(
  { weight: 3, arbitrary: row },
  { weight: 1, arbitrary: fc.array(row, { maxLength: 4 }).map((a) => arr(...a)) },
  { weight: 1, arbitrary: weird },
);

const params: fc.Arbitrary<JV> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .record(
        {
          where,
          select,
          orderBy,
          limit: count,
          offset: count,
          expand,
          data,
          values: data,
          extra: fc.tuple(key, weird),
        },
        { requiredKeys: [] },
      )
      .map((r) => {
        const e: Array<[string, JV]> = [];
        for (const [k, v] of Object.entries(r)) {
          if (k === 'extra') e.push(v as [string, JV]);
          else e.push([k, v as JV]);
        }
        return obj(e);
      }),
  },
  { weight: 1, arbitrary: weird },
);

// ---- near-valid params: a well-formed request for examples/basic with at most a few odd values,
// so most of them get past validation and reach SQL (inserts, filters, sorts, expands, updates)
type ColType = 'string' | 'boolean' | 'timestamp' | 'id';
const SCHEMA: Record<string, Record<string, ColType>> = {
  users: { id: 'id', email: 'string', name: 'string', created_at: 'timestamp' },
  posts: { id: 'id', title: 'string', body: 'string', author_id: 'id', published: 'boolean', status: 'string', created_at: 'timestamp' },
};
const ulidLike = fc.array(fc.constantFrom(...'0123456789ABCDEFGHJKMNPQRSTVWXYZ'.split('')), { minLength: 26, maxLength: 26 }).map((a) => a.join(''));
const goodValue = (t: ColType): fc.Arbitrary<JV> => {
  switch (t) {
    case 'boolean':
      return fc.boolean();
    case 'timestamp':
      return fc.oneof(
        fc.date({ min: new Date('1900-01-01'), max: new Date('2200-01-01'), noInvalidDate: true }).map((d) => d.toISOString()),
        fc.constantFrom<JV>(
          '2024-01-01',
          '2024-01-01 10:00',
          '2024-01-01T00:00:00+05:30',
          '0001-01-01T00:00:00Z',
          '9999-12-31T23:59:59Z',
          '2024-02-30T00:00:00Z',
          '0000-00-00',
        ),
      );
    case 'id':
      return fc.oneof(ulidLike, fc.string({ maxLength: 30 }));
    case 'string':
      return fc.oneof(
        { weight: 4, arbitrary: fc.string({ maxLength: 30 }) },
        { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
        { weight: 1, arbitrary: fc.constantFrom<JV>(...NASTY_STRINGS) },
        { weight: 1, arbitrary: longString },
      );
  }
};
/** a good value most of the time, anything at all sometimes */
const maybeOdd = (t: ColType): fc.Arbitrary<JV> => fc.oneof({ weight: 6, arbitrary: goodValue(t) }, { weight: 1, arbitrary: weird });
const condition = (t: ColType): fc.Arbitrary<JV> =>
  fc.oneof(
    { weight: 3, arbitrary: maybeOdd(t) },
    { weight: 2, arbitrary: fc.tuple(fc.constantFrom('$eq', '$ne', '$gt', '$gte', '$lt', '$lte'), maybeOdd(t)).map(([o, v]) => obj([[o, v]])) },
    {
      weight: 1,
      arbitrary: fc.tuple(fc.constantFrom('$in', '$notIn'), fc.array(maybeOdd(t), { minLength: 1, maxLength: 5 })).map(([o, v]) => obj([[o, arr(...v)]])),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(
          fc.constantFrom('$like'),
          fc.oneof(
            fc.string({ maxLength: 10 }).map((x) => `%${x}%`),
            weird,
          ),
        )
        .map(([o, v]) => obj([[o, v]])),
    },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom('$isNull', '$isNotNull'), fc.oneof(fc.boolean(), weird)).map(([o, v]) => obj([[o, v]])) },
  );
function nearValidFor(table: string, op: string): fc.Arbitrary<JV> {
  const cols = SCHEMA[table]!;
  const names = Object.keys(cols);
  // fc.record with no required keys = a random subset of the columns (no chain: arbitraries are built once)
  const whereArb = fc.record(Object.fromEntries(names.map((n) => [n, condition(cols[n]!)])), { requiredKeys: [] }).map((r) => obj(r as Record<string, JV>));
  const writable = names.filter((n) => n !== 'id' && n !== 'created_at');
  const rowArb = fc.record(Object.fromEntries(writable.map((n) => [n, maybeOdd(cols[n]!)])), { requiredKeys: [] }).map((r) => obj(r as Record<string, JV>));
  switch (op) {
    case 'select':
      return fc
        .record(
          {
            where: whereArb,
            select: fc.oneof(
              fc.constant<JV>('*'),
              fc.subarray(names, { minLength: 1 }).map((a) => arr(...a)),
            ),
            orderBy: fc.tuple(fc.constantFrom(...names), fc.constantFrom<JV>('asc', 'desc')).map(([n, d]) => obj([[n, d]])),
            limit: fc.oneof(fc.integer({ min: 0, max: 50 }), count),
            offset: fc.integer({ min: 0, max: 10 }),
            expand: table === 'posts' ? fc.constant(arr('author')) : fc.constant<JV>(arr()),
          },
          { requiredKeys: [] },
        )
        .map((r) =>
          obj(
            Object.entries(r).filter(
              ([k, v]) => !(k === 'expand' && typeof v === 'object' && v !== null && 't' in v && v.t === 'arr' && v.a.length === 0),
            ) as Array<[string, JV]>,
          ),
        );
    case 'insert':
      return fc.oneof(
        rowArb.map((r) => obj([['data', r]])),
        fc.array(rowArb, { minLength: 1, maxLength: 5 }).map((rs) => obj([['data', arr(...rs)]])),
      );
    case 'update':
      return fc.tuple(whereArb, rowArb).map(([w, d]) =>
        obj([
          ['where', w],
          ['data', d],
        ]),
      );
    default:
      return whereArb.map((w) => obj([['where', w]]));
  }
}
const nearValid = fc.oneof(
  ...(['users', 'posts'] as const).flatMap((t) =>
    (['select', 'insert', 'update', 'delete'] as const).map((o) => ({
      weight: o === 'select' ? 2 : 1,
      arbitrary: nearValidFor(t, o).map((p) => ({
        kind: 'json' as const,
        text: serialize(
          obj([
            ['path', `db/${t}/${o}`],
            ['params', p],
          ]),
        ),
      })),
    })),
  ),
);

const path: fc.Arbitrary<JV> = fc.oneof(
  { weight: 8, arbitrary: fc.tuple(fc.constantFrom(...TABLES), fc.constantFrom(...OPS)).map(([t, o]) => `db/${t}/${o}`) },
  {
    weight: 2,
    arbitrary: fc.oneof(
      fc.tuple(fc.oneof(fc.constantFrom(...TABLES), key), fc.oneof(fc.constantFrom(...OPS), key)).map(([t, o]) => `db/${t}/${o}`),
      fc.constantFrom<JV>(
        '',
        'db',
        'db/',
        'db//select',
        'db/users',
        'db/users/',
        'db/users/select/',
        'db/users/select/x',
        '/db/users/select',
        'DB/users/select',
        'db/../users/select',
        'db/users/sel%65ct',
        'db/pg_catalog.pg_user/select',
        'db/public.users/select',
        'fn/users/select',
        'db/users/select\u0000',
        'db/users/drop',
      ),
      longString,
      weird,
    ),
  },
);

export type KeyKind = 'admin' | 'reader' | 'none' | 'empty' | 'garbage' | 'checksum' | 'unknown' | 'secret' | 'long' | 'dup' | 'dup-real' | 'bearer';

export interface CallRecipe {
  method: string;
  url: string;
  key: KeyKind;
  contentType: string | string[] | null;
  hints: 'none' | 'right' | 'wrong' | 'dup' | 'latin1';
  extraHeaders: Array<[string, string]>;
  body: { kind: 'json'; text: string } | { kind: 'bytes'; data: Buffer } | { kind: 'none' };
}

const headerValue = fc.string({ unit: fc.constantFrom(...'abcXYZ019 -_./:;=,"\'\t\u00e9\u00ff\u0080'.split('')), maxLength: 40 });

const callBody = fc.oneof(
  { weight: 8, arbitrary: nearValid },
  {
    weight: 6,
    arbitrary: fc.tuple(path, params).map(([p, q]) => ({
      kind: 'json' as const,
      text: serialize(
        obj([
          ['path', p],
          ['params', q],
        ]),
      ),
    })),
  },
  {
    weight: 1,
    arbitrary: fc
      .array(fc.tuple(fc.oneof(fc.constantFrom('path', 'params', '__proto__', 'constructor'), key), fc.oneof(path, params)), { maxLength: 4 })
      .map((e) => ({ kind: 'json' as const, text: serialize(obj(e)) })),
  },
  { weight: 1, arbitrary: weird.map((v) => ({ kind: 'json' as const, text: serialize(v) })) },
  {
    weight: 1,
    // malformed: a valid body cut short, or a raw token soup
    arbitrary: fc.oneof(
      fc.tuple(path, params, fc.nat()).map(([p, q, n]) => {
        const t = serialize(
          obj([
            ['path', p],
            ['params', q],
          ]),
        );
        return { kind: 'json' as const, text: t.slice(0, n % Math.max(1, t.length)) };
      }),
      fc
        .constantFrom(
          '{',
          '}',
          '[',
          'nul',
          'undefined',
          "{'path':'db/users/select'}",
          '{"path":}',
          '{"path" "db/users/select"}',
          '\ufeff{"path":"db/users/select"}',
          '{"path":"db/users/select",}',
          '// c\n{}',
          'NaN',
          '{"a":1}{"b":2}',
        )
        .map((text) => ({ kind: 'json' as const, text })),
    ),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((a) => ({ kind: 'bytes' as const, data: Buffer.from(a) })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'none' as const }) },
);

export const callRecipe: fc.Arbitrary<CallRecipe> = fc.record({
  method: fc.oneof(
    { weight: 20, arbitrary: fc.constant('POST') },
    { weight: 1, arbitrary: fc.constantFrom('GET', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD') },
  ),
  url: fc.oneof(
    { weight: 20, arbitrary: fc.constant('/call') },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        '/call?x=1',
        '/call/',
        '//call',
        '/CALL',
        '/call%00',
        '/%',
        '/call?%zz',
        '/call#x',
        '/call?path=db/users/select',
        '/ca%6cl',
        '/call/../call',
        '/' + 'a'.repeat(5000),
      ),
    },
  ),
  key: fc.oneof(
    { weight: 12, arbitrary: fc.constant<KeyKind>('admin') },
    { weight: 3, arbitrary: fc.constant<KeyKind>('reader') },
    { weight: 1, arbitrary: fc.constantFrom<KeyKind>('none', 'empty', 'garbage', 'checksum', 'unknown', 'secret', 'long', 'dup', 'dup-real', 'bearer') },
  ),
  contentType: fc.oneof(
    { weight: 12, arbitrary: fc.constant('application/json') },
    {
      weight: 2,
      arbitrary: fc.constantFrom<string | string[] | null>(
        null,
        'application/json; charset=utf-8',
        'application/json; charset=latin1',
        'Application/JSON',
        'text/plain',
        'application/x-www-form-urlencoded',
        'multipart/form-data; boundary=x',
        'application/json, text/plain',
        ['application/json', 'application/json'],
        ['application/json', 'text/plain'],
        '',
        'application/jsonx',
        'application/vnd.api+json',
        '*/*',
      ),
    },
  ),
  hints: fc.oneof(
    { weight: 6, arbitrary: fc.constant<'none'>('none') },
    { weight: 1, arbitrary: fc.constantFrom<CallRecipe['hints']>('right', 'wrong', 'dup', 'latin1') },
  ),
  extraHeaders: fc.oneof(
    { weight: 8, arbitrary: fc.constant<Array<[string, string]>>([]) },
    {
      weight: 1,
      arbitrary: fc.array(
        fc.tuple(
          fc.constantFrom('x-forwarded-for', 'x-request-id', 'accept', 'accept-encoding', 'expect', 'x-santokit-service-token', 'origin', 'cookie', 'x-junk'),
          headerValue,
        ),
        { maxLength: 3 },
      ),
    },
  ),
  body: callBody,
});

/** `n` call recipes for `seed`, reproducible. */
export function callRecipes(seed: number, n: number): CallRecipe[] {
  return fc.sample(callRecipe, { seed, numRuns: n });
}

/** Hub API routes the fuzz exercises (`:p`/`:e`/`:k`/`:m`/`:r`/`:c`/`:w` are filled with real or weird names). */
export const HUB_ROUTES: Array<[string, string]> = [
  ['POST', '/api/auth/login'],
  ['POST', '/api/auth/logout'],
  ['GET', '/api/auth/whoami'],
  ['POST', '/api/projects'],
  ['GET', '/api/projects'],
  ['POST', '/api/projects/:p/envs'],
  ['GET', '/api/projects/:p/envs'],
  ['PUT', '/api/projects/:p/envs/:e/connections/:c'],
  ['GET', '/api/projects/:p/envs/:e/connections'],
  ['POST', '/api/projects/:p/envs/:e/connections/:c/test'],
  ['POST', '/api/org/invites'],
  ['GET', '/api/org/members'],
  ['PUT', '/api/org/members/:m'],
  ['DELETE', '/api/org/members/:m'],
  ['POST', '/api/projects/:p/invites'],
  ['GET', '/api/projects/:p/members'],
  ['PUT', '/api/projects/:p/members/:m'],
  ['DELETE', '/api/projects/:p/members/:m'],
  ['POST', '/api/invites/accept'],
  ['GET', '/api/audit'],
  ['POST', '/api/projects/:p/envs/:e/apikeys'],
  ['GET', '/api/projects/:p/envs/:e/apikeys'],
  ['GET', '/api/projects/:p/envs/:e/apikeys/:k'],
  ['GET', '/api/projects/:p/envs/:e/apikeys/:k/usage'],
  ['PATCH', '/api/projects/:p/envs/:e/apikeys/:k'],
  ['POST', '/api/projects/:p/envs/:e/apikeys/:k/revoke'],
  ['POST', '/api/projects/:p/envs/:e/apikeys/:k/rotate'],
  ['POST', '/api/projects/:p/envs/:e/apply'],
  ['GET', '/api/projects/:p/releases'],
  ['GET', '/api/projects/:p/envs/:e/releases/current'],
  ['GET', '/api/projects/:p/releases/:r'],
  ['POST', '/api/projects/:p/releases/promote'],
  ['POST', '/api/projects/:p/envs/:e/rollback'],
  ['GET', '/internal/sync/snapshot'],
  ['GET', '/internal/releases/:p/:e/current'],
  ['POST', '/internal/sync/ack'],
  ['POST', '/internal/sync/usage'],
  ['GET', '/internal/sync/bridges'],
  ['POST', '/api/projects/:p/webhooks'],
  ['GET', '/api/projects/:p/webhooks'],
  ['DELETE', '/api/projects/:p/webhooks/:w'],
  ['POST', '/api/projects/:p/webhooks/:w/test'],
  ['GET', '/api/projects/:p/webhooks/deliveries'],
  ['GET', '/api/nothing/here'],
];

const segment = fc.oneof(
  { weight: 4, arbitrary: fc.constant('$real') },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      'nope',
      'A',
      'a'.repeat(64),
      'a'.repeat(300),
      '%00',
      '%ff',
      '%',
      '..',
      '.',
      '%2e%2e',
      'x%2Fy',
      "'or'1'='1",
      '%F0%9F%92%A5',
      'owner@example.com',
      'OWNER@EXAMPLE.COM',
      '__proto__',
      'constructor',
      '00000000000000000000000000',
      '-1',
      '0',
    ),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }).map((s) => encodeURIComponent(s)) },
);

export interface HubRecipe {
  route: number;
  segments: string[];
  session: 'owner' | 'none' | 'garbage' | 'expired-format' | 'service' | 'viewer';
  query: string;
  contentType: string | null;
  body: { kind: 'json'; text: string } | { kind: 'bytes'; data: Buffer } | { kind: 'none' };
}

const hubField = fc.constantFrom(
  'name',
  'email',
  'password',
  'role',
  'roles',
  'dbUrl',
  'engine',
  'code',
  'expiresIn',
  'expiresAt',
  'rateLimitPerMin',
  'grace',
  'dryRun',
  'schema',
  'permissions',
  'ref',
  'force',
  'only',
  'from',
  'to',
  'releaseId',
  'bridgeId',
  'seqs',
  'snapshot',
  'keys',
  'url',
  'events',
);
const hubValue: fc.Arbitrary<JV> = fc.oneof(
  { weight: 3, arbitrary: weird },
  {
    weight: 2,
    arbitrary: fc.constantFrom<JV>(
      'shop',
      'reader',
      'admin',
      'owner',
      'viewer',
      'postgres://u:p@127.0.0.1:1/db',
      'postgres://127.0.0.1:1/db?host=/tmp',
      'mysql://x',
      '1h',
      '0',
      '99999999999d',
      '-1s',
      'version: 1\ntables: {}',
      'tables:\n  x: [',
      '&a [*a, *a, *a]',
      'a@b.c',
      'https://hooks.invalid/x',
      'http://127.0.0.1:1/x',
      'https://[::ffff:169.254.169.254]/',
      'apikey.created,apikey.nope',
    ),
  },
  {
    weight: 1,
    arbitrary: fc
      .array(fc.constantFrom<JV>('reader', 'admin', '', 'public', 'authenticated', '__proto__', 'apikey.created', 'release.applied'), { maxLength: 4 })
      .map((a) => arr(...a)),
  },
);

export const hubRecipe: fc.Arbitrary<HubRecipe> = fc.record({
  route: fc.nat({ max: HUB_ROUTES.length - 1 }),
  segments: fc.array(segment, { minLength: 6, maxLength: 6 }),
  session: fc.oneof(
    { weight: 6, arbitrary: fc.constant<'owner'>('owner') },
    { weight: 2, arbitrary: fc.constantFrom<HubRecipe['session']>('none', 'garbage', 'expired-format', 'service', 'viewer') },
  ),
  query: fc.oneof(
    { weight: 6, arbitrary: fc.constant('') },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        '?limit=5',
        '?limit=0',
        '?limit=-1',
        '?limit=abc',
        '?limit=99999999999999999999',
        '?since=1h',
        '?since=9999999999d',
        '?since=2024-99-99',
        '?since=x',
        '?action=apikey.*',
        '?project=shop&project=x',
        '?since=',
        '?bridgeId=x&since=-1',
        '?%zz',
        '?a[b]=c',
      ),
    },
  ),
  contentType: fc.oneof(
    { weight: 8, arbitrary: fc.constant('application/json') },
    { weight: 1, arbitrary: fc.constantFrom<string | null>(null, 'text/plain', 'application/json; charset=utf-8', 'application/x-www-form-urlencoded') },
  ),
  body: fc.oneof(
    {
      weight: 5,
      arbitrary: fc
        .array(fc.tuple(fc.oneof({ weight: 4, arbitrary: hubField }, { weight: 1, arbitrary: key }), hubValue), { maxLength: 6 })
        .map((e) => ({ kind: 'json' as const, text: serialize(obj(e)) })),
    },
    { weight: 1, arbitrary: weird.map((v) => ({ kind: 'json' as const, text: serialize(v) })) },
    { weight: 1, arbitrary: fc.constantFrom('{', '{"name":', 'null', '""', '[]', '\ufeff{}').map((text) => ({ kind: 'json' as const, text })) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 100 }).map((a) => ({ kind: 'bytes' as const, data: Buffer.from(a) })) },
    { weight: 2, arbitrary: fc.constant({ kind: 'none' as const }) },
  ),
});

export function hubRecipes(seed: number, n: number): HubRecipe[] {
  return fc.sample(hubRecipe, { seed, numRuns: n });
}
