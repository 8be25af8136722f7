import pg from 'pg';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { introspect, parseLiveDefault, tableHasRows } from '../../src/hub/services/apply/introspect.js';
import { compareTypes, fkActionsEquivalent, planConnection, type ConnectionPlan } from '../../src/hub/services/apply/plan.js';
import { parseSchema } from '../../src/hub/services/apply/schema.js';
import { FK_ACTIONS, type TableIR } from '../../src/protocol/release.js';
import { createTestDatabase } from '../helpers/pg.js';

const EXAMPLE = join(import.meta.dirname, '../../examples/basic');

/**
 * Introspection + planner against a real PostgreSQL: what gets planned, what is destructive or
 * unsupported, and that a plan once applied leaves no drift (the same diff comes back empty).
 */
const schemaOf = (tables: string) => parseSchema([{ file: 'schema/app.yaml', content: `version: 1\ntables:\n${tables}` }]);

describe('planner against a live database', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let c: pg.Client;

  beforeAll(async () => {
    db = await createTestDatabase('plan');
    c = new pg.Client({ connectionString: db.url });
    await c.connect();
    await c.query(`SET TIME ZONE 'UTC'`);
  });
  afterAll(async () => {
    await c?.end();
    await db?.drop();
  });

  async function plan(tables: string, previouslyManaged: string[] = []): Promise<ConnectionPlan> {
    const s = schemaOf(tables);
    return planConnection({
      connection: 'main',
      tables: Object.values(s.tables),
      previouslyManaged,
      live: await introspect(c),
      hasRows: (t) => tableHasRows(c, t),
    });
  }

  /** Plans, runs every step in one transaction, and checks the re-plan is empty (no drift). */
  async function apply(tables: string, previouslyManaged: string[] = []): Promise<ConnectionPlan> {
    const p = await plan(tables, previouslyManaged);
    expect(p.unsupported).toEqual([]);
    await c.query('BEGIN');
    try {
      for (const s of p.steps) await c.query(s.sql);
      await c.query('COMMIT');
    } catch (e) {
      await c.query('ROLLBACK');
      throw e;
    }
    const again = await plan(tables, previouslyManaged);
    // what the plan kept as equivalent stays kept (and stays listed); nothing else is left
    expect(again, 'drift after apply').toEqual({ steps: [], unsupported: [], unmanaged: [], notes: p.notes });
    return p;
  }

  const descriptions = (p: ConnectionPlan) => p.steps.map((s) => `${s.destructive ? '!' : '+'} ${s.description}`);

  it('creates tables with every default form and finds no drift afterwards', async () => {
    const p = await apply(`  people:
    columns:
      s: { type: string, default: "it's a \\\\ test" }
      n: { type: int, default: -5 }
      big: { type: bigint, default: "9223372036854775807" }
      fl: { type: float, default: -1.5 }
      dec: { type: decimal, default: "10.250" }
      flag: { type: boolean, default: false }
      at: { type: timestamp, default: "2024-01-02T03:04:05Z" }
      made: { type: timestamp, default: now }
      tags: { type: array, items: string, nullable: true }
      pet: { type: string, nullable: true, unique: true }
    indexes:
      - { columns: [n, big], unique: true }
`);
    expect(descriptions(p)).toEqual(['+ create table people (11 columns)', '+ create unique index people_n_big_key on people (n, big)']);
    const rows = await c.query(`INSERT INTO people (id) VALUES ('p1') RETURNING s, n, big, fl, dec::text, flag, at, tags`);
    expect(rows.rows[0]).toEqual({
      s: "it's a \\ test",
      n: -5,
      big: '9223372036854775807',
      fl: -1.5,
      dec: '10.250',
      flag: false,
      at: new Date('2024-01-02T03:04:05Z'),
      tags: null,
    });
  });

  it('quotes every identifier: names the parser would refuse still round-trip (defense in depth)', async () => {
    const odd: TableIR = {
      name: 'odd "name"; --',
      connection: 'main',
      primaryKey: { name: 'k"ey', type: 'bigint', generate: 'client' },
      columns: [
        { name: 'co"l', type: 'string', nullable: true, unique: true, default: { kind: 'literal', value: "x'); DROP TABLE people; --" } },
        {
          name: 'person',
          type: 'string',
          nullable: true,
          unique: false,
          references: { table: 'people', column: 'id', as: 'p', onDelete: 'set_null', onUpdate: 'cascade' },
        },
      ],
      indexes: [{ name: 'odd"idx', columns: ['co"l', 'person'], unique: false }],
    };
    const people = schemaOf('  people: {}\n').tables.people!;
    const run = async () =>
      planConnection({ connection: 'main', tables: [people, odd], previouslyManaged: [], live: await introspect(c), hasRows: (t) => tableHasRows(c, t) });
    const p = await run();
    await c.query('BEGIN');
    for (const s of p.steps) await c.query(s.sql);
    await c.query('COMMIT');
    expect(await run()).toEqual({ steps: [], unsupported: [], unmanaged: [], notes: [] });
    const live = (await introspect(c)).tables.get('odd "name"; --')!;
    expect(live.primaryKey?.columns).toEqual(['k"ey']);
    expect(live.uniques).toEqual([{ name: 'odd "name"; --_co"l_key', columns: ['co"l'] }]);
    expect(live.foreignKeys[0]).toMatchObject({ columns: ['person'], refTable: 'people', refColumns: ['id'], onDelete: 'set_null', onUpdate: 'cascade' });
    expect(live.indexes.find((i) => i.name === 'odd"idx')).toMatchObject({ columns: ['co"l', 'person'], unique: false, constraint: false });
    expect((await c.query(`SELECT count(*)::int AS n FROM people`)).rows[0].n).toBeGreaterThanOrEqual(0); // still there
  });

  it('adding a nullable column is safe; dropping one is destructive; a NOT NULL column without default needs an empty table', async () => {
    const base = `  items:
    columns:
      title: { type: string }
`;
    await apply(base);
    const p = await apply(base + '      note: { type: string, nullable: true }\n');
    expect(descriptions(p)).toEqual(['+ add column items.note (string, nullable)']);

    // the empty table accepts a NOT NULL column without default
    expect(descriptions(await apply(base + '      note: { type: string, nullable: true }\n      code: { type: int }\n'))).toEqual([
      '+ add column items.code (int)',
    ]);

    await c.query(`INSERT INTO items (id, title, code) VALUES ('a', 't', 1)`);
    const refused = await plan(base + '      note: { type: string, nullable: true }\n      code: { type: int }\n      more: { type: int }\n');
    expect(refused.unsupported).toEqual([expect.stringMatching(/cannot add NOT NULL column more without a default: the table already has rows/)]);
    expect(
      descriptions(await apply(base + '      note: { type: string, nullable: true }\n      code: { type: int }\n      more: { type: int, default: 7 }\n')),
    ).toEqual(['+ add column items.more (int)']);

    const drop = await apply(base + '      code: { type: int }\n      more: { type: int, default: 7 }\n');
    expect(descriptions(drop)).toEqual(['! drop column items.note and its data']);
  });

  it('classifies column changes: a lossless widening and relaxing are safe, narrowing and tightening NOT NULL are destructive, text→int is unsupported', async () => {
    await apply(`  metrics:
    columns:
      n: { type: int, nullable: true }
      label: { type: string, nullable: true, default: a }
      req: { type: string }
`);
    const p = await plan(`  metrics:
    columns:
      n: { type: bigint }
      label: { type: string, nullable: true, default: b }
      req: { type: string, nullable: true }
`);
    expect(descriptions(p)).toEqual([
      '+ widen metrics.n from integer to bigint (loses nothing; rewrites the table: reads and writes of it wait until done)',
      '! make metrics.n NOT NULL (fails if it holds NULLs)',
      '+ set default of metrics.label',
      '+ allow NULL in metrics.req',
    ]);
    await apply(`  metrics:
    columns:
      n: { type: bigint, nullable: true, default: 5 }
      label: { type: string, nullable: true, default: a }
      req: { type: string }
`);
    // bigint → int narrows: destructive (needs --force), and it fails rather than lose a value that does not fit
    const narrow = `  metrics:
    columns:
      n: { type: int, nullable: true, default: 5 }
      label: { type: string, nullable: true, default: a }
      req: { type: string }
`;
    expect(descriptions(await plan(narrow))).toEqual([
      '! drop default of metrics.n before its type change',
      '! change type of metrics.n from bigint to integer (fails if a value does not convert)',
      '+ set default of metrics.n',
    ]);
    await c.query(`INSERT INTO metrics (id, n, req) VALUES ('big', 3000000000, 'x')`);
    await expect(apply(narrow)).rejects.toMatchObject({ code: '22003' });
    await c.query(`DELETE FROM metrics`);
    await apply(narrow);
    const bad = await plan(`  metrics:
    columns:
      n: { type: int, nullable: true }
      label: { type: int, nullable: true }
      req: { type: string }
`);
    expect(bad.unsupported).toEqual([expect.stringMatching(/column metrics\.label: cannot change type from text to integer \(int\): no safe cast/)]);
  });

  it('drops undeclared indexes, unique constraints and FKs (destructive) and re-creates changed ones', async () => {
    await apply(`  owners: {}
  pets:
    columns:
      owner: { type: string, references: { table: owners, onDelete: cascade } }
      name: { type: string, unique: true }
    indexes:
      - { columns: [owner] }
`);
    await c.query('CREATE INDEX pets_manual ON pets (name)');
    const p = await plan(`  owners: {}
  pets:
    columns:
      owner: { type: string, references: { table: owners, onDelete: restrict } }
      name: { type: string }
    indexes:
      - { columns: [owner, name] }
`);
    expect(descriptions(p)).toEqual([
      '! drop foreign key pets_owner_fkey (pets.owner → owners): on delete CASCADE in the database, RESTRICT declared',
      '! drop unique constraint pets_name_key on pets (name)',
      '! drop index pets_manual on pets (not declared)',
      '! drop index pets_owner_idx on pets (not declared)',
      '+ create index pets_owner_name_idx on pets (owner, name)',
      '+ add foreign key pets.owner → owners.id (as owners, on delete restrict, on update restrict) (fails if existing rows violate it)',
    ]);
  });

  it('drops a table only when the previous release managed it; unmanaged tables are left alone', async () => {
    await c.query('CREATE TABLE legacy (x int)');
    await apply('  keep: {}\n  gone: {}\n');
    expect(descriptions(await plan('  keep: {}\n'))).toEqual([]); // gone was never released: untouched
    expect(descriptions(await plan('  keep: {}\n', ['keep', 'gone']))).toEqual(['! drop table gone and all its rows']);
  });

  it('a declared table that exists but apply did not create is unmanaged behind an adopt step, unless the previous release declared it', async () => {
    await c.query('CREATE TABLE theirs (id text PRIMARY KEY)');
    const p = await plan('  theirs: {}\n');
    expect(p.unmanaged).toEqual(['theirs']);
    expect(descriptions(p)).toEqual(['+ adopt table theirs, which santokit did not create (needs --adopt)']);
    expect((await plan('  theirs: {}\n', ['theirs'])).unmanaged).toEqual([]);
    await apply('  theirs: {}\n'); // runs the adopt step: the re-plan is empty
    expect((await introspect(c)).tables.get('theirs')!.managed).toBe(true);
    // tables apply creates carry the mark from the start
    await apply('  mine: {}\n');
    expect((await introspect(c)).tables.get('mine')!.managed).toBe(true);
  });

  it('primary key changes are unsupported, and manual changes show up as drift', async () => {
    await apply('  acct: { columns: { v: { type: string, default: x } } }\n');
    expect((await plan('  acct: { id: { generate: auto_increment }, columns: { v: { type: string, default: x } } }\n')).unsupported).toEqual([
      expect.stringMatching(/primary key id is text in the database but bigint is declared/),
    ]);
    await c.query(`ALTER TABLE acct ALTER COLUMN v SET DEFAULT 'y'`);
    await c.query('ALTER TABLE acct ADD COLUMN extra int');
    expect(descriptions(await plan('  acct: { columns: { v: { type: string, default: x } } }\n'))).toEqual([
      '+ set default of acct.v',
      '! drop column acct.extra and its data',
    ]);
  });
});

