import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startHub, TEST_OWNER, waitFor } from '../helpers/procs.js';
import { loginToken, runStk, tempConfigDir } from '../helpers/cli.js';

type Hub = Awaited<ReturnType<typeof startHub>>;

async function whoamiStatus(hub: Hub, token: string): Promise<number> {
  return (await fetch(`${hub.url}/api/auth/whoami`, { headers: { authorization: `Bearer ${token}` } })).status;
}

async function loginRaw(hub: Hub, email: string, password: string) {
  const r = await fetch(`${hub.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  return { status: r.status, body: (await r.json()) as { token?: string; expiresAt?: string; error?: { code: string; message: string } } };
}

describe('operator login, sessions and logout (first owner from STK_OWNER_EMAIL)', () => {
  let hub: Hub;
  let cfg: string;
  const env = () => ({ STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: undefined });

  beforeAll(async () => {
    hub = await startHub();
    cfg = tempConfigDir();
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('bootstraps the first owner: it can log in and is org owner', async () => {
    expect(hub.logs()).toContain('created the first owner from STK_OWNER_EMAIL');
    const token = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
    const me = await fetch(`${hub.url}/api/auth/whoami`, { headers: { authorization: `Bearer ${token}` } });
    expect(await me.json()).toMatchObject({ email: TEST_OWNER.email, orgRole: 'owner' });
  });

  it('login returns a high-entropy token and an expiry; the token is stored nowhere in plaintext', async () => {
    const r = await loginRaw(hub, TEST_OWNER.email, TEST_OWNER.password);
    expect(r.status).toBe(200);
    expect(r.body.token).toMatch(/^stks_[A-Za-z0-9_-]{43}$/); // 32 random bytes
    const ttl = Date.parse(r.body.expiresAt!) - Date.now();
    expect(ttl).toBeGreaterThan(11 * 3600_000);
    expect(ttl).toBeLessThanOrEqual(12 * 3600_000);
    expect(hub.logs()).not.toContain(r.body.token!);
  });

  it('wrong password and unknown email give the same 401 message', async () => {
    const a = await loginRaw(hub, TEST_OWNER.email, 'wrong-password');
    const b = await loginRaw(hub, 'nobody@example.com', 'wrong-password');
    expect(a.status).toBe(401);
    expect(b.status).toBe(401);
    expect(a.body.error).toMatchObject({ code: 'UNAUTHORIZED' });
    expect(a.body.error!.message).toBe(b.body.error!.message);
    expect(hub.logs()).not.toContain('wrong-password');
  });

  it('stk login --password-stdin stores a 0600 credentials file; whoami and logout work; the token is dead afterwards', async () => {
    const login = await runStk(['login', '--email', TEST_OWNER.email, '--password-stdin'], { env: env(), input: TEST_OWNER.password + '\n' });
    expect(login.code, login.output).toBe(0);
    expect(login.stderr).toContain(`Logged in to ${hub.url} as ${TEST_OWNER.email}`);
    const file = join(cfg, 'credentials.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const creds = JSON.parse(readFileSync(file, 'utf8')) as { token: string; hubUrl: string };
    expect(creds.hubUrl).toBe(hub.url);
    expect(login.output).not.toContain(creds.token);

    const who = await runStk(['whoami', '--json'], { env: env() });
    expect(who.code, who.output).toBe(0);
    expect(JSON.parse(who.stdout)).toMatchObject({ email: TEST_OWNER.email, orgRole: 'owner', projectRoles: [] });
    const human = await runStk(['whoami'], { env: env() });
    expect(human.stdout).toContain('org role: owner');

    expect(await whoamiStatus(hub, creds.token)).toBe(200);
    const out = await runStk(['logout'], { env: env() });
    expect(out.code, out.output).toBe(0);
    expect(out.stderr).toContain(`Logged out ${TEST_OWNER.email}`);
    expect(await whoamiStatus(hub, creds.token)).toBe(401);

    const after = await runStk(['whoami'], { env: env() });
    expect(after.code).toBe(1);
    expect(after.stderr).toMatch(/401 UNAUTHORIZED/);
    expect(after.stderr).toContain('stk login');
  });

  it('stk login with a wrong password exits 1 with the 401 and stores nothing', async () => {
    const dir = tempConfigDir();
    const r = await runStk(['login', '--email', TEST_OWNER.email, '--password-stdin'], { env: { STK_CONFIG_DIR: dir, STK_HUB_URL: hub.url }, input: 'not-it' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('invalid email or password (401 UNAUTHORIZED)');
    expect(() => statSync(join(dir, 'credentials.json'))).toThrow();
  });

  it('stk login without a terminal or --password-stdin is a usage error (exit 2)', async () => {
    const r = await runStk(['login', '--email', TEST_OWNER.email], { env: env() });
    expect(r.code).toBe(2);
  });

  it('a forged or malformed bearer token is 401', async () => {
    for (const t of ['operator:owner@example.com', 'operator-token', 'stks_' + 'A'.repeat(43)]) {
      expect(await whoamiStatus(hub, t)).toBe(401);
    }
  });
});

describe('no owner configured; create-owner; session expiry; login throttling', () => {
  let hub: Hub;
  beforeAll(async () => {
    hub = await startHub({ env: { STK_OWNER_EMAIL: '', STK_OWNER_PASSWORD: '', STK_SESSION_TTL: '2s', STK_LOGIN_MAX_FAILURES: '4' } });
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('logs one line saying how to create the first operator', async () => {
    const lines = hub
      .logs()
      .split('\n')
      .filter((l) => l.includes('no operator exists yet'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('stk hub create-owner --email');
    expect((await loginRaw(hub, TEST_OWNER.email, TEST_OWNER.password)).status).toBe(401);
  });

  it('stk hub create-owner against the store creates an owner who can log in; a second one with the same email is refused', async () => {
    const storeEnv = { STK_HUB_DB_URL: hub.dbUrl, STK_SECRET_KEY: hub.secretKey, STK_SERVICE_TOKEN: hub.serviceToken };
    const r = await runStk(['hub', 'create-owner', '--email', 'first@example.com', '--password-stdin'], { env: storeEnv, input: 'first-owner-pass\n' });
    expect(r.code, r.output).toBe(0);
    expect(r.stderr).toContain('✓ Created owner first@example.com');
    const again = await runStk(['hub', 'create-owner', '--email', 'first@example.com', '--password-stdin'], { env: storeEnv, input: 'first-owner-pass\n' });
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('409 CONFLICT');
    const login = await loginRaw(hub, 'first@example.com', 'first-owner-pass');
    expect(login.status).toBe(200);
  });

  it('a session stops working once STK_SESSION_TTL (2s) has passed', async () => {
    const r = await loginRaw(hub, 'first@example.com', 'first-owner-pass');
    expect(Date.parse(r.body.expiresAt!) - Date.now()).toBeLessThanOrEqual(2000);
    expect(await whoamiStatus(hub, r.body.token!)).toBe(200);
    await waitFor(async () => (await whoamiStatus(hub, r.body.token!)) === 401, 15_000, 'session expiry');
    const cli = await runStk(['project', 'list'], { env: { STK_CONFIG_DIR: tempConfigDir(), STK_HUB_URL: hub.url, STK_AUTH_TOKEN: r.body.token } });
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain('invalid or expired session');
  });

  it('repeated failures from one address → 429 with Retry-After, even for the right password', async () => {
    // STK_LOGIN_MAX_FAILURES=4 (the first test here already failed once from this address)
    const statuses: number[] = [];
    for (let i = 0; i < 10 && statuses.at(-1) !== 429; i++) statuses.push((await loginRaw(hub, 'first@example.com', 'bad-' + i)).status);
    expect(statuses.at(-1)).toBe(429);
    expect(statuses.slice(0, -1).every((s) => s === 401)).toBe(true);
    expect(statuses.length).toBeLessThanOrEqual(5);
    const r = await fetch(`${hub.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'first@example.com', password: 'first-owner-pass' }),
    });
    expect(r.status).toBe(429);
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('TOO_MANY_REQUESTS');
  });
});
