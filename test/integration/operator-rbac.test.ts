import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSqlite } from '../helpers/sqlite.js';
import { startHub, TEST_OWNER } from '../helpers/procs.js';
import { loginToken, runStk, tempConfigDir } from '../helpers/cli.js';
import { DATABASE_URL } from '../helpers/pg.js';
import { rememberSecret } from '../helpers/secrets.js';
import { HubApi } from '../helpers/hub-api.js';

type Hub = Awaited<ReturnType<typeof startHub>>;
const PW = 'member-password-1';

/** Org/project RBAC (OPERATOR-006): invites, acceptance, the role matrix, role changes and removal. */
describe('operator RBAC', () => {
  let hub: Hub;
  /** the Hub's HTTP API; `http.as(token)` calls it as someone */
  let http: HubApi;
  let cfg: string;
  let owner: string;
  const tokens: Record<string, string> = {};

  const stkAs = (token: string | undefined, args: string[], input?: string) =>
    runStk(args, { env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: token }, input });
  const invite = async (email: string, role: string, project?: string): Promise<string> => {
    const r = await http.as(owner).request('POST', project ? `/api/projects/${project}/invites` : '/api/org/invites', { email, role });
    expect(r.status, JSON.stringify(r.json)).toBe(201);
    return rememberSecret('invite-code', r.json.inviteCode as string);
  };
  const accept = async (email: string, code: string, password = PW) => {
    const r = await http.as(undefined).request('POST', '/api/invites/accept', { email, code, password });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
  };
  const join = async (email: string, role: string, project?: string) => {
    await accept(email, await invite(email, role, project));
    return loginToken(hub.url, email, PW);
  };

  beforeAll(async () => {
    hub = await startHub();
    http = new HubApi(hub.url);
    cfg = tempConfigDir();
    owner = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
    tokens.owner = owner;
    expect((await http.as(owner).request('POST', '/api/projects', { name: 'shop' })).status).toBe(201);
    expect((await http.as(owner).request('POST', '/api/projects', { name: 'blog' })).status).toBe(201);
    expect((await http.as(owner).request('POST', '/api/projects/shop/envs', { name: 'dev' })).status).toBe(201);
    tokens.orgAdmin = await join('orgadmin@example.com', 'admin');
    tokens.pinned = await join('pinned@example.com', 'admin');
    expect((await http.as(owner).request('PUT', '/api/projects/shop/members/pinned@example.com', { role: 'viewer' })).status).toBe(200);
    tokens.projectAdmin = await join('padmin@example.com', 'admin', 'shop');
    tokens.deployer = await join('deployer@example.com', 'deployer', 'shop');
    tokens.viewer = await join('viewer@example.com', 'viewer', 'shop');
    // an active org member whose project invite is still pending
    tokens.pendingMember = await join('member@example.com', 'member');
    await invite('member@example.com', 'admin', 'shop');
  });
  afterAll(async () => {
    await hub?.stop();
  });

  describe('invite → accept → login through stk', () => {
    let code: string;
    it('stk org invite prints a one-time 192-bit code; only its hash is stored', async () => {
      const r = await stkAs(owner, ['org', 'invite', 'alice@example.com', '--role', 'admin']);
      expect(r.code, r.output).toBe(0);
      code = /Invite code: (\S+)/.exec(r.stdout)![1]!;
      expect(code).toMatch(/^stki_[A-Za-z0-9_-]{32}$/);
      expect(r.stderr).toContain('✓ Invited alice@example.com to the org as admin');
      expect(r.stderr).toContain('will not be shown again');
      const s = openSqlite(hub.dbUrl.replace(/^sqlite:\/\//, ''), { readonly: true });
      try {
        expect(JSON.stringify(s.prepare('select * from invites').all())).not.toContain(code);
      } finally {
        s.close();
      }
    });

    it('the pending invitee cannot log in yet', async () => {
      const r = await http.as(undefined).request('POST', '/api/auth/login', { email: 'alice@example.com', password: PW });
      expect(r.status).toBe(401);
    });

    it('a wrong code or another email is refused (400, exit 1)', async () => {
      const wrong = await stkAs(undefined, ['invite', 'accept', '--email', 'alice@example.com', '--code', 'stki_' + 'x'.repeat(32), '--password-stdin'], PW);
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toContain('invalid or expired invite code for this email (400 BAD_REQUEST)');
      const other = await stkAs(undefined, ['invite', 'accept', '--email', 'bob@example.com', '--code', code, '--password-stdin'], PW);
      expect(other.code).toBe(1);
      expect(other.stderr).toContain('(400 BAD_REQUEST)');
      const short = await stkAs(undefined, ['invite', 'accept', '--email', 'alice@example.com', '--code', code, '--password-stdin'], 'short');
      expect(short.code).toBe(1);
      expect(short.stderr).toContain('password must be 8-1024 characters');
    });

    it('stk invite accept, then stk login; whoami shows the org role; the code is spent', async () => {
      const a = await stkAs(undefined, ['invite', 'accept', '--email', 'alice@example.com', '--code', code, '--password-stdin'], PW);
      expect(a.code, a.output).toBe(0);
      expect(a.stderr).toContain('Invite accepted for alice@example.com');
      const dir = tempConfigDir();
      const env = { STK_CONFIG_DIR: dir, STK_HUB_URL: hub.url };
      const login = await runStk(['login', '--email', 'alice@example.com', '--password-stdin'], { env, input: PW });
      expect(login.code, login.output).toBe(0);
      const who = await runStk(['whoami', '--json'], { env });
      expect(JSON.parse(who.stdout)).toMatchObject({ email: 'alice@example.com', orgRole: 'admin' });
      const again = await stkAs(undefined, ['invite', 'accept', '--email', 'alice@example.com', '--code', code, '--password-stdin'], PW);
      expect(again.code).toBe(1);
      expect(hub.logs()).not.toContain(code);
      expect(hub.logs()).not.toContain(PW);
    });

    it('a project invite for an existing operator is accepted with their current password', async () => {
      const r = await stkAs(owner, ['project', 'invite', 'alice@example.com', '--project', 'blog', '--role', 'viewer', '--json']);
      expect(r.code, r.output).toBe(0);
      const inv = JSON.parse(r.stdout);
      expect(Object.keys(inv).sort()).toEqual(['email', 'expiresAt', 'inviteCode', 'role']);
      const days = (Date.parse(inv.expiresAt) - Date.now()) / 86400_000;
      expect(days).toBeGreaterThan(6.9);
      expect(days).toBeLessThanOrEqual(7);
      const bad = await http
        .as(undefined)
        .request('POST', '/api/invites/accept', { email: 'alice@example.com', code: inv.inviteCode, password: 'not-her-password' });
      expect(bad.status).toBe(401);
      await accept('alice@example.com', inv.inviteCode);
      const members = await stkAs(owner, ['project', 'members', 'list', '--project', 'blog', '--json']);
      expect(JSON.parse(members.stdout)).toContainEqual({
        email: 'alice@example.com',
        role: 'viewer',
        status: 'active',
        createdAt: expect.any(String),
        source: 'project',
      });
    });

    it('inviting again replaces the earlier code', async () => {
      const first = await invite('carol@example.com', 'viewer', 'shop');
      const second = await invite('carol@example.com', 'deployer', 'shop');
      expect((await http.as(undefined).request('POST', '/api/invites/accept', { email: 'carol@example.com', code: first, password: PW })).status).toBe(400);
      await accept('carol@example.com', second);
      const t = await loginToken(hub.url, 'carol@example.com', PW);
      const list = await http.as(t).request('GET', '/api/projects');
      expect(list.json.items).toEqual([{ name: 'shop', createdAt: expect.any(String), role: 'deployer' }]);
    });

    it('inviting an active member again is 409', async () => {
      const r = await stkAs(owner, ['project', 'invite', 'viewer@example.com', '--project', 'shop', '--role', 'admin']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('(409 CONFLICT)');
    });
  });

  describe('the role matrix on admin routes (env create, connections set)', () => {
    const cases: Array<[string, boolean, string?]> = [
      ['owner', true],
      ['orgAdmin', true],
      ['projectAdmin', true],
      ['pinned', false, 'project:viewer'],
      ['deployer', false, 'project:deployer'],
      ['viewer', false, 'project:viewer'],
      ['pendingMember', false],
    ];
    for (const [who, allowed, has] of cases) {
      it(`${who}: ${allowed ? 'allowed' : '403'}`, async () => {
        const envName = `e-${who.toLowerCase()}`;
        const env = await stkAs(tokens[who], ['env', 'create', '--project', 'shop', envName]);
        const conn = await stkAs(tokens[who], ['connections', 'set', '--project', 'shop', '--env', 'dev', '--name', 'main', '--db-url-stdin'], DATABASE_URL);
        const list = await stkAs(tokens[who], ['connections', 'list', '--project', 'shop', '--env', 'dev']);
        for (const r of [env, conn, list]) {
          if (allowed) {
            expect(r.code, r.output).toBe(0);
          } else {
            expect(r.code).toBe(1);
            expect(r.stderr).toContain('Error: you need project:admin on shop');
            expect(r.stderr).toContain('(403 FORBIDDEN)');
            if (has) expect(r.stderr).toContain(`(you have ${has})`);
          }
        }
      });
    }

    it('a pending invitee (new email) cannot log in at all', async () => {
      await invite('newbie@example.com', 'admin', 'shop');
      const r = await http.as(undefined).request('POST', '/api/auth/login', { email: 'newbie@example.com', password: PW });
      expect(r.status).toBe(401);
    });

    it('deployer and viewer may read (env list); the pending member may not', async () => {
      for (const who of ['deployer', 'viewer', 'pinned']) {
        const r = await stkAs(tokens[who], ['env', 'list', '--project', 'shop', '--json']);
        expect(r.code, `${who}: ${r.output}`).toBe(0);
      }
      const p = await stkAs(tokens.pendingMember, ['env', 'list', '--project', 'shop']);
      expect(p.code).toBe(1);
      expect(p.stderr).toContain('(403 FORBIDDEN)');
    });

    it('an explicit project viewer overrides org admin in project list too', async () => {
      const r = await http.as(tokens.pinned).request('GET', '/api/projects');
      expect(r.json.items.map((p: { name: string; role: string }) => [p.name, p.role])).toEqual([
        ['blog', 'admin'],
        ['shop', 'viewer'],
      ]);
      const v = await http.as(tokens.viewer).request('GET', '/api/projects');
      expect(v.json.items.map((p: { name: string }) => p.name)).toEqual(['shop']);
    });

    it('project creation needs org admin', async () => {
      const r = await stkAs(tokens.projectAdmin, ['project', 'create', 'nope']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('you need org:admin (you have org:member) (403 FORBIDDEN)');
      const ok = await stkAs(tokens.orgAdmin, ['project', 'create', 'admins-project']);
      expect(ok.code, ok.output).toBe(0);
    });

    it('an unknown project reads to an org member like one they have no role on (403, same message); an org admin gets 404', async () => {
      const a = await stkAs(tokens.viewer, ['env', 'list', '--project', 'ghost']);
      expect(a.stderr).toContain('Error: you need project:viewer on ghost (403 FORBIDDEN)');
      const b = await stkAs(tokens.viewer, ['env', 'list', '--project', 'blog']);
      expect(b.stderr).toContain('Error: you need project:viewer on blog (403 FORBIDDEN)');
      const c = await stkAs(tokens.orgAdmin, ['env', 'list', '--project', 'ghost']);
      expect(c.stderr).toContain('Error: project "ghost" not found (404 NOT_FOUND)');
    });
  });

  describe('role changes and removal take effect on the next request', () => {
    it('set-role viewer → admin → viewer', async () => {
      const up = await stkAs(owner, ['project', 'members', 'set-role', 'viewer@example.com', '--project', 'shop', '--role', 'admin']);
      expect(up.code, up.output).toBe(0);
      expect(up.stderr).toContain('viewer@example.com is now admin on project shop');
      expect((await stkAs(tokens.viewer, ['env', 'create', '--project', 'shop', 'promoted'])).code).toBe(0);
      const down = await stkAs(owner, ['project', 'members', 'set-role', 'viewer@example.com', '--project', 'shop', '--role', 'viewer', '--json']);
      expect(JSON.parse(down.stdout)).toMatchObject({ email: 'viewer@example.com', role: 'viewer', status: 'active' });
      const denied = await stkAs(tokens.viewer, ['env', 'create', '--project', 'shop', 'demoted']);
      expect(denied.code).toBe(1);
      expect(denied.stderr).toContain('(403 FORBIDDEN)');
    });

    it('a removed project member loses access at once', async () => {
      const t = await join('removed@example.com', 'admin', 'shop');
      expect((await stkAs(t, ['env', 'create', '--project', 'shop', 'before-removal'])).code).toBe(0);
      const rm = await stkAs(owner, ['project', 'members', 'remove', 'removed@example.com', '--project', 'shop']);
      expect(rm.code, rm.output).toBe(0);
      expect(rm.stderr).toContain('Removed removed@example.com from project shop');
      for (const args of [
        ['env', 'create', '--project', 'shop', 'after-removal'],
        ['connections', 'list', '--project', 'shop', '--env', 'dev'],
        ['env', 'list', '--project', 'shop'],
      ]) {
        const r = await stkAs(t, args);
        expect(r.code).toBe(1);
        expect(r.stderr).toContain('(403 FORBIDDEN)');
      }
    });

    it('a removed org admin loses access at once', async () => {
      const t = await join('gone@example.com', 'admin');
      expect((await http.as(t).request('GET', '/api/projects/shop/envs/dev/connections')).status).toBe(200);
      const rm = await stkAs(owner, ['org', 'members', 'remove', 'gone@example.com']);
      expect(rm.code, rm.output).toBe(0);
      expect((await http.as(t).request('GET', '/api/projects/shop/envs/dev/connections')).status).toBe(403);
      expect((await http.as(t).request('POST', '/api/projects', { name: 'late' })).status).toBe(403);
      const list = await stkAs(owner, ['org', 'members', 'list', '--json']);
      expect(JSON.parse(list.stdout).map((m: { email: string }) => m.email)).not.toContain('gone@example.com');
    });

    it('org set-role: admin → member takes effect; an org admin cannot grant owner', async () => {
      const t = await join('shifty@example.com', 'admin');
      expect((await http.as(t).request('GET', '/api/org/members')).status).toBe(200);
      const r = await stkAs(owner, ['org', 'members', 'set-role', 'shifty@example.com', '--role', 'member']);
      expect(r.code, r.output).toBe(0);
      expect(r.stderr).toContain('shifty@example.com is now org member');
      expect((await http.as(t).request('GET', '/api/org/members')).status).toBe(403);
      const grant = await stkAs(tokens.orgAdmin, ['org', 'members', 'set-role', 'shifty@example.com', '--role', 'owner']);
      expect(grant.code).toBe(1);
      expect(grant.stderr).toContain('(403 FORBIDDEN)');
      const inv = await stkAs(tokens.orgAdmin, ['org', 'invite', 'boss@example.com', '--role', 'owner']);
      expect(inv.stderr).toContain('(403 FORBIDDEN)');
    });

    it('the last owner cannot be demoted or removed (409); with a second owner it works', async () => {
      const demote = await stkAs(owner, ['org', 'members', 'set-role', TEST_OWNER.email, '--role', 'admin']);
      expect(demote.code).toBe(1);
      expect(demote.stderr).toContain('last owner');
      expect(demote.stderr).toContain('(409 CONFLICT)');
      const remove = await stkAs(owner, ['org', 'members', 'remove', TEST_OWNER.email]);
      expect(remove.stderr).toContain('(409 CONFLICT)');
      const t2 = await join('owner2@example.com', 'owner');
      const ok = await stkAs(t2, ['org', 'members', 'set-role', TEST_OWNER.email, '--role', 'admin']);
      expect(ok.code, ok.output).toBe(0);
      const back = await stkAs(t2, ['org', 'members', 'set-role', TEST_OWNER.email, '--role', 'owner']);
      expect(back.code, back.output).toBe(0);
    });
  });

  describe('422 INVALID_ROLE for a role that is not valid for its scope', () => {
    it('org invite / set-role list the org roles', async () => {
      const r = await stkAs(owner, ['org', 'invite', 'x@example.com', '--role', 'superuser']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('invalid org role "superuser": use one of owner, admin, member (422 INVALID_ROLE)');
      const s = await stkAs(owner, ['org', 'members', 'set-role', 'viewer@example.com', '--role', 'deployer']);
      expect(s.stderr).toContain('(422 INVALID_ROLE)');
    });

    it('project invite / set-role list the project roles; the envelope carries validRoles', async () => {
      const r = await stkAs(owner, ['project', 'invite', 'x@example.com', '--project', 'shop', '--role', 'owner']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('invalid project role "owner": use one of admin, deployer, viewer (422 INVALID_ROLE)');
      const h = await http.as(owner).request('PUT', '/api/projects/shop/members/viewer@example.com', { role: 'superadmin' });
      expect(h.status).toBe(422);
      expect(h.json.error).toMatchObject({ code: 'INVALID_ROLE', details: { validRoles: ['admin', 'deployer', 'viewer'] } });
      const missing = await http.as(owner).request('POST', '/api/org/invites', { email: 'x@example.com' });
      expect(missing.status).toBe(422);
    });

    it('--role is required by the CLI (usage error, exit 2)', async () => {
      const r = await stkAs(owner, ['org', 'invite', 'x@example.com']);
      expect(r.code).toBe(2);
    });
  });

  it('members lists: org members; project members include inherited org admins', async () => {
    const org = await stkAs(owner, ['org', 'members', 'list', '--json']);
    const om = JSON.parse(org.stdout) as Array<{ email: string; role: string; status: string }>;
    expect(om).toContainEqual(expect.objectContaining({ email: TEST_OWNER.email, role: 'owner', status: 'active' }));
    expect(om).toContainEqual(expect.objectContaining({ email: 'newbie@example.com', role: 'member', status: 'pending' }));
    const proj = await stkAs(tokens.projectAdmin, ['project', 'members', 'list', '--project', 'shop', '--json']);
    expect(proj.code, proj.output).toBe(0);
    const pm = JSON.parse(proj.stdout) as Array<{ email: string; role: string; status: string; source: string }>;
    expect(pm).toContainEqual(expect.objectContaining({ email: 'orgadmin@example.com', role: 'admin', source: 'org' }));
    expect(pm).toContainEqual(expect.objectContaining({ email: 'pinned@example.com', role: 'viewer', source: 'project' }));
    expect(pm).toContainEqual(expect.objectContaining({ email: 'newbie@example.com', role: 'admin', status: 'pending' }));
    const denied = await stkAs(tokens.deployer, ['project', 'members', 'list', '--project', 'shop']);
    expect(denied.stderr).toContain('(403 FORBIDDEN)');
  });
});