describe('equivalence table: live type vs declared type, foreign key actions', () => {
  it('compareTypes: kept, lossless widenings (safe), casts that can lose data (destructive), unsupported', () => {
    const cases: Array<[live: string, declared: string, verdict: ReturnType<typeof compareTypes>]> = [
      ['text', 'text', 'same'],
      ['timestamp without time zone', 'timestamp with time zone', 'kept'],
      ['character varying(255)', 'text', 'widen'],
      ['character varying', 'text', 'widen'],
      ['smallint', 'integer', 'widen'],
      ['integer', 'bigint', 'widen'],
      ['integer', 'numeric', 'widen'],
      ['integer', 'double precision', 'widen'],
      ['bigint', 'numeric', 'widen'],
      ['numeric(10,2)', 'numeric', 'widen'],
      // narrowing or reinterpreting: only with --force
      ['bigint', 'integer', 'cast'],
      ['bigint', 'double precision', 'cast'],
      ['numeric(10,2)', 'double precision', 'cast'],
      ['character(10)', 'text', 'cast'],
      ['integer', 'text', 'cast'],
      ['json', 'jsonb', 'cast'],
      ['timestamp without time zone', 'text', 'cast'],
      // never
      ['timestamp with time zone', 'timestamp without time zone', 'unsupported'],
      ['text', 'integer', 'unsupported'],
      ['text', 'timestamp with time zone', 'unsupported'],
      ['numeric', 'integer', 'unsupported'],
      ['double precision', 'integer', 'unsupported'],
      ['real', 'double precision', 'unsupported'],
      ['timestamp(3) without time zone', 'timestamp with time zone', 'unsupported'],
      ['character varying(26)', 'bigint', 'unsupported'],
    ];
    for (const [live, declared, verdict] of cases) expect(`${live} → ${declared}: ${compareTypes(live, declared)}`).toBe(`${live} → ${declared}: ${verdict}`);
  });

  it('fkActionsEquivalent: NO ACTION and RESTRICT stand for each other on a key that is not DEFERRABLE, nothing else does', () => {
    for (const live of FK_ACTIONS) {
      for (const declared of FK_ACTIONS) {
        const loose = (a: string) => a === 'no_action' || a === 'restrict';
        expect(fkActionsEquivalent(live, declared, false), `${live} for ${declared}`).toBe(live === declared || (loose(live) && loose(declared)));
        expect(fkActionsEquivalent(live, declared, true), `${live} for ${declared}, deferrable`).toBe(live === declared);
      }
    }
  });

  it('parseLiveDefault: LOCALTIMESTAMP and now() at time zone utc are now() on a timestamp column only', () => {
    for (const e of ['LOCALTIMESTAMP', "(now() AT TIME ZONE 'utc'::text)", "timezone('utc'::text, now())", "(now() AT TIME ZONE 'UTC'::text)"]) {
      expect(parseLiveDefault(e, 'timestamp without time zone'), e).toEqual({ kind: 'now' });
      expect(parseLiveDefault(e, 'timestamp with time zone').kind, e).toBe('other');
    }
    expect(parseLiveDefault('CURRENT_TIMESTAMP', 'timestamp without time zone')).toEqual({ kind: 'now' });
    expect(parseLiveDefault("(now() AT TIME ZONE 'Europe/Paris'::text)", 'timestamp without time zone').kind).toBe('other');
  });
});

