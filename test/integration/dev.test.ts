import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { ROOT, STK, freePort, spawnLongRunning, waitFor, type Proc } from '../helpers/procs.js';
import { runStk, tempConfigDir } from '../helpers/cli.js';
import { spawnPty } from '../helpers/pty.js';
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
  const r = await fetch(`${hubUrl}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: DEV_EMAIL, password }),
  });
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
    const r = await fetch(`${bridgeUrl()}/call`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-santokit-api-key': apiKey },
      body: JSON.stringify(body),
    });
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

  /**
   * Runs the banner's "Next" lines with bash in the stack's directory, as a developer pastes them. The
   * directory is not a checkout, so `npx` is a shim running this checkout's bin/stk.js (what `npx --no
   * stk` resolves to in a checkout); every other word is the banner's.
   */
  async function runNextSteps(p: Proc): Promise<{ code: number; stdout: string; output: string }> {
    const banner = p.logs().slice(p.logs().lastIndexOf('Santokit dev stack is up'));
    const lines = banner.split('\n');
    const start = lines.findIndex((l) => l.startsWith('Next'));
    const block = lines
      .slice(
        start + 1,
        lines.findIndex((l, i) => i > start && l.trim() === ''),
      )
      .map((l) => l.replace(/^ {2}/, ''));
    expect(block[0]).toMatch(/^export STK_HUB_URL=/);
    const bin = mkdtempSync(join(tmpdir(), 'stk-npx-'));
    writeFileSync(join(bin, 'npx'), `#!/bin/sh\n[ "$1" = --no ] && shift\n[ "$1" = stk ] && shift\nexec "${process.execPath}" "${STK}" "$@"\n`, {
      mode: 0o755,
    });
    const script = ['set -e', ...block].join('\n');
    return await new Promise((resolve) => {
      const c = spawn('bash', ['-c', script], {
        cwd,
        env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, STK_CONFIG_DIR: tempConfigDir(), NO_COLOR: '1' },
      });
      let stdout = '';
      let output = '';
      c.stdout.on('data', (d) => ((stdout += d), (output += d)));
      c.stderr.on('data', (d) => (output += d));
      c.on('close', (code) => resolve({ code: code ?? -1, stdout, output }));
    });
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
    expect(out).toMatch(/npx --no stk apply --project demo --env dev --dir \S*examples\/basic/);
    expect(out).toContain('KEY=$(npx --no stk apikey create --project demo --env dev --name local --roles admin -q)');
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
    const login = await runStk(['login', '--email', DEV_EMAIL, '--password-stdin'], {
      input: password,
      env: { STK_HUB_URL: hubUrl(), STK_CONFIG_DIR: tempConfigDir() },
    });
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
    const created = await runStk(['apikey', 'create', '--project', 'demo', '--env', 'dev', '--name', 'first', '--roles', 'admin', '--json'], { env: cli });
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

  it('the Next block, pasted into a shell in that directory, ends with a /call that answers (npx resolved to this checkout)', async () => {
    const r = await runNextSteps(dev!);
    expect(r.code, r.output).toBe(0);
    expect(JSON.parse(r.stdout.trim().split('\n').at(-1)!)).toMatchObject({ data: expect.any(Array) });
  });

  it('stk status: the URLs, the dev owner, the password file, and each part answering (pretty, --json, -o env)', async () => {
    const r = await runStk(['status'], { cwd, env: { STK_DATA_DIR: '' } });
    expect(r.code, r.output).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`Hub +${hubUrl().replace(/\./g, '\\.')} +✓ answers`));
    expect(r.stdout).toMatch(/Bridge +\S+ +✓ answers/);
    expect(r.stdout).toMatch(/PostgreSQL +\S+ +✓ answers \(select 1\)/);
    expect(r.stdout).toContain('dev@santokit.local (password in .santokit/dev-owner.txt)');
    const j = JSON.parse((await runStk(['status', '--json'], { cwd, env: { STK_DATA_DIR: '' } })).stdout);
    expect(j).toMatchObject({
      running: true,
      hub: { url: hubUrl(), ok: true },
      bridge: { url: bridgeUrl(), ok: true },
      postgres: { url: pgUrl(), ok: true },
      devOwner: { email: DEV_EMAIL },
    });
    const e = await runStk(['status', '-o', 'env'], { cwd, env: { STK_DATA_DIR: '' } });
    expect(e.stdout).toContain(`STK_HUB_URL='${hubUrl()}'\n`);
    expect(e.stdout).toContain(`STK_DEV_OWNER_PASSWORD_FILE='${join(cwd, '.santokit/dev-owner.txt')}'\n`);
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
    // `local` is taken now: the printed steps use a free name, and still work when pasted
    expect(dev.logs()).toContain('--name local-2 --roles admin -q)');
    const again = await runNextSteps(dev);
    expect(again.code, again.output).toBe(0);

    expect(await interrupt(dev)).toBe(0);
  });
});

describe('Ctrl-C on `npm start` (what docs/development.md says)', () => {
  it('stops the stack cleanly ("Stopped."); npm then reports the interrupt as 130', async () => {
    const data = mkdtempSync(join(tmpdir(), 'stk-npmstart-'));
    const ports = { STK_HUB_PORT: String(await freePort()), STK_BRIDGE_PORT: String(await freePort()), STK_DEV_PG_PORT: String(await freePort()) };
    const p = spawnPty(['npm', 'start'], { cwd: ROOT, env: { ...ports, STK_DATA_DIR: join(data, '.santokit'), NO_COLOR: '1' } });
    try {
      await p.waitFor('Santokit dev stack is up', 90_000);
      await p.waitFor('Ctrl-C stops everything');
      p.write('\x03');
      expect(await p.exit).toBe(130);
      expect(p.output()).toContain('Stopped. Data is kept in');
      await expect(fetch(`http://127.0.0.1:${ports.STK_HUB_PORT}/healthz`)).rejects.toThrow();
    } finally {
      p.child.kill('SIGKILL');
      rmSync(data, { recursive: true, force: true });
    }
  }, 120_000);
});
