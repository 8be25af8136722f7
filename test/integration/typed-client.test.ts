/**
 * `santokit/client` with types from `stk gen types`, as an app uses them: a real stack (Hub, examples/basic
 * applied by `stk apply`, a Bridge), the real CLI writing the types, an app in its own directory that
 * imports `santokit/client` through the package's `exports` (node_modules/santokit → this checkout),
 * `tsc --noEmit` over it, and the app run against the live Bridge with real API keys.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStack, type KeyInfo, type Stack } from '../helpers/fuzz-stack.js';
import { ROOT } from '../helpers/procs.js';
import { query } from '../helpers/pg.js';

const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
const TSX = join(ROOT, 'node_modules/tsx/dist/cli.mjs');

let stack: Stack;
let app: string;
let admin: KeyInfo;
let reader: KeyInfo;

function run(args: string[], cwd: string, env: Record<string, string> = {}): Promise<{ code: number; output: string; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code: code ?? -1, output: stdout + stderr, stdout });
    });
  });
}

/** A TypeScript project in `dir` compiling only `files` (strict, NodeNext: what a Node app uses). */
function project(dir: string, files: string[]): void {
  // @types/node from this checkout (a Node app has its own); skipLibCheck off: santokit's declarations are checked too
  const compilerOptions = {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    noEmit: true,
    skipLibCheck: false,
    typeRoots: [join(ROOT, 'node_modules/@types')],
    types: ['node'],
  };
  writeFileSync(join(dir, `tsconfig.${files[0]!.replace(/\.ts$/, '')}.json`), JSON.stringify({ compilerOptions, files: ['santokit.ts', ...files] }));
}
const tsc = (file: string) => run([TSC, '--noEmit', '-p', `tsconfig.${file.replace(/\.ts$/, '')}.json`], app);

/** The app: writes and reads through the typed client, prints what it got back as JSON. */
const GOOD_APP = `
import { createClient, SantokitError } from 'santokit/client';
import type { Database } from './santokit.js';

const url = process.env.BRIDGE_URL!;
const admin = createClient<Database, 'admin'>({ url, apiKey: process.env.ADMIN_KEY! });
const reader = createClient<Database, 'reader'>({ url, apiKey: process.env.READER_KEY! });

const ada = await admin.db('users').insert({ email: 'ada@example.com', name: 'Ada' });
const [bob, cy] = await admin.db('users').insert([{ email: 'bob@example.com' }, { email: 'cy@example.com', name: null, created_at: new Date('2020-01-02T03:04:05Z') }]);
const post = await admin.db('posts').insert({ title: 'Hello', author_id: ada.id, published: true });
const draft = await admin.db('posts').insert({ title: 'Draft', body: 'wip', author_id: bob!.id });

const published = await reader.db('posts').select({ where: { published: true }, orderBy: { created_at: 'desc' }, limit: 10, expand: ['author'] });
const authorEmail: string | undefined = published[0]?.author?.email;
const titles = await reader.db('posts').select({ select: ['id', 'title'], orderBy: [{ title: 'asc' }] });
const oldest = await admin.db('users').select({ where: { created_at: { $lt: new Date('2021-01-01T00:00:00Z') } }, select: ['email', 'created_at'] });
const renamed = await admin.db('users').update({ where: { id: bob!.id }, data: { name: 'Bob' } });
const deleted = await admin.db('users').delete({ where: { email: { $in: ['cy@example.com'] } } });

async function refusal(f: () => Promise<unknown>) {
  try {
    await f();
    return null;
  } catch (e) {
    if (!(e instanceof SantokitError)) throw e;
    return { name: e.name, code: e.code, status: e.status, requestId: e.requestId, message: e.message };
  }
}
const forbidden = await refusal(() => reader.call('db/users/insert', { data: { email: 'eve@example.com' } }));
const badKey = await refusal(() => createClient<Database>({ url, apiKey: 'stk_nope' }).db('users').select());
const badValue = await refusal(() => admin.call('db/users/select', { where: { created_at: { $lt: 'yesterday' } } }));

console.log(JSON.stringify({ ada, bob, cy, post, draft, published, authorEmail, titles, oldest, renamed, deleted, forbidden, badKey, badValue }));
`;

/** The same app with one column misspelled: must not compile. */
const MISUSE_APP = `
import { createClient } from 'santokit/client';
import type { Database } from './santokit.js';

const admin = createClient<Database, 'admin'>({ url: 'http://localhost:3000', apiKey: 'k' });
const rows = await admin.db('users').select({ where: { emial: 'ada@example.com' } });
console.log(rows);
`;