/**
 * Tables an upstream user wrote by hand from the schema YAML (plain CREATE TABLE … REFERENCES …,
 * timestamp, varchar(n), serial, integer FK columns, their own index names): apply finds nothing
 * destructive. Equivalences are kept and listed in the plan's notes; lossless widenings are safe steps.
 */
describe('planner over tables written by hand', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let c: pg.Client;
  beforeAll(async () => {
    db = await createTestDatabase('handmade');
    c = new pg.Client({ connectionString: db.url });
    await c.connect();
    await c.query(`SET TIME ZONE 'UTC'`);
  });
  afterAll(async () => {
    await c?.end();
    await db?.drop();
  });

  const planOf = async (s: ReturnType<typeof parseSchema>, previouslyManaged: string[] = []) =>
    planConnection({ connection: 'main', tables: Object.values(s.tables), previouslyManaged, live: await introspect(c), hasRows: (t) => tableHasRows(c, t) });
  const run = async (p: ConnectionPlan) => {
    await c.query('BEGIN');
    try {
      for (const st of p.steps) await c.query(st.sql);
      await c.query('COMMIT');
    } catch (e) {
      await c.query('ROLLBACK');
      throw e;
    }
  };
  const descriptions = (p: ConnectionPlan) => p.steps.map((st) => `${st.destructive ? '!' : '+'} ${st.description}`);
  const basic = () =>
    parseSchema(
      readdirSync(join(EXAMPLE, 'schema'))
        .sort()
        .map((f) => ({ file: `schema/${f}`, content: readFileSync(join(EXAMPLE, 'schema', f), 'utf8') })),
    );

  it('examples/basic over its hand-written tables: only adopt and widening steps, the rest kept as equivalent; rows kept; no drift', async () => {
    await c.query(`
      CREATE TABLE users (
        id text PRIMARY KEY,
        email varchar(255) NOT NULL UNIQUE,
        name varchar(100),
        created_at timestamp NOT NULL DEFAULT now()
      );
      CREATE TABLE posts (
        id text PRIMARY KEY,
        title text NOT NULL,
        body text,
        author_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        published boolean NOT NULL DEFAULT false,
        status varchar(20) NOT NULL DEFAULT 'draft',
        created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP
      );
      CREATE INDEX posts_author ON posts (author_id);
      CREATE INDEX ON posts (status, created_at);
      INSERT INTO users (id, email, created_at) VALUES ('u1', 'ann@example.com', '2024-05-06 07:08:09.123456');
      INSERT INTO posts (id, title, author_id) VALUES ('p1', 'hello', 'u1');`);
    const p = await planOf(basic());
    expect(p.unsupported).toEqual([]);
    expect(p.unmanaged).toEqual(['posts', 'users']);
    expect(descriptions(p)).toEqual([
      '+ adopt table posts, which santokit did not create (needs --adopt)',
      '+ adopt table users, which santokit did not create (needs --adopt)',
      '+ widen posts.status from character varying(20) to text (loses nothing)',
      '+ widen users.email from character varying(255) to text (loses nothing)',
      '+ widen users.name from character varying(100) to text (loses nothing)',
    ]);
    expect(p.notes).toEqual([
      'posts.author_id: foreign key posts_author_id_fkey has on update NO ACTION where RESTRICT is declared: the same on a key that is not DEFERRABLE (kept as it is)',
      'posts.created_at is timestamp without time zone in the database where timestamp (timestamp with time zone) is declared: the Bridge writes and reads it as UTC time (kept as it is)',
      'posts: index posts_author (author_id) stands for the declared posts_author_id_idx (kept under its name)',
      'users.created_at is timestamp without time zone in the database where timestamp (timestamp with time zone) is declared: the Bridge writes and reads it as UTC time (kept as it is)',
    ]);
    await run(p);
    const again = await planOf(basic());
    expect(again).toEqual({ steps: [], unsupported: [], unmanaged: [], notes: p.notes });
    const rows = await c.query(`SELECT u.email, u.created_at::text AS at, p.status FROM users u JOIN posts p ON p.author_id = u.id`);
    expect(rows.rows).toEqual([{ email: 'ann@example.com', at: '2024-05-06 07:08:09.123456', status: 'draft' }]);
    const types = await c.query(
      `SELECT table_name || '.' || column_name AS col, data_type FROM information_schema.columns WHERE table_schema = 'public' AND column_name IN ('email', 'status', 'created_at') ORDER BY 1`,
    );
    expect(types.rows).toEqual([
      { col: 'posts.created_at', data_type: 'timestamp without time zone' },
      { col: 'posts.status', data_type: 'text' },
      { col: 'users.created_at', data_type: 'timestamp without time zone' },
      { col: 'users.email', data_type: 'text' },
    ]);
  });

  it('serial keys, integer FK columns, numeric(p,s), a unique index: widened (keys and their sequences too) or kept, never destructive', async () => {
    const shop = `version: 1
tables:
  authors:
    id: { generate: auto_increment }
    columns:
      handle: { type: string, unique: true }
      joined: { type: timestamp, default: now }
      karma: { type: decimal, default: 0 }
  articles:
    id: { generate: auto_increment }
    columns:
      author_id: { type: bigint, references: { table: authors, onDelete: cascade } }
      views: { type: bigint, default: 0 }
      edited: { type: timestamp, default: now }
`;
    const schema = parseSchema([{ file: 'schema/shop.yaml', content: shop }]);
    await c.query(`
      CREATE TABLE authors (id serial PRIMARY KEY, handle varchar(40) NOT NULL, joined timestamp NOT NULL DEFAULT LOCALTIMESTAMP, karma numeric(12,2) NOT NULL DEFAULT 0);
      CREATE UNIQUE INDEX authors_handle_uq ON authors (handle);
      CREATE TABLE articles (id bigserial PRIMARY KEY, author_id integer NOT NULL REFERENCES authors ON DELETE CASCADE ON UPDATE RESTRICT,
                             views integer NOT NULL DEFAULT 0, edited timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc'));
      INSERT INTO authors (handle, karma) VALUES ('ann', 1.25);
      INSERT INTO articles (author_id, views) VALUES (1, 7);`);
    const p = await planOf(schema);
    expect(p.unsupported).toEqual([]);
    expect(descriptions(p)).toEqual([
      '+ adopt table authors, which santokit did not create (needs --adopt)',
      '+ adopt table articles, which santokit did not create (needs --adopt)',
      '+ widen primary key authors.id from integer to bigint (loses nothing; rewrites the table: reads and writes of it wait until done)',
      '+ widen sequence authors_id_seq of authors.id from integer to bigint (loses nothing)',
      '+ widen authors.handle from character varying(40) to text (loses nothing)',
      '+ widen authors.karma from numeric(12,2) to numeric (loses nothing)',
      '+ widen articles.author_id from integer to bigint (loses nothing; rewrites the table: reads and writes of it wait until done)',
      '+ widen articles.views from integer to bigint (loses nothing; rewrites the table: reads and writes of it wait until done)',
    ]);
    expect(p.notes).toEqual([
      'authors.id: serial column (default nextval of sequence authors_id_seq) stands for generate auto_increment (kept as it is)',
      'authors.handle: unique index authors_handle_uq stands for the declared unique constraint (kept as it is)',
      'authors.joined is timestamp without time zone in the database where timestamp (timestamp with time zone) is declared: the Bridge writes and reads it as UTC time (kept as it is)',
      'articles.id: serial column (default nextval of sequence articles_id_seq) stands for generate auto_increment (kept as it is)',
      'articles.edited is timestamp without time zone in the database where timestamp (timestamp with time zone) is declared: the Bridge writes and reads it as UTC time (kept as it is)',
    ]);
    await run(p);
    expect(await planOf(schema)).toEqual({ steps: [], unsupported: [], unmanaged: [], notes: p.notes });
    // the ids the database generates now go past int32, through the widened sequence and columns
    await c.query(`SELECT setval('authors_id_seq', 3000000000)`);
    const made = await c.query(`INSERT INTO authors (handle) VALUES ('bob') RETURNING id::text, karma::text`);
    expect(made.rows).toEqual([{ id: '3000000001', karma: '0' }]);
    await c.query(`INSERT INTO articles (author_id) VALUES (3000000001)`);
    expect((await c.query(`SELECT karma::text FROM authors WHERE handle = 'ann'`)).rows).toEqual([{ karma: '1.25' }]);

    // a real difference stays a planned, destructive change: a DEFERRABLE key …
    await c.query(`ALTER TABLE articles ALTER CONSTRAINT articles_author_id_fkey DEFERRABLE INITIALLY DEFERRED`);
    expect(descriptions(await planOf(schema))).toEqual([
      '! drop foreign key articles_author_id_fkey (articles.author_id → authors): it is DEFERRABLE, declared keys are not',
      '+ add foreign key articles.author_id → authors.id (as authors, on delete cascade, on update restrict) (fails if existing rows violate it)',
    ]);
    // … and another action (ON DELETE RESTRICT where cascade is declared)
    await c.query(
      `ALTER TABLE articles DROP CONSTRAINT articles_author_id_fkey, ADD CONSTRAINT articles_author_fk FOREIGN KEY (author_id) REFERENCES authors ON DELETE RESTRICT`,
    );
    expect(descriptions(await planOf(schema))).toEqual([
      '! drop foreign key articles_author_fk (articles.author_id → authors): on delete RESTRICT in the database, CASCADE declared',
      '+ add foreign key articles.author_id → authors.id (as authors, on delete cascade, on update restrict) (fails if existing rows violate it)',
    ]);
    // a narrowing needs --force: views bigint → int
    const narrowed = parseSchema([
      { file: 'schema/shop.yaml', content: shop.replace('views: { type: bigint, default: 0 }', 'views: { type: int, default: 0 }') },
    ]);
    expect(descriptions(await planOf(narrowed)).filter((d) => d.includes('views'))).toEqual([
      '! drop default of articles.views before its type change',
      '! change type of articles.views from bigint to integer (fails if a value does not convert)',
      '+ set default of articles.views',
    ]);
  });

  it('a key drawing from a sequence of any name (another schema, quotes) widens it with every identifier quoted', async () => {
    await c.query(`CREATE SCHEMA "odd ""ns"""; CREATE SEQUENCE "odd ""ns"""."s""eq; --" AS integer;
      CREATE TABLE tick (id integer PRIMARY KEY DEFAULT nextval('"odd ""ns"""."s""eq; --"'))`);
    const schema = parseSchema([{ file: 'schema/t.yaml', content: 'version: 1\ntables:\n  tick: { id: { generate: auto_increment } }\n' }]);
    const p = await planOf(schema, ['tick']);
    expect(p.steps.map((st) => st.sql)).toEqual([
      'ALTER TABLE "public"."tick" ALTER COLUMN "id" TYPE bigint USING "id"::bigint',
      'ALTER SEQUENCE "odd ""ns"""."s""eq; --" AS bigint',
    ]);
    await run(p);
    expect((await planOf(schema, ['tick'])).steps).toEqual([]);
    const seq = await c.query(`SELECT format_type(seqtypid, NULL) AS type FROM pg_sequence WHERE seqrelid = '"odd ""ns"""."s""eq; --"'::regclass`);
    expect(seq.rows).toEqual([{ type: 'bigint' }]);
  });

  it('a timestamp default on a kept timestamp column is set as UTC time, and then matches', async () => {
    await c.query(`CREATE TABLE evt (id text PRIMARY KEY, at timestamp NOT NULL)`);
    const schema = parseSchema([
      { file: 'schema/e.yaml', content: 'version: 1\ntables:\n  evt:\n    columns:\n      at: { type: timestamp, default: "2024-01-02T05:04:05+02:00" }\n' },
    ]);
    const p = await planOf(schema, ['evt']);
    expect(descriptions(p)).toEqual(['+ set default of evt.at']);
    expect(p.steps[0]!.sql).toContain(`'2024-01-02T03:04:05.000Z'::timestamp without time zone`);
    await run(p);
    expect((await planOf(schema, ['evt'])).steps).toEqual([]);
    await c.query(`INSERT INTO evt (id) VALUES ('e1')`);
    expect((await c.query(`SELECT at::text FROM evt`)).rows).toEqual([{ at: '2024-01-02 03:04:05' }]);
  });
});
