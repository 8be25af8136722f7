import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildHub } from '../../src/hub/app.js';
import { DEFAULT_HUB_STORE, loadHubConfig } from '../../src/hub/config.js';
import { StoreKeyMismatchError } from '../../src/hub/services/store-key.js';
import { DATABASE_URL, TEST_ALLOW_HOSTS } from '../helpers/pg.js';
import { runStk, loginToken, tempConfigDir } from '../helpers/cli.js';
import { freePort, spawnLongRunning, waitFor } from '../helpers/procs.js';
import { rememberSecret, rememberStore } from '../helpers/secrets.js';

/**
 * Issue 14, rough edge 1: a Hub started on a store created under another STK_SECRET_KEY used to come up,
 * ignore STK_OWNER_EMAIL and fail later (`connections test` → 500 "Unsupported state or unable to
 * authenticate data"). Now it refuses to start and says why; the dev stack and a standalone Hub no
 * longer share a default store.
 */

const key = () => rememberSecret('hub-secret-key', randomBytes(32).toString('hex'));
const token = () => rememberSecret('service-token', randomBytes(24).toString('base64url'));

function hubEnv(dbUrl: string, secret: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  rememberStore(dbUrl);
  return { STK_HUB_DB_URL: dbUrl, STK_SECRET_KEY: secret, STK_SERVICE_TOKEN: token(), STK_CONNECTION_ALLOW_HOSTS: TEST_ALLOW_HOSTS, ...extra };
}

async function openAndClose(env: NodeJS.ProcessEnv): Promise<void> {
  const { app } = await buildHub(loadHubConfig(env), { logger: false });
  await app.close();
}