/** Each line after @ts-expect-error must be a compile error (tsc fails on one that is not). */
const MISUSES = `
import { createClient } from 'santokit/client';
import type { Database } from './santokit.js';

const admin = createClient<Database, 'admin'>({ url: 'http://localhost:3000', apiKey: 'k' });
const reader = createClient<Database, 'reader'>({ url: 'http://localhost:3000', apiKey: 'k' });
// @ts-expect-error a table the release does not have
admin.db('userz');
// @ts-expect-error a column not selected is not in the row
(await admin.db('posts').select({ select: ['id'] }))[0]!.title;
// @ts-expect-error a value of the wrong type
await admin.db('users').insert({ email: 5 });
// @ts-expect-error a required column left out
await admin.db('users').insert({ name: 'x' });
// @ts-expect-error the generated primary key is not sent
await admin.db('users').insert({ id: '01J0000000000000000000000', email: 'x' });
// @ts-expect-error null in a NOT NULL column
await admin.db('users').update({ where: { id: 'x' }, data: { email: null } });
// @ts-expect-error update without where
await admin.db('users').update({ data: { name: 'x' } });
// @ts-expect-error the reader role may not insert (permissions.yaml)
await reader.db('users').insert({ email: 'x' });
// @ts-expect-error nor delete posts
await reader.db('posts').delete({ where: { id: 'x' } });
// @ts-expect-error $like on a boolean column
await admin.db('posts').select({ where: { published: { $like: 'x' } } });
// @ts-expect-error a relation the table does not have
await admin.db('posts').select({ expand: ['writer'] });
// @ts-expect-error sorting on a column the table does not have
await admin.db('users').select({ orderBy: { nope: 'asc' } });
// @ts-expect-error an expanded author has no title
(await admin.db('posts').select({ expand: ['author'] }))[0]!.author!.title;
`;

beforeAll(async () => {
  stack = await startStack();
  admin = await stack.createKey('typed-admin', ['admin']);
  reader = await stack.createKey('typed-reader', ['reader']);
  app = mkdtempSync(join(tmpdir(), 'stk-typed-app-'));
  mkdirSync(join(app, 'node_modules'));
  symlinkSync(ROOT, join(app, 'node_modules/santokit'), 'dir');
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'typed-app', private: true, type: 'module' }));
  writeFileSync(join(app, 'app.ts'), GOOD_APP);
  writeFileSync(join(app, 'misuse.ts'), MISUSE_APP);
  writeFileSync(join(app, 'misuses.ts'), MISUSES);
  project(app, ['app.ts', 'misuses.ts']);
  project(app, ['misuse.ts']);
});

afterAll(async () => {
  await stack?.stop();
  if (app) rmSync(app, { recursive: true, force: true });
});

