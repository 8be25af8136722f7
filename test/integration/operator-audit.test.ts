import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startHub, TEST_OWNER } from '../helpers/procs.js';
import { loginToken, runStk, tempConfigDir } from '../helpers/cli.js';
import { DATABASE_URL } from '../helpers/pg.js';
import { rememberSecret } from '../helpers/secrets.js';
import { HubApi } from '../helpers/hub-api.js';

type Hub = Awaited<ReturnType<typeof startHub>>;

interface Item {
  id: string;
  ts: string;
  actor: string | null;
  actorType: string;
  action: string;
  project: string | null;
  env: string | null;
  requestId: string | null;
  ip: string | null;
  detail: Record<string, unknown>;
}

/** Every operator mutation lands in the audit log, with no secret in it; who may read what. */
describe('audit log', () => {
  let hub: Hub;
  /** the Hub's HTTP API; `http.as(token)` calls it as someone */
  let http: HubApi;
  let cfg: string;
  let owner: string;
  let projectAdmin: string;
  let viewer: string;
  const secrets: string[] = [];
  const DB_PASSWORD = 'DbPw' + randomBytes(10).toString('hex');
  const MEMBER_PASSWORD = 'MemberPw' + randomBytes(6).toString('hex');
  let createEnvRequestId: string;

  const stkAs = (token: string, args: string[], input?: string) =>
    runStk(args, { env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: token }, input });
  const auditAs = async (token: string, args: string[] = []) => {
    const r = await stkAs(token, ['audit', 'list', '--json', ...args]);
    return { ...r, items: r.code === 0 ? (JSON.parse(r.stdout) as Item[]) : [] };
  };
  const join = async (email: string, role: string, project?: string) => {
    const inv = await http.as(owner).request('POST', project ? `/api/projects/${project}/invites` : '/api/org/invites', { email, role });
    expect(inv.status).toBe(201);
    secrets.push(rememberSecret('invite-code', inv.json.inviteCode as string));
    expect((await http.as(undefined).request('POST', '/api/invites/accept', { email, code: inv.json.inviteCode, password: MEMBER_PASSWORD })).status).toBe(200);
    const t = await loginToken(hub.url, email, MEMBER_PASSWORD);
    secrets.push(t);
    return t;
  };

  beforeAll(async () => {
    hub = await startHub();
    http = new HubApi(hub.url);
    cfg = tempConfigDir();
    owner = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
    secrets.push(owner, DB_PASSWORD, MEMBER_PASSWORD, TEST_OWNER.password);
    const url = new URL(DATABASE_URL);
    url.password = DB_PASSWORD;
    secrets.push(url.toString());

    // one of each mutation
    expect((await stkAs(owner, ['project', 'create', 'shop'])).code).toBe(0);
    expect((await stkAs(owner, ['project', 'create', 'blog'])).code).toBe(0);
    const env = await http.as(owner).request('POST', '/api/projects/shop/envs', { name: 'dev' });
    expect(env.status).toBe(201);
    createEnvRequestId = env.requestId!;
    expect((await stkAs(owner, ['env', 'create', '--project', 'blog', 'dev'])).code).toBe(0);
    expect((await stkAs(owner, ['connections', 'set', '--project', 'shop', '--env', 'dev', '--db-url-stdin'], url.toString())).code).toBe(0);
    expect((await stkAs(owner, ['connections', 'test', '--project', 'shop', '--env', 'dev'])).code).toBe(0);
    projectAdmin = await join('padmin@example.com', 'admin', 'shop');
    viewer = await join('viewer@example.com', 'viewer', 'shop');
    expect((await http.as(owner).request('PUT', '/api/projects/shop/members/viewer@example.com', { role: 'deployer' })).status).toBe(200);
    expect((await http.as(owner).request('PUT', '/api/projects/shop/members/viewer@example.com', { role: 'viewer' })).status).toBe(200);
    await join('temp@example.com', 'member');
    expect((await http.as(owner).request('DELETE', '/api/org/members/temp@example.com')).status).toBe(200);
    const failed = await http.as(undefined).request('POST', '/api/auth/login', { email: 'viewer@example.com', password: 'wrong-' + MEMBER_PASSWORD });
    expect(failed.status).toBe(401);
    secrets.push('wrong-' + MEMBER_PASSWORD);
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('has an entry for each mutation with actor, project, env, requestId and ip', async () => {
    const { code, items, output } = await auditAs(owner, ['--limit', '1000']);
    expect(code, output).toBe(0);
    const find = (action: string, pred: (i: Item) => boolean = () => true) => items.find((i) => i.action === action && pred(i));
    expect(find('project.create', (i) => i.project === 'shop')).toMatchObject({ actor: TEST_OWNER.email, actorType: 'operator', env: null });
    expect(find('env.create', (i) => i.project === 'shop')).toMatchObject({ env: 'dev', requestId: createEnvRequestId, ip: '127.0.0.1' });
    expect(find('connection.set')).toMatchObject({ project: 'shop', env: 'dev', detail: { name: 'main', engine: 'postgres', created: true } });
    expect(find('connection.test')).toMatchObject({ project: 'shop', env: 'dev', detail: { name: 'main', ok: true } });
    expect(find('rbac.invite', (i) => i.detail.email === 'viewer@example.com')).toMatchObject({
      project: 'shop',
      detail: { scope: 'project', role: 'viewer' },
    });
    expect(find('rbac.accept', (i) => i.actor === 'viewer@example.com')).toMatchObject({
      project: 'shop',
      actorType: 'operator',
      detail: { scope: 'project', role: 'viewer' },
    });
    expect(find('rbac.set_role', (i) => i.detail.role === 'deployer')).toMatchObject({
      project: 'shop',
      detail: { scope: 'project', email: 'viewer@example.com', previousRole: 'viewer' },
    });
    expect(find('rbac.remove')).toMatchObject({ project: null, detail: { scope: 'org', email: 'temp@example.com', role: 'member' } });
    expect(find('operator.login', (i) => i.actor === 'padmin@example.com')).toBeDefined();
    expect(find('operator.login_failed', (i) => i.actor === 'viewer@example.com')).toMatchObject({ actorType: 'anonymous' });
    for (const i of items) {
      expect(i.id).toMatch(/^[0-9A-Z]{26}$/);
      expect(Number.isNaN(Date.parse(i.ts))).toBe(false);
    }
    // newest first
    const ts = items.map((i) => i.ts);
    expect([...ts].sort().reverse()).toEqual(ts);
  });

  it('holds no password, token, invite code or DB URL', async () => {
    const { items } = await auditAs(owner, ['--limit', '1000']);
    const all = JSON.stringify(items);
    for (const s of secrets) expect(all).not.toContain(s);
    expect(all).not.toContain('postgres://');
    const logs = hub.logs();
    for (const s of secrets) expect(logs).not.toContain(s);
  });

  it('filters by project, env, action (exact or domain.*), since and limit', async () => {
    const shop = await auditAs(owner, ['--project', 'shop', '--limit', '1000']);
    expect(shop.items.length).toBeGreaterThan(3);
    expect(shop.items.every((i) => i.project === 'shop')).toBe(true);
    const blogDev = await auditAs(owner, ['--project', 'blog', '--env', 'dev']);
    expect(blogDev.items.map((i) => i.action)).toEqual(['env.create']);
    const rbac = await auditAs(owner, ['--action', 'rbac.*', '--limit', '1000']);
    expect(new Set(rbac.items.map((i) => i.action))).toEqual(new Set(['rbac.invite', 'rbac.accept', 'rbac.set_role', 'rbac.remove']));
    const exact = await auditAs(owner, ['--action', 'rbac.set_role']);
    expect(exact.items).toHaveLength(2);
    expect(exact.items[0]!.detail.role).toBe('viewer'); // newest first
    const recent = await auditAs(owner, ['--since', '1h', '--limit', '1000']);
    expect(recent.items.length).toBe((await auditAs(owner, ['--limit', '1000'])).items.length);
    const ancient = await auditAs(owner, ['--since', '99999999999999999999d', '--limit', '1000']);
    expect(ancient.code, ancient.output).toBe(0);
    expect(ancient.items.length).toBe(recent.items.length);
    const future = await auditAs(owner, ['--since', new Date(Date.now() + 3600_000).toISOString()]);
    expect(future.items).toEqual([]);
    const two = await auditAs(owner, ['--limit', '2']);
    expect(two.items).toHaveLength(2);
  });

  it('bad limit or since → 400, exit 1', async () => {
    for (const args of [
      ['--limit', '0'],
      ['--limit', '1001'],
      ['--limit', 'ten'],
      ['--since', 'yesterday'],
      ['--since', '2026-13-45T99:00:00Z'],
    ]) {
      const r = await stkAs(owner, ['audit', 'list', ...args]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toContain('(400 BAD_REQUEST)');
    }
  });

  it('project admins read their project only, and must name it; viewers read nothing', async () => {
    const noProject = await stkAs(projectAdmin, ['audit', 'list'], undefined);
    expect(noProject.code).toBe(1);
    expect(noProject.stderr).toContain('you need org:admin, or project:admin on the project you name');
    expect(noProject.stderr).toContain('(403 FORBIDDEN)');
    const own = await auditAs(projectAdmin, ['--project', 'shop']);
    expect(own.code, own.output).toBe(0);
    expect(own.items.length).toBeGreaterThan(0);
    expect(own.items.every((i) => i.project === 'shop')).toBe(true);
    const other = await stkAs(projectAdmin, ['audit', 'list', '--project', 'blog']);
    expect(other.stderr).toContain('you need project:admin on blog (403 FORBIDDEN)');
    const v = await stkAs(viewer, ['audit', 'list', '--project', 'shop']);
    expect(v.code).toBe(1);
    expect(v.stderr).toContain('(you have project:viewer) (403 FORBIDDEN)');
    const viaEnv = await runStk(['audit', 'list', '--json'], {
      env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: projectAdmin, STK_PROJECT: 'shop' },
    });
    expect(viaEnv.code, viaEnv.output).toBe(0);
  });

  it('human output: tab-separated rows when piped', async () => {
    const r = await stkAs(owner, ['audit', 'list', '--project', 'blog', '--env', 'dev']);
    expect(r.code, r.output).toBe(0);
    const cols = r.stdout.trim().split('\t');
    expect(cols[1]).toBe(TEST_OWNER.email);
    expect(cols.slice(2, 5)).toEqual(['env.create', 'blog', 'dev']);
    expect(JSON.parse(cols[5]!)).toHaveProperty('envId');
  });
});
