/**
 * Issue 15, item 4: an upstream user's tables, written by hand from examples/basic's YAML exactly as one
 * would (plain `CREATE TABLE … REFERENCES …`, `timestamp` columns, `varchar(n)`, their own index name),
 * holding rows, in a database whose default time zone is not UTC. The first `stk apply` stops only to
 * ask for `--adopt` (apply never takes over a table it did not create silently) and prints the one line
 * to run; run as printed, by a real shell, it applies without `--force`: lossless widenings, the rest kept
 * as equivalent and listed. The rows stay, and `/call` reads and writes them, timestamps included.
 * A real difference (a foreign key action) is still a destructive step that needs `--force`.
 */
import { spawn } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXAMPLE_DIR, startStack, type Stack } from '../helpers/fuzz-stack.js';
import { query } from '../helpers/pg.js';
import { STK, waitFor, type Proc } from '../helpers/procs.js';

const HANDMADE = `
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
    created_at timestamp NOT NULL DEFAULT now()
  );
  CREATE INDEX posts_author ON posts (author_id);
  CREATE INDEX ON posts (status, created_at);
  INSERT INTO users (id, email, name, created_at) VALUES ('u1', 'ann@example.com', 'Ann', '2024-05-06 07:08:09.123456');
  INSERT INTO posts (id, title, author_id, published, created_at) VALUES ('p1', 'hello', 'u1', true, '2024-05-07 00:00:00');
`;