describe('stk gen types → santokit/client, checked by tsc and run against the Bridge', () => {
  it("stk gen types writes the current release: tables, nullability, relations, each role's operations", async () => {
    const r = await stack.stk(['gen', 'types', '--project', stack.project, '--env', stack.env, '--out', join(app, 'santokit.ts')]);
    expect(r.code, r.output).toBe(0);
    expect(r.stdout).toBe('');
    const current = await stack.api('GET', `/api/projects/${stack.project}/envs/${stack.env}/releases/current`);
    expect(r.stderr).toContain(`Wrote types for ${stack.project}/${stack.env} (release ${current.json.releaseId}, 2 tables)`);
    const types = readFileSync(join(app, 'santokit.ts'), 'utf8');
    expect(types).toContain(`release ${current.json.releaseId}`);
    expect(types).toContain('Row: { id: string; email: string; name: string | null; created_at: string }');
    expect(types).toContain('Insert: { email: string; name?: string | null; created_at?: string | Date }');
    expect(types).toContain("Relations: { author: 'users' }");
    // reader: select only (with expand), on both tables; admin: everything
    expect(types).toMatch(/reader: \{\n\s+posts: \{ select: [^;]+; expand: 'author' \};\n\s+users: \{ select: [^;]+ \};\n\s+\};/);
    expect(types).toMatch(/admin: \{\n\s+posts: \{ select: [^}]*insert: [^}]*update: [^}]*delete: true \};/);

    // the same types on stdout without --out
    const again = await stack.stk(['gen', 'types', '--project', stack.project, '--env', stack.env]);
    expect(again.code, again.output).toBe(0);
    expect(again.stdout).toBe(types);
  });

  it('stk gen types: an env without a release, a wrong token, no project', async () => {
    const env = await stack.stk(['env', 'create', '--project', stack.project, 'empty']);
    expect(env.code, env.output).toBe(0);
    const none = await stack.stk(['gen', 'types', '--project', stack.project, '--env', 'empty']);
    expect(none.code).toBe(1);
    expect(none.stdout).toBe('');
    expect(none.stderr).toMatch(/has no release yet \(run stk apply\) \(404 NOT_FOUND\)/);
    const anon = await stack.stk(['gen', 'types', '--project', stack.project, '--env', stack.env], { token: 'not-a-session' });
    expect(anon.code).toBe(1);
    expect(anon.stderr).toContain('401');
    const noProject = await stack.stk(['gen', 'types', '--env', stack.env]);
    expect(noProject.code).toBe(2);
    expect(noProject.stderr).toContain('--project');
  });

  it('the app compiles against the generated types, and every misuse in the catalogue is a compile error (tsc --noEmit)', async () => {
    // one program: app.ts must have no error, misuses.ts one on each line after @ts-expect-error (else TS2578)
    const r = await tsc('app.ts');
    expect(r.output).toBe('');
    expect(r.code).toBe(0);
  });

  it('a misspelled column does not compile, and tsc names it', async () => {
    const r = await tsc('misuse.ts');
    expect(r.code).not.toBe(0);
    expect(r.output).toMatch(/misuse\.ts\(6,\d+\): error TS2561: .*'emial' does not exist .*Did you mean to write 'email'\?/);
  });

  it('the app runs against the live Bridge with real keys: rows as typed, refusals as SantokitError', async () => {
    const r = await run([TSX, 'app.ts'], app, { BRIDGE_URL: stack.bridges[0]!.url, ADMIN_KEY: admin.key, READER_KEY: reader.key });
    expect(r.code, r.output).toBe(0);
    expect(r.output).not.toContain(admin.key);
    const out = JSON.parse(r.stdout);

    expect(out.ada).toMatchObject({ email: 'ada@example.com', name: 'Ada' });
    expect(out.ada.id).toMatch(/^[0-9A-Z]{26}$/);
    expect(out.bob).toMatchObject({ email: 'bob@example.com', name: null });
    expect(out.cy).toMatchObject({ email: 'cy@example.com', name: null, created_at: '2020-01-02T03:04:05Z' });
    expect(out.post).toMatchObject({ title: 'Hello', author_id: out.ada.id, published: true, status: 'draft', body: null });

    // the reader's rule shows published posts only; expand resolved the author with the reader's users rule
    expect(out.published).toEqual([{ ...out.post, author: out.ada }]);
    expect(out.authorEmail).toBe('ada@example.com');
    expect(out.titles).toEqual([{ id: out.post.id, title: 'Hello' }]);
    expect(out.oldest).toEqual([{ email: 'cy@example.com', created_at: '2020-01-02T03:04:05Z' }]);
    expect(out.renamed).toEqual([{ ...out.bob, name: 'Bob' }]);
    expect(out.deleted).toEqual({ affected: 1 });

    expect(out.forbidden).toMatchObject({ name: 'SantokitError', code: 'FORBIDDEN', status: 403 });
    expect(out.forbidden.message).toMatch(/insert/);
    expect(out.forbidden.requestId).toEqual(expect.any(String));
    expect(out.badKey).toMatchObject({ name: 'SantokitError', code: 'UNAUTHORIZED', status: 401 });
    expect(out.badKey.requestId).toEqual(expect.any(String));
    expect(out.badValue).toMatchObject({ code: 'BAD_REQUEST', status: 400 });
    expect(out.badValue.message).toMatch(/created_at/);

    // what the database holds
    const users = await query<{ email: string; name: string | null }>(stack.dbUrl, 'SELECT email, name FROM users ORDER BY email');
    expect(users).toEqual([
      { email: 'ada@example.com', name: 'Ada' },
      { email: 'bob@example.com', name: 'Bob' },
    ]);
    const posts = await query<{ id: string; title: string; published: boolean }>(stack.dbUrl, 'SELECT id, title, published FROM posts ORDER BY title');
    expect(posts).toEqual([
      { id: out.draft.id, title: 'Draft', published: false },
      { id: out.post.id, title: 'Hello', published: true },
    ]);
  });
});
