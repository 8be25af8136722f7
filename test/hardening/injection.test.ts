/**
 * Injection: a corpus of identifier and value payloads in every position a caller controls
 * (table, op, where keys, operators and values, orderBy keys and directions, select, expand,
 * insert/update keys and values, params names, limit) and in every name an operator writes in YAML
 * (table, column, key, index, reference, relation, permission roles/columns, defaults, CEL values).
 *
 * Holds when: a canary table is intact, no relation or role appeared, and PostgreSQL's own record of
 * what ran (pg_stat_statements, reset per phase, for this database only) holds nothing but the
 * statement shapes the compiler emits, over known quoted identifiers and `$n::type` parameters, with
 * exactly one statement per successful call. Value payloads that were stored come back byte for byte.
 */
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXAMPLE_DIR, HttpClient, envelopeProblem, startStack, type KeyInfo, type Resp, type Stack } from '../helpers/fuzz-stack.js';
import { query } from '../helpers/pg.js';
import { waitFor } from '../helpers/procs.js';

const TAG = '/* stk-test */';

const IDENT_PAYLOADS = [
  'users; DROP TABLE stk_canary; --',
  'users"; DROP TABLE stk_canary; --',
  'users" WHERE 1=1; DROP TABLE stk_canary; --',
  '"users"',
  'public.users',
  'public.stk_canary',
  'stk_canary',
  'pg_catalog.pg_user',
  'pg_user',
  'information_schema.tables',
  'users/**/',
  'users--',
  'users\u0000',
  'USERS',
  ' users',
  'email, (SELECT note FROM stk_canary LIMIT 1) AS x',
  'email" FROM stk_canary; --',
  '*',
  '1',
  '(select 1)',
  'id) OR 1=1 --',
  'email = email OR 1=1',
  '$1',
  '$$',
  'pg_sleep(1)',
  "email'",
  'ema"il',
  '😀',
  'ｅｍａｉｌ',
  'x'.repeat(1000),
];

const VALUE_PAYLOADS = [
  "'; DROP TABLE stk_canary; --",
  "' OR '1'='1",
  "x' OR 1=1 --",
  "\\'; DROP TABLE stk_canary; --",
  '$$; DROP TABLE stk_canary; $$',
  '$1',
  "'||(SELECT note FROM stk_canary LIMIT 1)||'",
  "%' OR note LIKE '%",
  '\\x27; DROP TABLE stk_canary; --',
  "E'\\x27'",
  '1; SELECT pg_sleep(1)',
  "'); DROP TABLE stk_canary; --",
  '{"$ne": null}',
  'ʼ OR 1=1 --',
  '＇ OR 1=1 --',
  "\u0000'; DROP TABLE stk_canary; --",
  '%',
  '_',
  '\\',
  '"; DROP TABLE stk_canary; --',
  '*/ DROP TABLE stk_canary; /*',
  "U&'\\0027' OR 1=1",
  'a'.repeat(10_000) + "'; DROP TABLE stk_canary; --",
];

/** Identifiers the release may put in SQL, quoted; casts the builder emits. */
const IDENT = '"(?:users|posts|id|email|name|created_at|title|body|author_id|published|status|inj|note)"';
const CAST = '(?:text|integer|bigint|double precision|numeric|boolean|jsonb|timestamptz|bytea)';
const PARAM = `\\$\\d+::${CAST}`;
const COND = `(?:${IDENT} (?:=|<>|>|>=|<|<=) ${PARAM}|${IDENT} = ANY\\(\\$\\d+::${CAST}\\[\\]\\)|${IDENT} <> ALL\\(\\$\\d+::${CAST}\\[\\]\\)|${IDENT} LIKE \\$\\d+::text|${IDENT} IS (?:NOT )?NULL|FALSE|\\$\\d+)`;
const WHERE = `(?: WHERE ${COND}(?: AND ${COND})*)`;
const LIST = `${IDENT}(?:, ${IDENT})*`;
/** tables are schema-qualified (src/common/quote-ident.ts) */
const TABLE = `"public"\\.${IDENT}`;
const VALUE = `(?:DEFAULT|${PARAM})`;
const ROW = `\\(${VALUE}(?:, ${VALUE})*\\)`;
/** Every statement the Bridge's SQL builder (src/bridge/sql/build.ts) can produce for examples/basic. */
const BRIDGE_SHAPES = [
  new RegExp(
    `^SELECT ${LIST} FROM ${TABLE}${WHERE}?(?: ORDER BY ${IDENT} (?:ASC|DESC)(?:, ${IDENT} (?:ASC|DESC))*)?(?: LIMIT \\$\\d+::bigint)?(?: OFFSET \\$\\d+::bigint)?$`,
  ),
  new RegExp(`^INSERT INTO ${TABLE} (?:\\(${LIST}\\) VALUES ${ROW}(?:, ${ROW})*|DEFAULT VALUES) RETURNING ${LIST}$`),
  new RegExp(`^UPDATE ${TABLE} SET ${IDENT} = ${PARAM}(?:, ${IDENT} = ${PARAM})*${WHERE} RETURNING ${LIST}$`),
  new RegExp(`^DELETE FROM ${TABLE}${WHERE}$`),
];
/** readiness pings (pg_stat_statements shows the constant as $1) */
const PING = /^select (?:1|\$1)$/i;

