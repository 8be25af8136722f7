/**
 * `/call` end to end through real processes: a Hub, `stk apply` of examples/basic, real API keys made
 * with `stk apikey create`, and a Bridge that learns release, connection and keys from the Hub's sync.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { ROOT, TEST_OWNER, startBridge, startHub, waitFor, type Proc } from '../helpers/procs.js';
import { loginToken, runStk, tempConfigDir } from '../helpers/cli.js';
import { createTestDatabase, query } from '../helpers/pg.js';

const PROJECT = 'blog';
const ENV = 'dev';

let hub: Awaited<ReturnType<typeof startHub>>;
let bridge: Proc;
let db: Awaited<ReturnType<typeof createTestDatabase>>;
let adminKey = '';
let readerKey = '';

async function call(key: string | undefined, path: string, params: unknown = {}, headers: Record<string, string> = {}) {
  const h: Record<string, string> = { 'content-type': 'application/json', ...headers };
  if (key) h['x-santokit-api-key'] = key;
  const r = await fetch(bridge.url + '/call', { method: 'POST', headers: h, body: JSON.stringify({ path, params }) });
  const raw = await r.text();
  return { status: r.status, body: JSON.parse(raw) as { data?: any; error?: { code: string; message: string; requestId: string } }, raw };
}

beforeAll(async () => {
  db = await createTestDatabase('bridgee2e');
  hub = await startHub();
  const token = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
  const env = { STK_CONFIG_DIR: tempConfigDir(), STK_HUB_URL: hub.url, STK_AUTH_TOKEN: token };
  const stk = async (args: string[]) => {
    const r = await runStk(args, { env });
    expect(r.code, `stk ${args.join(' ')}\n${r.output}`).toBe(0);
    return r;
  };
  await stk(['project', 'create', PROJECT]);
  await stk(['env', 'create', '--project', PROJECT, ENV]);
  await stk(['connections', 'set', '--project', PROJECT, '--env', ENV, '--name', 'main', '--engine', 'postgres', '--db-url', db.url]);
  await stk(['apply', '--project', PROJECT, '--env', ENV, '--dir', join(ROOT, 'examples/basic')]);
  const key = async (name: string, roles: string) => {
    const out = await stk(['apikey', 'create', '--project', PROJECT, '--env', ENV, '--name', name, '--roles', roles]);
    return /API Key \(store securely\): (\S+)/.exec(out.stdout)![1]!;
  };
  adminKey = await key('e2e-admin', 'admin');
  readerKey = await key('e2e-reader', 'reader');
  await query(db.url, 'CREATE TABLE canary (id integer PRIMARY KEY, note text NOT NULL); INSERT INTO canary VALUES (1, $$intact$$)');
  bridge = await startBridge({ hubUrl: hub.url, serviceToken: hub.serviceToken });
  await waitFor(
    async () =>
      (await fetch(`${bridge.url}/readyz?project=${PROJECT}&env=${ENV}`, { headers: { 'x-santokit-service-token': hub.serviceToken } })).status === 200,
    30_000,
    'bridge ready for blog/dev',
  );
  await waitFor(async () => (await call(readerKey, 'db/users/select')).status === 200, 30_000, 'keys synced');
});

afterAll(async () => {
  await bridge?.stop();
  await hub?.stop();
  await db?.drop();
});

describe('/call on a release made by stk apply, with real API keys', () => {
  let aliceId = '';

  it('admin inserts (one row and a batch, `values` alias) and gets rows with generated ids back', async () => {
    const one = await call(adminKey, 'db/users/insert', { values: { email: 'alice@example.com', name: 'Alice' } });
    expect(one.status, one.raw).toBe(200);
    expect(one.body.data).toMatchObject({ email: 'alice@example.com', name: 'Alice' });
    expect(one.body.data.id).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
    expect(one.body.data.created_at).toMatch(/Z$/);
    expect(one.body.data).not.toHaveProperty('ids');
    aliceId = one.body.data.id;
    const posts = await call(adminKey, 'db/posts/insert', {
      data: [
        { title: 'Hello', author_id: aliceId, published: true },
        { title: 'Draft', author_id: aliceId },
      ],
    });
    expect(posts.status, posts.raw).toBe(200);
    expect(posts.body.data.map((p: { title: string; status: string }) => [p.title, p.status])).toEqual([
      ['Hello', 'draft'],
      ['Draft', 'draft'],
    ]);
  });

  it('reader: users with its column list, posts filtered by the literal condition, expand with the target rule', async () => {
    const users = await call(readerKey, 'db/users/select', { where: { email: 'alice@example.com' } });
    expect(users.status, users.raw).toBe(200);
    expect(Object.keys(users.body.data[0]).sort()).toEqual(['created_at', 'email', 'id', 'name']);
    const posts = await call(readerKey, 'db/posts/select', { expand: ['author'], orderBy: { title: 'asc' } });
    expect(posts.status, posts.raw).toBe(200);
    expect(posts.body.data.map((p: { title: string; author: { email: string } }) => [p.title, p.author.email])).toEqual([['Hello', 'alice@example.com']]);
  });

  it('update returns rows, delete returns affected; reader may not delete (403)', async () => {
    const upd = await call(adminKey, 'db/posts/update', { where: { title: 'Draft' }, data: { status: 'review' } });
    expect(upd.status, upd.raw).toBe(200);
    expect(upd.body.data).toHaveLength(1);
    expect(upd.body.data[0].status).toBe('review');
    const denied = await call(readerKey, 'db/posts/delete', { where: { title: 'Draft' } });
    expect(denied.status).toBe(403);
    expect(denied.body.error?.code).toBe('FORBIDDEN');
    const del = await call(adminKey, 'db/posts/delete', { where: { title: { $in: ['Draft'] } } });
    expect(del.body).toEqual({ data: { affected: 1 } });
  });

  it('errors: duplicate → 409, bad input → 400, unknown table → 404, no key → 401, hint mismatch → 403', async () => {
    const dup = await call(adminKey, 'db/users/insert', { data: { email: 'alice@example.com' } });
    expect(dup.status).toBe(409);
    expect(dup.body.error?.message).toMatch(/'email'/);
    expect(dup.raw).not.toContain('alice@example.com');
    expect((await call(adminKey, 'db/users/insert', { data: { id: 'mine', email: 'x@example.com' } })).status).toBe(400);
    expect((await call(adminKey, 'db/users/select', { where: { email: { $gt: 1 } } })).status).toBe(400);
    expect((await call(adminKey, 'db/nope/select')).status).toBe(404);
    expect((await call(undefined, 'db/users/select')).status).toBe(401);
    const hint = await call(adminKey, 'db/users/select', {}, { 'x-santokit-project': 'other', 'x-santokit-env': ENV });
    expect(hint.status).toBe(403);
    const match = await call(adminKey, 'db/users/select', {}, { 'x-santokit-project': PROJECT, 'x-santokit-env': ENV });
    expect(match.status).toBe(200);
  });

  it('injection attempts leave the canary intact', async () => {
    for (const v of ["'; DROP TABLE canary; --", 'x"; DROP TABLE canary; --']) {
      expect((await call(adminKey, 'db/users/select', { where: { name: v } })).status).toBe(200);
      expect((await call(adminKey, 'db/users/select', { where: { [v]: 1 } })).status).toBe(400);
      expect((await call(adminKey, 'db/users/select', { orderBy: { [v]: 'asc' } })).status).toBe(400);
    }
    expect(await query(db.url, 'SELECT note FROM canary')).toEqual([{ note: 'intact' }]);
  });
});