describe('a Hub store belongs to its STK_SECRET_KEY', () => {
  it('a new store records its key; the same key opens it again, another key is refused with a clear message', async () => {
    const dbUrl = `sqlite://${join(mkdtempSync(join(tmpdir(), 'stk-storekey-')), 'hub.db')}`;
    const a = key();
    await openAndClose(hubEnv(dbUrl, a));
    await openAndClose(hubEnv(dbUrl, a));
    const err = await openAndClose(hubEnv(dbUrl, key())).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StoreKeyMismatchError);
    expect((err as Error).message).toMatch(/the Hub store \/.*hub\.db was created with a different STK_SECRET_KEY/);
    expect((err as Error).message).toMatch(/Start the Hub with the STK_SECRET_KEY the store was created with, or point STK_HUB_DB_URL at another store/);
    expect((err as Error).message).not.toContain(a);
  });

  it("a dev stack's store opened with another key names that stack's own key file (its STK_DATA_DIR)", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'stk-storekey-data-'));
    const dbUrl = `sqlite://${join(dataDir, 'hub.db')}`;
    await openAndClose(hubEnv(dbUrl, key(), { STK_DEV: '1', STK_DATA_DIR: dataDir }));
    const err = await openAndClose(hubEnv(dbUrl, key(), { STK_DEV: '1', STK_DATA_DIR: dataDir })).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StoreKeyMismatchError);
    expect((err as Error).message).toContain(`It is not this dev stack's key (${join(dataDir, 'secret.key')})`);
  });

  it('a store from before the check is judged by its encrypted connection URLs, then gets the check', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stk-storekey-'));
    const dbUrl = `sqlite://${join(dir, 'hub.db')}`;
    const a = key();
    const { app, ctx } = await buildHub(loadHubConfig(hubEnv(dbUrl, a)), { logger: false });
    // what an older Hub left: a project, an env, a connection encrypted under a, and no check value
    const now = new Date().toISOString();
    const org = await ctx.db.selectFrom('orgs').select('id').executeTakeFirstOrThrow();
    await ctx.db.insertInto('projects').values({ id: 'p1', org_id: org.id, name: 'shop', created_at: now }).execute();
    await ctx.db.insertInto('envs').values({ id: 'e1', project_id: 'p1', name: 'dev', created_at: now }).execute();
    await ctx.db
      .insertInto('connections')
      .values({
        id: 'c1',
        project_id: 'p1',
        env_id: 'e1',
        name: 'main',
        engine: 'postgres',
        db_url_enc: ctx.crypto.encrypt(DATABASE_URL),
        display_url: 'postgres://postgres@127.0.0.1:5432/postgres',
        created_at: now,
        updated_at: now,
      })
      .execute();
    await ctx.db.deleteFrom('store_meta').execute();
    await app.close();

    await expect(openAndClose(hubEnv(dbUrl, key()))).rejects.toThrow(StoreKeyMismatchError);
    await openAndClose(hubEnv(dbUrl, a)); // the right key: accepted, and the check is recorded now
    await expect(openAndClose(hubEnv(dbUrl, key()))).rejects.toThrow(/created with a different STK_SECRET_KEY/);
  });

  // node:sqlite (the binding on Node 24+) exists from Node 22.13; on older Node this case cannot run
  const hasNodeSqlite =
    Number(process.versions.node.split('.')[0]) >= 23 || (process.versions.node.startsWith('22.') && Number(process.versions.node.split('.')[1]) >= 13);
  it.runIf(hasNodeSqlite)('through node:sqlite too: a store made by one binding opens with the other, the key check holds', async () => {
    const dbUrl = `sqlite://${join(mkdtempSync(join(tmpdir(), 'stk-storekey-')), 'hub.db')}`;
    const a = key();
    const using = async <T>(driver: string, fn: () => Promise<T>): Promise<T> => {
      process.env.STK_SQLITE_DRIVER = driver; // read by openStore
      try {
        return await fn();
      } finally {
        delete process.env.STK_SQLITE_DRIVER;
      }
    };
    await using('better-sqlite3', () => openAndClose(hubEnv(dbUrl, a)));
    await using('node', () => openAndClose(hubEnv(dbUrl, a)));
    await using('node', () => expect(openAndClose(hubEnv(dbUrl, key()))).rejects.toThrow(StoreKeyMismatchError));
  });

  it('the same on a PostgreSQL store (several Hubs share one)', async () => {
    const { createTestDatabase } = await import('../helpers/pg.js');
    const db = await createTestDatabase('storekey');
    try {
      const a = key();
      await openAndClose(hubEnv(db.url, a));
      const err = await openAndClose(hubEnv(db.url, key())).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err).toBeInstanceOf(StoreKeyMismatchError);
      expect(err!.message).toContain(`the Hub store postgres://postgres@127.0.0.1:`);
      await openAndClose(hubEnv(db.url, a));
    } finally {
      await db.drop();
    }
  });

  it('default stores: the dev stack uses .santokit/hub.db, a standalone Hub .santokit-hub/hub.db', () => {
    const base = { STK_SECRET_KEY: randomBytes(32).toString('hex'), STK_SERVICE_TOKEN: randomBytes(24).toString('hex') };
    expect(loadHubConfig(base).dbUrl).toBe(`sqlite://${DEFAULT_HUB_STORE}`);
    expect(DEFAULT_HUB_STORE).toBe('./.santokit-hub/hub.db');
    expect(loadHubConfig({ ...base, STK_DEV: '1', STK_DATA_DIR: '.santokit' }).dbUrl).toBe('sqlite://.santokit/hub.db');
  });

  it('`stk hub start` in a checkout where `npm start` ran: its own store, the owner from STK_OWNER_EMAIL logs in; pointed at the dev store it refuses (exit 1)', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'stk-checkout-'));
    // the dev stack's store, as `npm start` leaves it (dev Hub: key generated into .santokit/secret.key)
    await openAndClose({ STK_DEV: '1', STK_DATA_DIR: join(cwd, '.santokit'), STK_OWNER_EMAIL: 'dev@santokit.local', STK_OWNER_PASSWORD: 'dev-password-1' });
    rememberStore(`sqlite://${join(cwd, '.santokit/hub.db')}`);
    expect(existsSync(join(cwd, '.santokit/hub.db'))).toBe(true);

    const port = await freePort();
    const secret = key();
    const env = {
      STK_TEST_CWD: cwd,
      STK_HUB_PORT: String(port),
      STK_SECRET_KEY: secret,
      STK_SERVICE_TOKEN: token(),
      STK_OWNER_EMAIL: 'ops@example.com',
      STK_OWNER_PASSWORD: rememberSecret('password', 'ops-password-1'),
      STK_HUB_DB_URL: '',
    };
    const hub = spawnLongRunning('hub-own-store', ['hub', 'start'], env, port);
    try {
      await waitFor(async () => (await fetch(`${hub.url}/readyz`)).ok, 30_000, 'hub');
      rememberStore(`sqlite://${join(cwd, '.santokit-hub/hub.db')}`);
      expect(existsSync(join(cwd, '.santokit-hub/hub.db'))).toBe(true);
      expect(hub.logs()).toContain(".santokit/hub.db is the dev stack's store");
      await loginToken(hub.url, 'ops@example.com', 'ops-password-1');
    } finally {
      await hub.stop();
    }
    // the store has an owner now: another STK_OWNER_EMAIL is not silently ignored
    const port2 = await freePort();
    const again = spawnLongRunning('hub-own-store', ['hub', 'start'], { ...env, STK_HUB_PORT: String(port2), STK_OWNER_EMAIL: 'other@example.com' }, port2);
    try {
      await waitFor(async () => (await fetch(`${again.url}/readyz`)).ok, 30_000, 'hub');
      await waitFor(async () => again.logs().includes('STK_OWNER_EMAIL is ignored: this store already has operators'), 5000, 'the warning');
    } finally {
      await again.stop();
    }

    const r = await runStk(['hub', 'start'], {
      cwd,
      env: {
        STK_CONFIG_DIR: tempConfigDir(),
        STK_HUB_PORT: String(await freePort()),
        STK_SECRET_KEY: secret,
        STK_SERVICE_TOKEN: token(),
        STK_HUB_DB_URL: 'sqlite://./.santokit/hub.db',
      },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^Error: the Hub store \/.*\.santokit\/hub\.db was created with a different STK_SECRET_KEY/m);
    expect(r.stderr).toContain("It is the dev stack's store");
    expect(r.output).not.toContain(secret);
    expect(r.output).not.toMatch(/^\s+at /m); // no stack trace
  });
});
