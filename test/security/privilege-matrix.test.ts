/**
 * Privilege-escalation matrix for the operator plane: every membership operation (org invite, project
 * invite, accepting what was invited, org set-role/remove, project set-role/pin/remove, withdrawing an
 * invite) is tried by every operator role — org owner, org admin, org member, project admin,
 * deployer, viewer, and the admin of another project — against a target of each kind. Each cell
 * declares who may do it; a denied attempt must be 403 with the target's standing unchanged, an
 * allowed one must leave exactly the declared standing (an accepted invite grants what it names and
 * nothing more). Then the scenarios of the invite takeover (issue 12, finding 2) one by one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHub, TEST_OWNER } from '../helpers/procs.js';
import { loginToken } from '../helpers/cli.js';
import { rememberSecret } from '../helpers/secrets.js';
import { HubApi } from '../helpers/hub-api.js';

type Hub = Awaited<ReturnType<typeof startHub>>;
type Actor = 'owner' | 'orgAdmin' | 'orgMember' | 'projectAdmin' | 'deployer' | 'viewer' | 'otherAdmin';
const ACTORS: Actor[] = ['owner', 'orgAdmin', 'orgMember', 'projectAdmin', 'deployer', 'viewer', 'otherAdmin'];
const PW: string = rememberSecret('password', 'matrix-password-1');
const P = 'shop';

interface Res {
  status: number;
  json: any;
}

describe('security: operator privilege matrix', () => {
  let hub: Hub;
  /** the Hub's HTTP API; `http.as(token)` calls it as someone */
  let http: HubApi;
  const tokens = {} as Record<Actor, string>;
  let n = 0;
  const counts = { operations: 0, attempts: 0, allowed: 0, denied: 0, escalations: 0 };

  const must = async (p: Promise<Res>, status: number) => {
    const r = await p;
    expect(r.status, JSON.stringify(r.json)).toBe(status);
    return r;
  };
  const fresh = (what: string) => `${what}-${++n}@example.com`;
  const enc = encodeURIComponent;
  const inviteAs = async (token: string, email: string, role: string, project?: string) =>
    http.as(token).request('POST', project ? `/api/projects/${project}/invites` : '/api/org/invites', { email, role });
  const accept = (email: string, code: string, password = PW) =>
    http.as(undefined).request('POST', '/api/invites/accept', { email, code: rememberSecret('invite-code', code), password });
  /** An active operator invited by the owner (org role, then an optional explicit role on shop). */
  const member = async (what: string, org: string, shop?: string) => {
    const email = fresh(what);
    const inv = await must(inviteAs(tokens.owner, email, org), 201);
    await must(accept(email, inv.json.inviteCode), 200);
    if (shop) await must(http.as(tokens.owner).request('PUT', `/api/projects/${P}/members/${enc(email)}`, { role: shop }), 200);
    return email;
  };
  /** The target's standing as the owner sees it: org role/status and its entry on shop. */
  const standing = async (email: string) => {
    const org = (await must(http.as(tokens.owner).request('GET', '/api/org/members'), 200)).json.items.find((m: any) => m.email === email);
    const shop = (await must(http.as(tokens.owner).request('GET', `/api/projects/${P}/members`), 200)).json.items.find((m: any) => m.email === email);
    return { org: org ? `${org.role}/${org.status}` : null, shop: shop ? `${shop.role}/${shop.status}/${shop.source}` : null };
  };

  beforeAll(async () => {
    hub = await startHub();
    http = new HubApi(hub.url);
    tokens.owner = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
    await must(http.as(tokens.owner).request('POST', '/api/projects', { name: P }), 201);
    await must(http.as(tokens.owner).request('POST', '/api/projects', { name: 'blog' }), 201);
    const join = async (email: string, role: string, project?: string) => {
      const inv = await must(inviteAs(tokens.owner, email, role, project), 201);
      await must(accept(email, inv.json.inviteCode), 200);
      return loginToken(hub.url, email, PW);
    };
    tokens.orgAdmin = await join('m-orgadmin@example.com', 'admin');
    tokens.orgMember = await join('m-member@example.com', 'member');
    tokens.projectAdmin = await join('m-padmin@example.com', 'admin', P);
    tokens.deployer = await join('m-deployer@example.com', 'deployer', P);
    tokens.viewer = await join('m-viewer@example.com', 'viewer', P);
    tokens.otherAdmin = await join('m-otheradmin@example.com', 'admin', 'blog');
  }, 180_000);
  afterAll(async () => {
    await hub?.stop();
    console.log(
      `[security] privilege matrix: ${counts.operations} operations × ${ACTORS.length} roles = ${counts.attempts} attempts: ${counts.allowed} allowed as declared, ${counts.denied} × 403 with the target unchanged, ${counts.escalations} escalations`,
    );
  });

  interface Cell {
    name: string;
    allowed: Actor[];
    /** a fresh target (an email, plus whatever the attempt needs) */
    target: () => Promise<{ email: string; extra?: string }>;
    attempt: (token: string, t: { email: string; extra?: string }) => Promise<Res>;
    /** the standing an allowed attempt leaves (after `then`, when given) */
    after: { org: string | null; shop: string | null };
    /** what an allowed attempt is followed by before the standing is read (e.g. accepting the invite) */
    then?: (r: Res, t: { email: string }) => Promise<void>;
    status?: number;
  }

  const acceptIt = async (r: Res, t: { email: string }) => {
    await must(accept(t.email, r.json.inviteCode), 200);
  };
  const newEmail = async () => ({ email: fresh('new') });
  const cells: Cell[] = [
    // invites, each followed by the invitee accepting it: the result is exactly the invite
    {
      name: 'org invite as member',
      allowed: ['owner', 'orgAdmin'],
      target: newEmail,
      attempt: (k, t) => inviteAs(k, t.email, 'member'),
      then: acceptIt,
      after: { org: 'member/active', shop: null },
      status: 201,
    },
    {
      name: 'org invite as admin',
      allowed: ['owner', 'orgAdmin'],
      target: newEmail,
      attempt: (k, t) => inviteAs(k, t.email, 'admin'),
      then: acceptIt,
      after: { org: 'admin/active', shop: 'admin/active/org' },
      status: 201,
    },
    {
      name: 'org invite as owner',
      allowed: ['owner'],
      target: newEmail,
      attempt: (k, t) => inviteAs(k, t.email, 'owner'),
      then: acceptIt,
      after: { org: 'owner/active', shop: 'admin/active/org' },
      status: 201,
    },
    {
      name: 'project invite as viewer',
      allowed: ['owner', 'orgAdmin', 'projectAdmin'],
      target: newEmail,
      attempt: (k, t) => inviteAs(k, t.email, 'viewer', P),
      then: acceptIt,
      after: { org: 'member/active', shop: 'viewer/active/project' },
      status: 201,
    },
    {
      name: 'project invite as admin',
      allowed: ['owner', 'orgAdmin', 'projectAdmin'],
      target: newEmail,
      attempt: (k, t) => inviteAs(k, t.email, 'admin', P),
      then: acceptIt,
      after: { org: 'member/active', shop: 'admin/active/project' },
      status: 201,
    },
    {
      name: 'project invite of an org admin (a pin)',
      allowed: ['owner'],
      target: async () => ({ email: await member('admin', 'admin') }),
      attempt: (k, t) => inviteAs(k, t.email, 'viewer', P),
      then: acceptIt,
      after: { org: 'admin/active', shop: 'viewer/active/project' },
      status: 201,
    },
    // org roles
    {
      name: 'org set-role member → admin',
      allowed: ['owner', 'orgAdmin'],
      target: async () => ({ email: await member('member', 'member') }),
      attempt: (k, t) => http.as(k).request('PUT', `/api/org/members/${enc(t.email)}`, { role: 'admin' }),
      after: { org: 'admin/active', shop: 'admin/active/org' },
    },
    {
      name: 'org set-role admin → member',
      allowed: ['owner'],
      target: async () => ({ email: await member('admin', 'admin') }),
      attempt: (k, t) => http.as(k).request('PUT', `/api/org/members/${enc(t.email)}`, { role: 'member' }),
      after: { org: 'member/active', shop: null },
    },
    {
      name: 'org set-role member → owner',
      allowed: ['owner'],
      target: async () => ({ email: await member('member', 'member') }),
      attempt: (k, t) => http.as(k).request('PUT', `/api/org/members/${enc(t.email)}`, { role: 'owner' }),
      after: { org: 'owner/active', shop: 'admin/active/org' },
    },
    {
      name: 'org set-role owner → admin (a second owner)',
      allowed: ['owner'],
      target: async () => ({ email: await member('owner', 'owner') }),
      attempt: (k, t) => http.as(k).request('PUT', `/api/org/members/${enc(t.email)}`, { role: 'admin' }),
      after: { org: 'admin/active', shop: 'admin/active/org' },
    },
    {
      name: 'org remove a member',
      allowed: ['owner', 'orgAdmin'],
      target: async () => ({ email: await member('member', 'member', 'deployer') }),
      attempt: (k, t) => http.as(k).request('DELETE', `/api/org/members/${enc(t.email)}`),
      after: { org: null, shop: null },
    },
    {
      name: 'org remove an admin',
      allowed: ['owner'],
      target: async () => ({ email: await member('admin', 'admin') }),
      attempt: (k, t) => http.as(k).request('DELETE', `/api/org/members/${enc(t.email)}`),
      after: { org: null, shop: null },
    },
    {
      name: 'org remove a (second) owner',
      allowed: ['owner'],
      target: async () => ({ email: await member('owner', 'owner') }),
      attempt: (k, t) => http.as(k).request('DELETE', `/api/org/members/${enc(t.email)}`),
      after: { org: null, shop: null },
    },
    // project roles
    {
      name: 'project set-role viewer → deployer',
      allowed: ['owner', 'orgAdmin', 'projectAdmin'],
      target: async () => ({ email: await member('member', 'member', 'viewer') }),
      attempt: (k, t) => http.as(k).request('PUT', `/api/projects/${P}/members/${enc(t.email)}`, { role: 'deployer' }),
      after: { org: 'member/active', shop: 'deployer/active/project' },
    },
    {
      name: 'project set-role: grant admin to an org member',
      allowed: ['owner', 'orgAdmin', 'projectAdmin'],
      target: async () => ({ email: await member('member', 'member') }),
      attempt: (k, t) => http.as(k).request('PUT', `/api/projects/${P}/members/${enc(t.email)}`, { role: 'admin' }),
      after: { org: 'member/active', shop: 'admin/active/project' },
    },
    {
      name: 'project set-role: pin an org admin to viewer',
      allowed: ['owner'],
      target: async () => ({ email: await member('admin', 'admin') }),
      attempt: (k, t) => http.as(k).request('PUT', `/api/projects/${P}/members/${enc(t.email)}`, { role: 'viewer' }),
      after: { org: 'admin/active', shop: 'viewer/active/project' },
    },
    {
      name: 'project set-role: pin an owner to viewer',
      allowed: ['owner'],
      target: async () => ({ email: await member('owner', 'owner') }),
      attempt: (k, t) => http.as(k).request('PUT', `/api/projects/${P}/members/${enc(t.email)}`, { role: 'viewer' }),
      after: { org: 'owner/active', shop: 'viewer/active/project' },
    },
    {
      name: 'project set-role: lift a pinned org admin back to admin',
      allowed: ['owner'],
      target: async () => ({ email: await member('admin', 'admin', 'viewer') }),
      attempt: (k, t) => http.as(k).request('PUT', `/api/projects/${P}/members/${enc(t.email)}`, { role: 'admin' }),
      after: { org: 'admin/active', shop: 'admin/active/project' },
    },
    // another project admin of the project (an org member with project:admin) is not ranked below a project admin
    {
      name: 'project set-role: demote a co-admin to viewer',
      allowed: ['owner', 'orgAdmin'],
      target: async () => ({ email: await member('coadmin', 'member', 'admin') }),
      attempt: (k, t) => http.as(k).request('PUT', `/api/projects/${P}/members/${enc(t.email)}`, { role: 'viewer' }),
      after: { org: 'member/active', shop: 'viewer/active/project' },
    },
    {
      name: 'project remove a co-admin',
      allowed: ['owner', 'orgAdmin'],
      target: async () => ({ email: await member('coadmin', 'member', 'admin') }),
      attempt: (k, t) => http.as(k).request('DELETE', `/api/projects/${P}/members/${enc(t.email)}`),
      after: { org: 'member/active', shop: null },
    },
    {
      name: 'project remove a deployer',
      allowed: ['owner', 'orgAdmin', 'projectAdmin'],
      target: async () => ({ email: await member('member', 'member', 'deployer') }),
      attempt: (k, t) => http.as(k).request('DELETE', `/api/projects/${P}/members/${enc(t.email)}`),
      after: { org: 'member/active', shop: null },
    },
    {
      name: 'project remove a pinned org admin',
      allowed: ['owner'],
      target: async () => ({ email: await member('admin', 'admin', 'viewer') }),
      attempt: (k, t) => http.as(k).request('DELETE', `/api/projects/${P}/members/${enc(t.email)}`),
      after: { org: 'admin/active', shop: 'admin/active/org' },
    },
    {
      name: 'project remove: withdraw an open invite',
      allowed: ['owner', 'orgAdmin', 'projectAdmin'],
      target: async () => {
        const email = fresh('invited');
        const inv = await must(inviteAs(tokens.owner, email, 'deployer', P), 201);
        return { email, extra: rememberSecret('invite-code', inv.json.inviteCode as string) };
      },
      attempt: (k, t) => http.as(k).request('DELETE', `/api/projects/${P}/members/${enc(t.email)}`),
      then: async (_r, t) => {
        // the withdrawn code no longer works
        expect((await accept(t.email, (t as { extra?: string }).extra!)).status).toBe(400);
      },
      after: { org: null, shop: null },
    },
  ];

  for (const c of cells) {
    it(`${c.name}: ${c.allowed.join(', ')} only`, async () => {
      counts.operations++;
      const shared = await c.target();
      const before = await standing(shared.email);
      for (const actor of ACTORS.filter((a) => !c.allowed.includes(a))) {
        const r = await c.attempt(tokens[actor], shared);
        counts.attempts++;
        if (r.status < 400) counts.escalations++;
        expect(r.status, `${actor}: ${c.name} → ${JSON.stringify(r.json)}`).toBe(403);
        expect(r.json.error.code).toBe('FORBIDDEN');
        expect(await standing(shared.email), `${actor}: ${c.name} changed the target`).toEqual(before);
        counts.denied++;
      }
      for (const actor of c.allowed) {
        const t = await c.target();
        const r = await c.attempt(tokens[actor], t);
        counts.attempts++;
        expect(r.status, `${actor}: ${c.name} → ${JSON.stringify(r.json)}`).toBe(c.status ?? 200);
        await c.then?.(r, { ...t });
        expect(await standing(t.email), `${actor}: ${c.name}`).toEqual(c.after);
        counts.allowed++;
      }
    }, 120_000);
  }

  describe('the invite takeover (issue 12, finding 2) and its relatives', () => {
    const whoami = async (email: string) => (await must(http.as(await loginToken(hub.url, email, PW)).request('GET', '/api/auth/whoami'), 200)).json;

    it("a project admin cannot turn the owner's pending org-owner invite into their own account", async () => {
      const victim = fresh('victim');
      const ownerInvite = await must(inviteAs(tokens.owner, victim, 'owner'), 201);
      // the project admin invites the same email to their project, to accept it with a password of their choice
      const attack = await inviteAs(tokens.projectAdmin, victim, 'viewer', P);
      expect(attack.status, JSON.stringify(attack.json)).toBe(409);
      expect(attack.json.error.message).toContain('already has an open invite');
      expect(await standing(victim)).toEqual({ org: 'owner/pending', shop: null });
      // the owner's invite is untouched: the real invitee accepts it
      await must(accept(victim, ownerInvite.json.inviteCode), 200);
      expect((await whoami(victim)).orgRole).toBe('owner');
    });

    it("the same the other way round: the owner is told, withdraws the project invite, and the project admin's code is dead", async () => {
      const victim = fresh('victim');
      const early = await must(inviteAs(tokens.projectAdmin, victim, 'viewer', P), 201);
      const blocked = await inviteAs(tokens.owner, victim, 'owner');
      expect(blocked.status).toBe(409);
      await must(http.as(tokens.owner).request('DELETE', `/api/projects/${P}/members/${enc(victim)}`), 200);
      const ownerInvite = await must(inviteAs(tokens.owner, victim, 'owner'), 201);
      expect((await accept(victim, rememberSecret('invite-code', early.json.inviteCode as string), 'attacker-password-1')).status).toBe(400);
      await must(accept(victim, ownerInvite.json.inviteCode), 200);
      expect((await whoami(victim)).orgRole).toBe('owner');
    });

    it('accepting a project invite activates that project role and org member, not a pending org invite of the same email', async () => {
      const email = fresh('two-invites');
      const orgInvite = await must(inviteAs(tokens.owner, email, 'admin'), 201);
      const projectInvite = await must(inviteAs(tokens.owner, email, 'viewer', P), 201);
      await must(accept(email, projectInvite.json.inviteCode), 200);
      const w = await whoami(email);
      expect(w.orgRole).toBe('member');
      expect(w.projectRoles).toEqual([{ project: P, role: 'viewer', status: 'active' }]);
      // the org invite is still open and grants exactly its role when accepted
      expect((await standing(email)).org).toBe('member/active');
      await must(accept(email, orgInvite.json.inviteCode), 200);
      expect((await whoami(email)).orgRole).toBe('admin');
      // the explicit project role stays (an org admin pinned to viewer on shop)
      expect(await standing(email)).toEqual({ org: 'admin/active', shop: 'viewer/active/project' });
    });

    it("an existing operator: another admin's project invite leaves the owner's org invite untouched", async () => {
      // an operator who was removed from the org: active, with a password, no membership
      const email = await member('returning', 'member');
      await must(http.as(tokens.owner).request('DELETE', `/api/org/members/${enc(email)}`), 200);
      const orgInvite = await must(inviteAs(tokens.owner, email, 'admin'), 201);
      const projectInvite = await must(inviteAs(tokens.projectAdmin, email, 'viewer', P), 201);
      // a project invite from someone else for the same project while the owner's is open: refused, not replaced
      const ownerShop = await must(inviteAs(tokens.owner, email, 'deployer', 'blog'), 201);
      const otherShop = await inviteAs(tokens.otherAdmin, email, 'viewer', 'blog');
      expect(otherShop.status).toBe(409);
      await must(accept(email, projectInvite.json.inviteCode), 200);
      expect((await whoami(email)).orgRole).toBe('member');
      await must(accept(email, ownerShop.json.inviteCode), 200);
      await must(accept(email, orgInvite.json.inviteCode), 200);
      const w = await whoami(email);
      expect(w.orgRole).toBe('admin');
      expect(w.projectRoles).toEqual([
        { project: 'blog', role: 'deployer', status: 'active' },
        { project: P, role: 'viewer', status: 'active' },
      ]);
    });

    it("an invite dies with its sender's right to grant it (demotion, removal from the project)", async () => {
      const senderEmail = await member('sender', 'admin');
      const sender = await loginToken(hub.url, senderEmail, PW);
      const email = fresh('late');
      const inv = await must(inviteAs(sender, email, 'admin'), 201);
      const keep = await must(inviteAs(sender, fresh('late'), 'viewer', P), 201);
      expect((await standing(email)).org).toBe('admin/pending');
      await must(http.as(tokens.owner).request('PUT', `/api/org/members/${enc(senderEmail)}`, { role: 'member' }), 200);
      // withdrawn with the demotion: no longer listed, the code no longer works
      expect(await standing(email)).toEqual({ org: null, shop: null });
      const r = await accept(email, inv.json.inviteCode);
      expect(r.status, JSON.stringify(r.json)).toBe(400);
      expect(await standing(email)).toEqual({ org: null, shop: null });
      // the project invite the (now) member sent is void too: they have no project:admin on shop
      expect((await accept(keep.json.email, keep.json.inviteCode)).status).toBe(400);
      // a project admin's invite dies with their project role
      const padminEmail = await member('padmin', 'member', 'admin');
      const padmin = await loginToken(hub.url, padminEmail, PW);
      const email2 = fresh('late');
      const inv2 = await must(inviteAs(padmin, email2, 'admin', P), 201);
      await must(http.as(tokens.owner).request('DELETE', `/api/projects/${P}/members/${enc(padminEmail)}`), 200);
      expect((await accept(email2, inv2.json.inviteCode)).status).toBe(400);
      expect(await standing(email2)).toEqual({ org: null, shop: null });
    });

    it('a refusal on the ladder says why and who can do it', async () => {
      const r = await http.as(tokens.projectAdmin).request('PUT', `/api/projects/${P}/members/${enc('m-orgadmin@example.com')}`, { role: 'viewer' });
      expect(r.status).toBe(403);
      expect(r.json.error.message).toBe(
        'you cannot change the project role of m-orgadmin@example.com on shop: they are org admin, at or above your own authority (ask an org owner)',
      );
    });

    it('nobody invites outside their scope: a project admin to another project, a member to the org', async () => {
      expect((await inviteAs(tokens.projectAdmin, fresh('x'), 'viewer', 'blog')).status).toBe(403);
      expect((await inviteAs(tokens.otherAdmin, fresh('x'), 'viewer', P)).status).toBe(403);
      expect((await inviteAs(tokens.orgMember, fresh('x'), 'member')).status).toBe(403);
      expect((await inviteAs(tokens.orgAdmin, fresh('x'), 'owner')).status).toBe(403);
    });
  });
});
