/**
 * `stk apply` never touches a table santokit did not create unless `--adopt` is given (issue 12,
 * finding 7): a database that already has its own `users` table (with a column and rows the schema does
 * not know) is refused with 409 and left byte for byte as it was, with or without `--force`; `--adopt`
 * shows and runs the plan (its destructive steps still need `--force`); afterwards the table is managed
 * like one apply created. The same holds for `stk release promote` into an env whose database has such
 * a table.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXAMPLE_DIR, startStack, withPassword, type Stack } from '../helpers/fuzz-stack.js';
import { createTestDatabase, query } from '../helpers/pg.js';

describe('security: apply adopts an existing table only with --adopt', () => {
  let s: Stack;
  let prod: Awaited<ReturnType<typeof createTestDatabase>>;
  const seen = { refused: 0, unchanged: 0, adoptedRows: 0 };
  const apply = (...flags: string[]) => s.stk(['apply', '--project', s.project, '--env', s.env, '--dir', EXAMPLE_DIR, ...flags]);
  /** Everything about the foreign table that could change: columns, constraints, rows. */
  const snapshot = async (url: string, table: string) =>
    JSON.stringify([
      await query(
        url,
        `SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position`,
        [table],
      ),
      await query(url, `SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conrelid = $1::regclass ORDER BY conname`, [
        `public.${table}`,
      ]),
      await query(url, `SELECT * FROM public.${table} ORDER BY 1`),
      await query(url, `SELECT obj_description($1::regclass, 'pg_class') AS comment`, [`public.${table}`]),
    ]);
  const tables = async (url: string) =>
    (await query<{ t: string }>(url, `SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`)).map((r) => r.t);

  beforeAll(async () => {
    s = await startStack({ bridges: 0, apply: false });
    // the database already has a users table of its own: same name, an extra column, rows
    await query(
      s.dbUrl,
      `CREATE TABLE public.users (id text PRIMARY KEY, email text NOT NULL, name text, created_at timestamptz NOT NULL DEFAULT now(), legacy_note text);
      INSERT INTO public.users (id, email, legacy_note) VALUES ('u1', 'a@example.com', 'keep me'), ('u2', 'b@example.com', 'me too')`,
    );
    prod = await createTestDatabase('adopt_prod');
  }, 120_000);
  afterAll(async () => {
    await s?.stop();
    await prod?.drop();
    console.log(
      `[security] apply adopt: ${seen.refused} applies/promotes without --adopt (plain and --force) → 409, ${seen.unchanged} of them left the foreign table unchanged; --adopt --force adopted users with its ${seen.adoptedRows} rows`,
    );
  });

  it('without --adopt: 409 naming the table, nothing applied, the table exactly as it was — with --force too', async () => {
    const before = await snapshot(s.dbUrl, 'users');
    for (const flags of [[], ['--force']]) {
      const r = await apply(...flags);
      expect(r.code, r.output).toBe(1);
      expect(r.stderr).toContain('(409 CONFLICT)');
      expect(r.stderr).toContain('table users (on connection main) already exists and was not created by santokit');
      expect(r.stderr).toContain('Re-run with --adopt');
      seen.refused++;
      expect(await snapshot(s.dbUrl, 'users'), `stk apply ${flags.join(' ')}`).toBe(before);
      seen.unchanged++;
      // the whole plan was refused: posts was not created either
      expect(await tables(s.dbUrl)).toEqual(['users']);
    }
    const dry = await apply('--dry-run', '--json');
    expect(dry.code, dry.output).toBe(0);
    const plan = JSON.parse(dry.stdout).plan as Array<{ description: string; destructive: boolean }>;
    expect(plan.map((p) => p.description)).toContain('adopt table users, which santokit did not create (needs --adopt)');
    expect(plan.find((p) => p.description === 'drop column users.legacy_note and its data')?.destructive).toBe(true);
  });

  it('--adopt alone still refuses its destructive steps; --adopt --force applies; then the table is managed', async () => {
    const before = await snapshot(s.dbUrl, 'users');
    const adopt = await apply('--adopt');
    expect(adopt.code).toBe(1);
    expect(adopt.stderr).toContain('destructive');
    expect(adopt.stderr).toContain('--force');
    expect(await snapshot(s.dbUrl, 'users')).toBe(before);

    const both = await apply('--adopt', '--force');
    expect(both.code, both.output).toBe(0);
    expect(both.stdout).toContain('adopt table users');
    expect(await tables(s.dbUrl)).toEqual(['posts', 'users']);
    const rows = await query<{ id: string; email: string }>(s.dbUrl, 'SELECT id, email FROM public.users ORDER BY id');
    expect(rows).toEqual([
      { id: 'u1', email: 'a@example.com' },
      { id: 'u2', email: 'b@example.com' },
    ]);
    seen.adoptedRows = rows.length;
    // managed now: a plain apply has nothing to do and needs no flag
    const again = await apply();
    expect(again.code, again.output).toBe(0);
    expect(again.stdout).toContain('No schema changes.');
    // and the adoption is in the audit log
    const audit = await s.api('GET', `/api/audit?project=${s.project}&action=apply.run`);
    expect(audit.status, audit.text).toBe(200);
    expect(audit.json.items.map((i: { detail: { adopted?: string[] } }) => i.detail.adopted)).toContainEqual(['main: users']);
  });

  it('stk release promote into a database with its own posts table: refused without --adopt, applied with it', async () => {
    expect((await s.stk(['env', 'create', '--project', s.project, 'prod'])).code).toBe(0);
    const url = withPassword(prod.url);
    expect((await s.stk(['connections', 'set', '--project', s.project, '--env', 'prod', '--name', 'main', '--db-url', url])).code).toBe(0);
    await query(prod.url, 'CREATE TABLE public.posts (id text PRIMARY KEY, note text)');
    const before = await snapshot(prod.url, 'posts');
    const promote = (...flags: string[]) => s.stk(['release', 'promote', '--project', s.project, '--from', s.env, '--to', 'prod', ...flags]);
    for (const flags of [[], ['--force']]) {
      const r = await promote(...flags);
      expect(r.code, r.output).toBe(1);
      expect(r.stderr).toContain('table posts (on connection main) already exists and was not created by santokit');
      seen.refused++;
      expect(await snapshot(prod.url, 'posts')).toBe(before);
      seen.unchanged++;
      expect(await tables(prod.url)).toEqual(['posts']);
    }
    const ok = await promote('--adopt', '--force');
    expect(ok.code, ok.output).toBe(0);
    expect(await tables(prod.url)).toEqual(['posts', 'users']);
  });
});