describe('stk apply over tables written by hand (upstream users)', () => {
  let s: Stack;
  let bridge: Proc;
  /** the user's project folder: a copy of examples/basic in a path with a space (the printed line must quote it) */
  let dir = '';
  /** a PATH entry with an `stk` that runs this checkout's CLI, for running printed lines in a real shell */
  let bin = '';

  const apply = (...flags: string[]) => s.stk(['apply', '--project', s.project, '--env', s.env, '--dir', dir, ...flags]);
  const shell = (line: string) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve, reject) => {
      const env = {
        ...process.env,
        PATH: `${bin}:${process.env.PATH}`,
        NO_COLOR: '1',
        STK_NO_INPUT: '1',
        STK_CONFIG_DIR: s.cfg,
        STK_HUB_URL: s.hub.url,
        STK_AUTH_TOKEN: s.owner,
      };
      const child = spawn('bash', ['-c', line], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  /** the line a refusal tells to run: the one after "run:" */
  const lineToRun = (stderr: string) => {
    const lines = stderr.split('\n');
    const i = lines.findIndex((l) => l.trimEnd().endsWith('run:'));
    expect(i, stderr).toBeGreaterThanOrEqual(0);
    return lines[i + 1]!.trim();
  };
  const columns = async () =>
    (
      await query<{ col: string; type: string }>(
        s.dbUrl,
        `SELECT table_name || '.' || column_name AS col, format_type(atttypid, atttypmod) AS type
       FROM information_schema.columns JOIN pg_attribute ON attrelid = ('public.' || quote_ident(table_name))::regclass AND attname = column_name
      WHERE table_schema = 'public' ORDER BY 1`,
      )
    ).map((r) => `${r.col} ${r.type}`);
  async function call(key: string, path: string, params: unknown) {
    const r = await fetch(`${bridge.url}/call`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-santokit-api-key': key },
      body: JSON.stringify({ path, params }),
    });
    const raw = await r.text();
    return { status: r.status, body: JSON.parse(raw) as { data?: any }, raw };
  }

  beforeAll(async () => {
    s = await startStack({ bridges: 0, apply: false });
    // the Bridge and apply run their sessions in UTC whatever the database's default says
    await query(s.dbUrl, `ALTER DATABASE ${s.dbName} SET timezone TO 'America/New_York'`);
    await query(s.dbUrl, HANDMADE);
    const root = mkdtempSync(join(tmpdir(), 'stk-upstream-'));
    dir = join(root, 'my app');
    cpSync(EXAMPLE_DIR, dir, { recursive: true });
    bin = join(root, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'stk'), `#!/bin/sh\nexec "${process.execPath}" "${STK}" "$@"\n`);
    chmodSync(join(bin, 'stk'), 0o755);
  }, 120_000);
  const seen = { steps: 0, destructive: -1, kept: 0, rowsKept: 0, timestampsExact: false, fkChangeDestructive: false };
  afterAll(async () => {
    await s?.stop();
    console.log(
      `[compat] apply over hand-made examples/basic tables: first apply 409 asking only for --adopt (${seen.steps} steps, ${seen.destructive} destructive, ${seen.kept} kept as equivalent); ` +
        `the printed line applied it without --force keeping ${seen.rowsKept} rows; /call read, wrote, filtered and defaulted its timestamp columns as UTC: ${seen.timestampsExact}; an FK action change still destructive: ${seen.fkChangeDestructive}`,
    );
  });

  it('the first apply asks for --adopt only, changes nothing, and prints the one line to run', async () => {
    const before = await columns();
    const r = await apply();
    expect(r.code, r.output).toBe(1);
    expect(r.stderr).toContain('(409 CONFLICT)');
    // nothing in the plan needs --force
    expect(r.stderr).toMatch(/Plan \(5 steps\):/);
    expect(r.stderr).not.toContain('[destructive]');
    expect(r.stderr).toContain('+ main: widen users.email from character varying(255) to text (loses nothing)');
    expect(r.stderr).toContain('Kept as they are (equivalent to the schema):');
    expect(r.stderr).toContain(
      '= main: users.created_at is timestamp without time zone in the database where timestamp (timestamp with time zone) is declared',
    );
    expect(r.stderr).toContain('= main: posts.author_id: foreign key posts_author_id_fkey has on update NO ACTION where RESTRICT is declared');
    expect(r.stderr).toContain('= main: posts: index posts_author (author_id) stands for the declared posts_author_id_idx');
    expect(lineToRun(r.stderr)).toBe(`stk apply --project ${s.project} --env ${s.env} --dir '${dir}' --adopt`);
    expect(await columns()).toEqual(before);
    seen.steps = Number(/Plan \((\d+) steps/.exec(r.stderr)![1]);
    seen.destructive = (r.stderr.match(/\[destructive\]/g) ?? []).length;
    seen.kept = (r.stderr.match(/^ {2}= /gm) ?? []).length;
  });

  it('the printed line, run by a shell, applies without --force: widened, the rest kept, rows intact; a second apply has nothing to do', async () => {
    const r = await shell(lineToRun((await apply()).stderr));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('Plan (5 steps):');
    expect(r.stdout).toMatch(/Release: \S+ \(new\)/);
    expect(await columns()).toEqual([
      'posts.author_id text',
      'posts.body text',
      'posts.created_at timestamp without time zone',
      'posts.id text',
      'posts.published boolean',
      'posts.status text',
      'posts.title text',
      'users.created_at timestamp without time zone',
      'users.email text',
      'users.id text',
      'users.name text',
    ]);
    expect(await query(s.dbUrl, `SELECT id, email, name, created_at::text AS at FROM users`)).toEqual([
      { id: 'u1', email: 'ann@example.com', name: 'Ann', at: '2024-05-06 07:08:09.123456' },
    ]);
    expect(await query(s.dbUrl, `SELECT id, title, status FROM posts`)).toEqual([{ id: 'p1', title: 'hello', status: 'draft' }]);
    seen.rowsKept = 2;

    const again = await apply();
    expect(again.code, again.output).toBe(0);
    expect(again.stdout).toContain('No schema changes.');
    expect(again.stdout).toContain('Kept as they are (equivalent to the schema):');
    expect(again.stdout).toMatch(/Release: \S+ \(reused\)/);
    const json = await apply('--dry-run', '--json');
    expect(json.code, json.output).toBe(0);
    const out = JSON.parse(json.stdout) as { plan: unknown[]; notes: string[] };
    expect(out.plan).toEqual([]);
    expect(out.notes).toHaveLength(4);

    // rollback's check (does the release fit the live database?) accepts the kept timestamp columns too
    const first = /Release: (\S+) \(reused\)/.exec(again.stdout)![1]!;
    const v2 = await apply('--ref', 'v2');
    expect(v2.code, v2.output).toBe(0);
    expect(v2.stdout).toMatch(/Release: \S+ \(new\)/);
    const back = await s.stk(['release', 'rollback', '--project', s.project, '--env', s.env, '--to-release-id', first]);
    expect(back.code, back.output).toBe(0);
    expect(back.stderr).toContain(`rolled back to release ${first}`);
  });

  it('/call reads and writes the hand-made tables: timestamps round-trip as UTC, filters compare them, defaults are UTC now()', async () => {
    bridge = await s.startBridge();
    await waitFor(
      async () => (await fetch(`${bridge.url}/readyz?project=${s.project}&env=${s.env}`, { headers: { 'x-santokit-service-token': s.hub.serviceToken } })).ok,
      30_000,
      'bridge ready',
    );
    const { key } = await s.createKey('upstream-admin', ['admin']);
    await waitFor(async () => (await call(key, 'db/users/select', {})).status === 200, 30_000, 'key synced');

    const ann = await call(key, 'db/users/select', { where: { email: 'ann@example.com' } });
    expect(ann.status, ann.raw).toBe(200);
    expect(ann.body.data).toEqual([{ id: 'u1', email: 'ann@example.com', name: 'Ann', created_at: '2024-05-06T07:08:09.123456Z' }]);

    // written with an offset: stored as its UTC time, read back the same instant
    const bob = await call(key, 'db/users/insert', {
      data: { email: `${'b'.repeat(300)}@example.com`, name: 'Bob', created_at: '2024-01-02T05:04:05.5+02:00' },
    });
    expect(bob.status, bob.raw).toBe(200); // longer than the old varchar(255): the widening mattered
    expect(bob.body.data).toMatchObject({ name: 'Bob', created_at: '2024-01-02T03:04:05.5Z' });
    expect(bob.body.data.id).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
    expect(await query(s.dbUrl, `SELECT created_at::text AS at FROM users WHERE name = 'Bob'`)).toEqual([{ at: '2024-01-02 03:04:05.5' }]);

    const early = await call(key, 'db/users/select', { where: { created_at: { $lt: '2024-03-01T00:00:00Z' } } });
    expect(early.status, early.raw).toBe(200);
    expect(early.body.data.map((u: { name: string }) => u.name)).toEqual(['Bob']);
    const exact = await call(key, 'db/users/select', { where: { created_at: '2024-05-06T09:08:09.123456+02:00' } });
    expect(exact.body.data.map((u: { id: string }) => u.id)).toEqual(['u1']);

    // the column default (now(), kept from the hand-made table) runs in the Bridge's UTC session
    const post = await call(key, 'db/posts/insert', { data: { title: 'second', author_id: 'u1' } });
    expect(post.status, post.raw).toBe(200);
    expect(post.body.data.status).toBe('draft');
    expect(Math.abs(Date.parse(post.body.data.created_at) - Date.now())).toBeLessThan(10 * 60_000);
    const upd = await call(key, 'db/posts/update', { where: { id: 'p1' }, data: { created_at: '2024-06-01T12:00:00Z' } });
    expect(upd.status, upd.raw).toBe(200);
    const posts = await call(key, 'db/posts/select', { where: { author_id: 'u1' }, expand: ['author'], orderBy: { created_at: 'asc' } });
    expect(posts.status, posts.raw).toBe(200);
    expect(posts.body.data.map((p: { title: string; created_at: string; author: { name: string } }) => [p.title, p.author.name])).toEqual([
      ['hello', 'Ann'],
      ['second', 'Ann'],
    ]);
    expect(posts.body.data[0].created_at).toBe('2024-06-01T12:00:00Z');
    seen.timestampsExact = true;
  });

  it('a real difference is still a planned change that needs --force: ON DELETE RESTRICT where cascade is declared', async () => {
    await query(
      s.dbUrl,
      `ALTER TABLE posts DROP CONSTRAINT posts_author_id_fkey, ADD CONSTRAINT posts_author_fk FOREIGN KEY (author_id) REFERENCES users (id) ON DELETE RESTRICT`,
    );
    const r = await apply();
    expect(r.code, r.output).toBe(1);
    expect(r.stderr).toContain(
      '! main: drop foreign key posts_author_fk (posts.author_id → users): on delete RESTRICT in the database, CASCADE declared  [destructive]',
    );
    expect(r.stderr).toContain('the plan has 1 destructive step');
    const line = lineToRun(r.stderr);
    expect(line).toBe(`stk apply --project ${s.project} --env ${s.env} --dir '${dir}' --force`);
    seen.fkChangeDestructive = true;
    const forced = await shell(line);
    expect(forced.code, forced.stdout + forced.stderr).toBe(0);
    const fk = await query<{ def: string }>(
      s.dbUrl,
      `SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conrelid = 'public.posts'::regclass AND contype = 'f'`,
    );
    expect(fk).toEqual([{ def: 'FOREIGN KEY (author_id) REFERENCES users(id) ON UPDATE RESTRICT ON DELETE CASCADE' }]);
    expect((await query(s.dbUrl, 'SELECT count(*)::int AS n FROM posts'))[0]).toEqual({ n: 2 });
  });
});