/** SQL with string literals and quoted identifiers removed: what is left is structure. */
function structureOf(sqlText: string): string {
  return sqlText
    .replace(/[Ee]'(?:[^'\\]|''|\\.)*'/g, "''")
    .replace(/'(?:[^']|'')*'/g, "''")
    .replace(/"(?:[^"]|"")*"/g, '""');
}
const DANGER = /stk_canary|pg_sleep|pg_user|information_schema|drop\s+table|--|\/\*|;|\bor\s+1\s*=\s*1|\$\$/i;

interface Stat {
  query: string;
  calls: number;
}

describe('injection: payloads in every position', () => {
  let s: Stack;
  let admin: KeyInfo;
  let reader: KeyInfo;
  let client: HttpClient;
  let authorId: string;
  let dbOid: number;
  let canaryBefore: { canary: string; relations: string; roles: string };

  const sql = <T extends Record<string, unknown>>(text: string, values: unknown[] = []) => query<T>(s.dbUrl, `${TAG} ${text}`, values);
  const snapshot = async () => {
    const [c] = await sql<{ fp: string | null }>("select md5(string_agg(id || ':' || note, ',' order by id)) as fp from stk_canary");
    const [r] = await sql<{ rels: string }>(
      "select string_agg(relname, ',' order by relname) as rels from pg_class where relnamespace = 'public'::regnamespace and relname not like 'inj%'",
    );
    const [g] = await sql<{ roles: string }>("select string_agg(rolname, ',' order by rolname) as roles from pg_roles");
    return { canary: String(c!.fp), relations: r!.rels, roles: g!.roles };
  };
  const resetStats = () => sql('select pg_stat_statements_reset(0, $1::oid, 0)', [dbOid]);
  const readStats = async (): Promise<Stat[]> =>
    (await sql<{ query: string; calls: string }>('select query, calls from pg_stat_statements where dbid = $1::oid', [dbOid]))
      .filter((r) => !r.query.includes(TAG))
      .map((r) => ({ query: r.query, calls: Number(r.calls) }));
  const call = (key: string, path: unknown, params: unknown) =>
    client.send('POST', '/call', { 'content-type': 'application/json', 'x-santokit-api-key': key }, JSON.stringify({ path, params }));

  beforeAll(async () => {
    s = await startStack({ bridges: 0 });
    admin = await s.createKey('inj-admin', ['admin']);
    reader = await s.createKey('inj-reader', ['reader']);
    await s.startBridge({ STK_INVALID_KEY_LIMIT_PER_MIN: '0', STK_RATE_LIMIT_PER_API_KEY: '1000000' });
    client = new HttpClient(s.bridges[0]!.url, 8);
    await sql('create extension if not exists pg_stat_statements');
    await sql('create table stk_canary (id int primary key, note text not null)');
    await sql("insert into stk_canary values (1, 'alpha'), (2, 'beta'), (3, 'do not drop me')");
    const [db] = await sql<{ oid: number }>('select oid::int as oid from pg_database where datname = current_database()');
    dbOid = db!.oid;
    const u = await call(admin.key, 'db/users/insert', { data: { email: 'author@example.com' } });
    expect(u.status, u.text).toBe(200);
    authorId = u.json.data.id;
    canaryBefore = await snapshot();
  }, 120_000);
  afterAll(async () => {
    client?.close();
    await s?.stop();
  });

  it("through POST /call: only the compiler's statement shapes run, one per successful call; stored values round-trip", async () => {
    const requests: Array<{ what: string; key: string; path: unknown; params: unknown }> = [];
    const add = (what: string, path: unknown, params: unknown, key = admin.key) => requests.push({ what, key, path, params });
    IDENT_PAYLOADS.forEach((p, i) => {
      add('table', `db/${p}/select`, {});
      add('op', `db/users/${p}`, {});
      add('where key', 'db/users/select', { where: { [p]: 'x' } });
      add('where operator', 'db/users/select', { where: { email: { [p]: 'x' } } });
      add('orderBy key', 'db/users/select', { orderBy: { [p]: 'asc' } });
      add('orderBy direction', 'db/users/select', { orderBy: { email: p } });
      add('select', 'db/users/select', { select: [p] });
      add('select (reader)', 'db/users/select', { select: ['email', p] }, reader.key);
      add('expand', 'db/posts/select', { expand: [p] });
      add('insert key', 'db/users/insert', { data: { [p]: 'x', email: `ident-${i}@example.com` } });
      add('update key', 'db/users/update', { where: { email: 'nobody@example.com' }, data: { [p]: 'x' } });
      add('params name', 'db/users/select', { [p]: 1 });
      add('limit', 'db/users/select', { limit: p });
    });
    VALUE_PAYLOADS.forEach((v, i) => {
      add('where value', 'db/users/select', { where: { email: v } });
      add('$ne value', 'db/users/select', { where: { email: { $ne: v } } });
      add('$gt value', 'db/users/select', { where: { name: { $gt: v } } });
      add('$like value', 'db/users/select', { where: { email: { $like: v } } });
      add('$in values', 'db/users/select', { where: { email: { $in: [v, `${v}-2`] } } });
      add('reader where value', 'db/posts/select', { where: { status: v } }, reader.key);
      add('insert value', 'db/users/insert', { data: { email: `${v}#${i}`, name: v } });
      add('insert post values', 'db/posts/insert', { data: { title: v, body: v, status: v, author_id: authorId } });
      add('update value', 'db/users/update', { where: { email: `${v}#${i}` }, data: { name: `${v}!` } });
      add('delete value', 'db/users/delete', { where: { name: v } });
      add('path as value', v, {});
    });

    await resetStats();
    const statuses = new Map<number, number>();
    const problems: string[] = [];
    let ok = 0;
    const results: Resp[] = new Array(requests.length);
    await client.run(requests, async (r, i) => {
      const res = await call(r.key, r.path, r.params);
      results[i] = res;
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status >= 500) problems.push(`${r.what}: ${res.status} ${res.text.slice(0, 200)}`);
      const p = envelopeProblem(res);
      if (p) problems.push(`${r.what}: ${p}`);
      if (res.status >= 200 && res.status < 300) ok++;
    });
    // sequential updates/deletes above ran in any order; the stored values must still be exact
    let roundTrips = 0;
    for (const [i, v] of VALUE_PAYLOADS.entries()) {
      const ins = results[requests.findIndex((r) => r.what === 'insert value' && (r.params as any).data.email === `${v}#${i}`)]!;
      if (ins.status !== 200) continue;
      expect(ins.json.data.email).toBe(`${v}#${i}`);
      roundTrips++;
    }
    ok++; // the check below is one more successful call
    const check = await call(admin.key, 'db/users/select', {
      where: { email: { $in: VALUE_PAYLOADS.map((v, i) => `${v}#${i}`).filter((e) => !e.includes('\u0000')) } },
    });
    expect(check.status).toBe(200);
    for (const row of check.json.data as Array<{ email: string; name: string | null }>) {
      const i = Number(row.email.slice(row.email.lastIndexOf('#') + 1));
      expect(row.email).toBe(`${VALUE_PAYLOADS[i]}#${i}`);
      expect([VALUE_PAYLOADS[i], `${VALUE_PAYLOADS[i]}!`, null]).toContain(row.name);
    }

    const stats = await readStats();
    const off: string[] = [];
    let statements = 0;
    for (const st of stats) {
      if (PING.test(st.query.trim())) continue;
      statements += st.calls;
      if (!BRIDGE_SHAPES.some((re) => re.test(st.query)) || DANGER.test(structureOf(st.query))) off.push(st.query.slice(0, 300));
    }
    const after = await snapshot();
    const st = [...statuses]
      .sort((a, b) => a[0] - b[0])
      .map(([k, n]) => `${k}×${n}`)
      .join(' ');
    console.log(
      `injection /call: ${IDENT_PAYLOADS.length} identifier + ${VALUE_PAYLOADS.length} value payloads → ${requests.length} requests (${st}); ${stats.length} statement shapes, ${statements} statements for ${ok} successful calls, ${off.length} outside the compiler's shapes; ${roundTrips} values stored and read back exactly; canary ${after.canary === canaryBefore.canary ? 'intact' : 'CHANGED'}`,
    );
    if (off.length) console.log('unexpected statements:\n  ' + off.join('\n  '));
    expect(problems, problems.join('\n')).toEqual([]);
    expect(off).toEqual([]);
    // one statement per successful call: nothing ran that a caller did not ask for
    expect(statements).toBe(ok);
    expect(roundTrips).toBeGreaterThan(VALUE_PAYLOADS.length / 2);
    expect(after).toEqual(canaryBefore);
  }, 120_000);

  it('through YAML names in stk apply: every bad name refused before any DDL; defaults and CEL values stay data', async () => {
    const schema = (o: { table?: string; column?: string; pk?: string; index?: string; indexName?: string; refTable?: string; refAs?: string; def?: string }) =>
      [
        'version: 1',
        'tables:',
        `  ${JSON.stringify(o.table ?? 'inj')}:`,
        `    id: { name: ${JSON.stringify(o.pk ?? 'id')}, generate: ulid }`,
        '    columns:',
        `      ${JSON.stringify(o.column ?? 'note')}: { type: string, default: ${JSON.stringify(o.def ?? 'plain')} }`,
        `      author_id: { type: string, nullable: true, references: { table: ${JSON.stringify(o.refTable ?? 'users')}, as: ${JSON.stringify(o.refAs ?? 'author')} } }`,
        '    indexes:',
        `      - { columns: [${JSON.stringify(o.index ?? 'note')}]${o.indexName !== undefined ? `, name: ${JSON.stringify(o.indexName)}` : ''} }`,
      ].join('\n');
    const basePerms = readFileSync(join(EXAMPLE_DIR, 'config/permissions.yaml'), 'utf8');
    const perms = (o: { roles?: string; columns?: string; cond?: string }) =>
      basePerms +
      [
        '',
        '  inj:',
        '    select:',
        `      - roles: [${JSON.stringify(o.roles ?? 'admin')}]`,
        `        columns: [id, ${JSON.stringify(o.columns ?? 'note')}, author_id]`,
        '      - roles: [reader]',
        `        condition: ${JSON.stringify(`resource.note == ${JSON.stringify(o.cond ?? 'plain')}`)}`,
        '    insert: { roles: [admin] }',
        '',
      ].join('\n');
    const files = (sch: string) => [
      { file: 'schema/users.yaml', content: readFileSync(join(EXAMPLE_DIR, 'schema/users.yaml'), 'utf8') },
      { file: 'schema/posts.yaml', content: readFileSync(join(EXAMPLE_DIR, 'schema/posts.yaml'), 'utf8') },
      { file: 'schema/inj.yaml', content: sch },
    ];
    const apply = (sch: string, pm: string) =>
      s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apply`, { schema: files(sch), permissions: pm, ref: null, dryRun: false, force: false });

    const names = IDENT_PAYLOADS.filter((p) => !/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(p)).slice(0, 12);
    const positions: Array<[string, (p: string) => { sch: Parameters<typeof schema>[0]; pm: Parameters<typeof perms>[0] }]> = [
      ['table name', (p) => ({ sch: { table: p }, pm: {} })],
      ['column name', (p) => ({ sch: { column: p, index: p }, pm: { columns: p } })],
      ['key column name', (p) => ({ sch: { pk: p }, pm: {} })],
      ['index column', (p) => ({ sch: { index: p }, pm: {} })],
      ['index name', (p) => ({ sch: { indexName: p }, pm: {} })],
      ['referenced table', (p) => ({ sch: { refTable: p }, pm: {} })],
      ['relation name', (p) => ({ sch: { refAs: p }, pm: {} })],
      ['permission role', (p) => ({ sch: {}, pm: { roles: p } })],
      ['permission column', (p) => ({ sch: {}, pm: { columns: p } })],
    ];
    await resetStats();
    let refused = 0;
    const problems: string[] = [];
    for (const [where, make] of positions) {
      for (const p of names) {
        const { sch, pm } = make(p);
        const r = await apply(schema(sch), perms(pm));
        if (r.status >= 500 || (r.status >= 400 && !r.json?.error?.requestId))
          problems.push(`${where} ${JSON.stringify(p).slice(0, 60)}: ${r.status} ${r.text.slice(0, 200)}`);
        if (r.status >= 400) refused++;
        else problems.push(`${where} ${JSON.stringify(p).slice(0, 60)}: accepted (${r.status})`);
      }
    }
    // nothing reached the database: every one of them was refused while validating the YAML
    const afterNames = (await readStats()).filter((x) => !PING.test(x.query.trim()));
    const ddl = afterNames.filter((x) => /^\s*(create|alter|drop|comment|grant|revoke|insert|update|delete|truncate)\b/i.test(x.query));

    // one apply through the real CLI, with a payload table name: refused, nothing applied
    const dir = mkdtempSync(join(tmpdir(), 'stk-inj-'));
    mkdirSync(join(dir, 'schema'));
    mkdirSync(join(dir, 'config'));
    for (const f of files(schema({ table: 'x"; DROP TABLE stk_canary; --' }))) writeFileSync(join(dir, f.file), f.content);
    writeFileSync(join(dir, 'config/permissions.yaml'), perms({}));
    const cli = await s.stk(['apply', '--project', s.project, '--env', s.env, '--dir', dir]);
    expect(cli.code, cli.output).not.toBe(0);
    expect(cli.output).toMatch(/invalid table name/);

    // value payloads as a column default and as a CEL string: accepted, stored as data, read back exactly
    const values = VALUE_PAYLOADS.filter((v) => !v.includes('\u0000') && v.length < 200).slice(0, 8);
    let roundTrips = 0;
    for (const v of values) {
      const r = await apply(schema({ def: v }), perms({ cond: v }));
      expect(r.status, r.text).toBe(200);
      // the Bridge follows the new release; then insert a row that takes the default and read it back
      let ins: Resp | undefined;
      await waitFor(
        async () => {
          ins = await call(admin.key, 'db/inj/insert', { data: {} });
          return ins.status === 200 && ins.json.data.note === v;
        },
        20_000,
        `the Bridge serving the release with default ${JSON.stringify(v).slice(0, 40)}`,
      );
      expect(ins!.json.data.note).toBe(v);
      // the reader's rule `resource.note == "<payload>"` matches exactly the rows holding the payload
      // (the DDL lands before the Bridge follows the new release: wait for the new rule)
      let rows: Resp | undefined;
      await waitFor(
        async () => {
          rows = await call(reader.key, 'db/inj/select', {});
          return rows.status === 200 && rows.json.data.length > 0 && rows.json.data.every((row: { note: string }) => row.note === v);
        },
        20_000,
        `the reader rule with ${JSON.stringify(v).slice(0, 40)}: ${rows?.text.slice(0, 200)}`,
      );
      const all = await call(admin.key, 'db/inj/select', { where: { note: v } });
      expect(rows!.json.data.length).toBe(all.json.data.length);
      roundTrips++;
    }
    const stats = (await readStats()).filter((x) => !PING.test(x.query.trim()));
    const leaked = stats.filter((x) => DANGER.test(structureOf(x.query)));
    const after = await snapshot();
    console.log(
      `injection YAML: ${names.length} names × ${positions.length} positions = ${names.length * positions.length} applies, ${refused} refused before any DDL (${ddl.length} DDL statements ran); ${values.length} value payloads as default + CEL: ${roundTrips} round-trips exact; ${stats.length} statement shapes recorded, ${leaked.length} with payload text outside a quoted literal; canary ${after.canary === canaryBefore.canary ? 'intact' : 'CHANGED'}`,
    );
    if (leaked.length) console.log('statements with payload text:\n  ' + leaked.map((x) => x.query.slice(0, 300)).join('\n  '));
    expect(problems, problems.join('\n')).toEqual([]);
    expect(ddl.map((x) => x.query)).toEqual([]);
    expect(leaked.map((x) => x.query)).toEqual([]);
    expect(roundTrips).toBe(values.length);
    expect(after).toEqual(canaryBefore);
  }, 180_000);
});
