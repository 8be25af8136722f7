import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { introspect, tableHasRows } from '../../src/hub/services/apply/introspect.js';
import { planConnection, type ConnectionPlan } from '../../src/hub/services/apply/plan.js';
import { parseSchema } from '../../src/hub/services/apply/schema.js';
import type { TableIR } from '../../src/protocol/release.js';
import { createTestDatabase } from '../helpers/pg.js';

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
    expect(again, 'drift after apply').toEqual({ steps: [], unsupported: [], unmanaged: [] });
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
    expect(rows.rows[0]).toEqual({ s: "it's a \\ test", n: -5, big: '9223372036854775807', fl: -1.5, dec: '10.250', flag: false, at: new Date('2024-01-02T03:04:05Z'), tags: null });
  });

  it('quotes every identifier: names the parser would refuse still round-trip (defense in depth)', async () => {
    const odd: TableIR = {
      name: 'odd "name"; --',
      connection: 'main',
      primaryKey: { name: 'k"ey', type: 'bigint', generate: 'client' },
      columns: [
        { name: 'co"l', type: 'string', nullable: true, unique: true, default: { kind: 'literal', value: "x'); DROP TABLE people; --" } },
        { name: 'person', type: 'string', nullable: true, unique: false, references: { table: 'people', column: 'id', as: 'p', onDelete: 'set_null', onUpdate: 'cascade' } },
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
    expect(await run()).toEqual({ steps: [], unsupported: [], unmanaged: [] });
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
    expect(descriptions(await apply(base + '      note: { type: string, nullable: true }\n      code: { type: int }\n'))).toEqual(['+ add column items.code (int)']);

    await c.query(`INSERT INTO items (id, title, code) VALUES ('a', 't', 1)`);
    const refused = await plan(base + '      note: { type: string, nullable: true }\n      code: { type: int }\n      more: { type: int }\n');
    expect(refused.unsupported).toEqual([expect.stringMatching(/cannot add NOT NULL column more without a default: the table already has rows/)]);
    expect(descriptions(await apply(base + '      note: { type: string, nullable: true }\n      code: { type: int }\n      more: { type: int, default: 7 }\n'))).toEqual([
      '+ add column items.more (int)',
    ]);

    const drop = await apply(base + '      code: { type: int }\n      more: { type: int, default: 7 }\n');
    expect(descriptions(drop)).toEqual(['! drop column items.note and its data']);
  });

  it('classifies column changes: widen type and tighten NOT NULL are destructive, relax and defaults are safe, text→int is unsupported', async () => {
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
      '! change type of metrics.n from integer to bigint',
      '! make metrics.n NOT NULL (fails if it holds NULLs)',
      '+ set default of metrics.label',
      '+ allow NULL in metrics.req',
    ]);
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
      '! drop foreign key pets_owner_fkey (pets.owner → owners)',
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
