import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { ROOT, freePort, spawnLongRunning, waitFor, type Proc } from '../helpers/procs.js';
import { runStk, tempConfigDir } from '../helpers/cli.js';
import { rememberSecret } from '../helpers/secrets.js';

/**
 * `stk dev` as a user runs it: the real binary in its own working directory (so `.santokit/` is
 * isolated), on free ports.
 */

const DEV_EMAIL = 'dev@santokit.local';

/**
 * Logs in over HTTP. Unlike helpers/cli.ts#loginToken this does not put the password into the secrets
 * registry: `stk dev` deliberately prints the generated dev owner's password on its terminal (that is its
 * job: the developer needs it), so the end-of-run scan would flag the banner in the captured output.
 * The session tokens and the API key are registered and must not appear anywhere.
 */
async function devLogin(hubUrl: string, password: string): Promise<string> {
  const r = await fetch(`${hubUrl}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: DEV_EMAIL, password }) });
  if (!r.ok) throw new Error(`login failed: ${r.status} ${await r.text()}`);
  return rememberSecret('session-token', ((await r.json()) as { token: string }).token);
}

describe('stk dev: embedded PostgreSQL + Hub + Bridge in one command', () => {
  const cwd = mkdtempSync(join(tmpdir(), 'stk-dev-'));
  let ports: { hub: number; bridge: number; pg: number };
  let env: Record<string, string>;
  let dev: Proc | undefined;
  const hubUrl = () => `http://127.0.0.1:${ports.hub}`;
  const bridgeUrl = () => `http://127.0.0.1:${ports.bridge}`;
  const pgUrl = () => `postgres://postgres@127.0.0.1:${ports.pg}/postgres`;
  let apiKey = '';

  async function call(body: unknown): Promise<{ status: number; body: unknown }> {
    const r = await fetch(`${bridgeUrl()}/call`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-santokit-api-key': apiKey }, body: JSON.stringify(body) });
    return { status: r.status, body: await r.json() };
  }

  async function startDev(): Promise<Proc> {
    const p = spawnLongRunning('dev', ['dev'], env);
    await waitFor(async () => p.logs().includes('Santokit dev stack is up') || p.child.exitCode !== null, 90_000, 'stk dev to come up').catch((e) => {
      throw new Error(`${(e as Error).message}\n--- stk dev output ---\n${p.logs().slice(-3000)}`);
    });
    if (p.child.exitCode !== null) throw new Error(`stk dev exited with ${p.child.exitCode}\n${p.logs().slice(-3000)}`);
    return p;
  }

  async function interrupt(p: Proc): Promise<number | null> {
    const exited = new Promise<number | null>((r) => (p.child.exitCode !== null ? r(p.child.exitCode) : p.child.once('exit', (code) => r(code))));
    p.child.kill('SIGINT');
    return await exited;
  }

  async function sql<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
    const c = new pg.Client({ connectionString: pgUrl() });
    await c.connect();
    try {
      return (await c.query<T>(text, values)).rows;
    } finally {
      await c.end();
    }
  }

  beforeAll(async () => {
    ports = { hub: await freePort(), bridge: await freePort(), pg: await freePort() };
    env = { STK_TEST_CWD: cwd, STK_HUB_PORT: String(ports.hub), STK_BRIDGE_PORT: String(ports.bridge), STK_DEV_PG_PORT: String(ports.pg) };
    dev = await startDev();
  });

  afterAll(async () => {
    await dev?.stop();
    rmSync(cwd, { recursive: true, force: true });
  });

  it('serves both /healthz, prints URLs, credentials and next commands', async () => {
    for (const url of [hubUrl(), bridgeUrl()]) {
      const r = await fetch(`${url}/healthz`);
      expect(r.status, url).toBe(200);
      expect(await r.json()).toEqual({ ok: true });
    }
    const out = dev!.logs();
    const password = readFileSync(join(cwd, '.santokit/dev-owner.txt'), 'utf8').trim();
    expect(password.length).toBeGreaterThanOrEqual(12);
    expect(statSync(join(cwd, '.santokit/dev-owner.txt')).mode & 0o777).toBe(0o600);
    expect(out).toContain(`Hub         ${hubUrl()}`);
    expect(out).toContain(`Bridge      ${bridgeUrl()}`);
    expect(out).toContain(`PostgreSQL  ${pgUrl()}`);
    expect(out).toContain(DEV_EMAIL);
    expect(out).toContain(password);
    expect(out).toContain('npx stk apply --project demo --env dev --dir examples/basic');
    expect(out).toContain('npx stk apikey create --project demo --env dev --name local --roles admin');
    expect(out).toContain(`${bridgeUrl()}/call`);
    expect(out).toContain('created project demo');
  });

  it('the embedded PostgreSQL answers through the ordinary pg driver, several connections at once', async () => {
    expect(await sql('select 1 as one')).toEqual([{ one: 1 }]);
    const clients = await Promise.all(
      [0, 1, 2].map(async () => {
        const c = new pg.Client({ connectionString: pgUrl() });
        await c.connect();
        return c;
      }),
    );
    try {
      await clients[0]!.query('create table if not exists dev_keep (id int primary key, note text)');
      // a transaction holds the single PGlite session: another connection waits for it instead of interleaving
      await clients[1]!.query('begin');
      await clients[1]!.query("insert into dev_keep values (1, 'survives restarts')");
      const other = clients[2]!.query<{ n: number }>('select count(*)::int as n from dev_keep');
      await clients[1]!.query('commit');
      expect((await other).rows[0]!.n).toBe(1);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });

  it('the dev owner can log in with the printed command, and the bootstrap made demo/dev/main', async () => {
    const password = readFileSync(join(cwd, '.santokit/dev-owner.txt'), 'utf8');
    const login = await runStk(['login', '--email', DEV_EMAIL, '--password-stdin'], { input: password, env: { STK_HUB_URL: hubUrl(), STK_CONFIG_DIR: tempConfigDir() } });
    expect(login.code, login.output).toBe(0);
    const token = await devLogin(hubUrl(), password.trim());
    const auth = { authorization: `Bearer ${token}` };
    const projects = (await (await fetch(`${hubUrl()}/api/projects`, { headers: auth })).json()) as { items: Array<{ name: string }> };
    expect(projects.items.map((p) => p.name)).toContain('demo');
    const test = await fetch(`${hubUrl()}/api/projects/demo/envs/dev/connections/main/test`, { method: 'POST', headers: auth });
    expect(test.status).toBe(200);
    expect(((await test.json()) as { ok: boolean }).ok).toBe(true);
  });

  it('the printed next steps work: apply examples/basic, create a key, /call on the embedded PostgreSQL', async () => {
    const password = readFileSync(join(cwd, '.santokit/dev-owner.txt'), 'utf8');
    const cli = { STK_HUB_URL: hubUrl(), STK_CONFIG_DIR: tempConfigDir() };
    expect((await runStk(['login', '--email', DEV_EMAIL, '--password-stdin'], { input: password, env: cli })).code).toBe(0);
    const apply = await runStk(['apply', '--project', 'demo', '--env', 'dev', '--dir', join(ROOT, 'examples/basic')], { env: cli });
    expect(apply.code, apply.output).toBe(0);
    const created = await runStk(['apikey', 'create', '--project', 'demo', '--env', 'dev', '--name', 'local', '--roles', 'admin', '--json'], { env: cli });
    expect(created.code, created.output).toBe(0);
    apiKey = rememberSecret('api-key', (JSON.parse(created.stdout) as { apiKey: string }).apiKey);

    const insert = await call({ path: 'db/users/insert', params: { values: { email: 'ada@example.com', name: 'Ada' } } });
    expect(insert.status).toBe(200);
    // the Bridge's pool and the Hub share the one embedded database: concurrent calls all succeed
    const results = await Promise.all(Array.from({ length: 30 }, () => call({ path: 'db/users/select', params: { limit: 5 } })));
    for (const r of results) {
      expect(r.status).toBe(200);
      expect((r.body as { data: Array<{ email: string }> }).data.map((u) => u.email)).toContain('ada@example.com');
    }
  });

  it('refuses a second stk dev on the same data directory', async () => {
    const r = await runStk(['dev'], { cwd, env: { ...env, STK_HUB_PORT: '0', STK_BRIDGE_PORT: '0', STK_DEV_PG_PORT: '0' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/another stk dev \(pid \d+\) is using/);
  });

  it('Ctrl-C stops everything with exit 0; a restart keeps data, owner and bootstrap', async () => {
    const code = await interrupt(dev!);
    expect(code, dev!.logs().slice(-2000)).toBe(0);
    expect(dev!.logs()).toContain('Stopped.');
    await expect(fetch(`${hubUrl()}/healthz`)).rejects.toThrow();

    dev = await startDev();
    for (const url of [hubUrl(), bridgeUrl()]) expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect(await sql('select note from dev_keep where id = 1')).toEqual([{ note: 'survives restarts' }]);
    // the release, the key and the rows written through the Bridge survived too
    await waitFor(async () => (await call({ path: 'db/users/select', params: { limit: 5 } })).status === 200, 30_000, 'the Bridge to serve /call again');
    const after = await call({ path: 'db/users/select', params: { limit: 5 } });
    expect((after.body as { data: Array<{ email: string }> }).data.map((u) => u.email)).toContain('ada@example.com');
    const password = readFileSync(join(cwd, '.santokit/dev-owner.txt'), 'utf8').trim();
    expect(await devLogin(hubUrl(), password)).toMatch(/^stks_/);
    // nothing left to bootstrap the second time
    expect(dev.logs()).not.toContain('created project demo');
    expect(dev.logs()).toContain('Project     demo, env dev, connection main');

    expect(await interrupt(dev)).toBe(0);
  });
});
