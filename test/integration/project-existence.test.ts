import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loginToken } from '../helpers/cli.js';
import { rememberSecret } from '../helpers/secrets.js';
import { startStack, type Stack } from './apikeys.setup.js';

/**
 * Issue 16 security review, finding 2: an org member could tell whether a project name exists (403 for
 * a project they have no role on, 404 for a name nobody created). Now a project without any role on it
 * reads exactly like one that does not exist: the same status, code and message (name for name), on
 * every project-scoped route (the path, `?project=` and body forms), decided in the one place that
 * resolves project access (rbac.requireProjectRole). A role below the route's still gets 403 naming it.
 * Then the ids below a project: another project's env, connection, key or release, named under a
 * project the caller administers, reads like one that never existed.
 */
describe('project names cannot be probed', () => {
  let s: Stack;
  const PW = rememberSecret('password', 'existence-password-1');
  const tokens = {} as Record<'member' | 'viewer' | 'blogAdmin' | 'outsider', string>;
  let keyId = '';
  let releaseId = '';

  const join = async (email: string, role: string, project?: string) => {
    const inv = await s.api('POST', project ? `/api/projects/${project}/invites` : '/api/org/invites', { email, role });
    expect(inv.status, inv.text).toBe(201);
    const code = rememberSecret('invite-code', inv.json.inviteCode);
    const a = await s.api('POST', '/api/invites/accept', { email, code, password: PW }, null as unknown as string);
    expect(a.status, a.text).toBe(200);
    return loginToken(s.hub.url, email, PW);
  };
  /** the answer, with what differs between two requests for two names (the request id, the name) blanked */
  const answer = async (method: string, path: string, body: unknown, token: string, name: string) => {
    const r = await s.api(method, path, body, token);
    return { status: r.status, code: r.json?.error?.code, message: String(r.json?.error?.message).replaceAll(name, '<name>') };
  };

  beforeAll(async () => {
    s = await startStack({ bridges: 0 });
    for (const [m, p, b] of [
      ['POST', '/api/projects', { name: 'blog' }],
      ['POST', '/api/projects/blog/envs', { name: 'dev' }],
      ['POST', `/api/projects/${s.project}/envs`, { name: 'secret-env' }],
    ] as const) {
      const r = await s.api(m, p, b);
      expect(r.status, r.text).toBe(201);
    }
    keyId = (await s.createKey('shop-key', 'reader')).keyId;
    releaseId = (await s.api('GET', `/api/projects/${s.project}/releases`)).json.items[0].releaseId;
    expect(releaseId).toBeTruthy();
    tokens.member = await join('member@example.com', 'member');
    tokens.viewer = await join('viewer@example.com', 'viewer', s.project);
    tokens.blogAdmin = await join('blog-admin@example.com', 'admin', 'blog');
    tokens.outsider = await join('outsider@example.com', 'member');
    expect((await s.api('DELETE', '/api/org/members/outsider%40example.com')).status).toBe(200);
  }, 120_000);
  afterAll(async () => {
    await s?.stop();
  });

  /** project-scoped routes of each kind: path, ?project=, body; reads and writes; several services */
  const routes = (p: string): Array<[string, string, unknown]> => [
    ['GET', `/api/projects/${p}/envs`, undefined],
    ['POST', `/api/projects/${p}/envs`, { name: 'probe' }],
    ['GET', `/api/projects/${p}/envs/dev/connections`, undefined],
    ['GET', `/api/projects/${p}/envs/dev/apikeys`, undefined],
    ['POST', `/api/projects/${p}/envs/dev/apikeys/${keyId}/suspend`, {}],
    ['GET', `/api/projects/${p}/releases`, undefined],
    ['GET', `/api/projects/${p}/members`, undefined],
    ['POST', `/api/projects/${p}/invites`, { email: 'probe@example.com', role: 'viewer' }],
    ['GET', `/api/projects/${p}/leak-policy`, undefined],
    ['GET', `/api/projects/${p}/webhooks`, undefined],
    ['GET', `/api/audit?project=${p}`, undefined],
    ['GET', `/api/apikeys/list?project=${p}&env=dev`, undefined],
    ['POST', '/api/apikeys/revoke', { project: p, env: 'dev', key_id: keyId }],
  ];

  it('an org member without a role, and another project’s admin: the same 403 for an existing project and a made-up name (404 only for an org owner, who holds a role on every project)', async () => {
    for (const who of ['member', 'blogAdmin'] as const) {
      for (const [i, [m, path, body]] of routes(s.project).entries()) {
        const existing = await answer(m, path, body, tokens[who], s.project);
        const [gm, gpath, gbody] = routes('no-such-project')[i]!;
        const ghost = await answer(gm, gpath, gbody, tokens[who], 'no-such-project');
        expect(existing.status, `${who}: ${m} ${path}: ${JSON.stringify(existing)}`).toBe(403);
        expect(existing.code).toBe('FORBIDDEN');
        expect(existing.message, `${who}: ${m} ${path}`).toMatch(/^you need project:(viewer|deployer|admin) on <name>$/);
        expect(ghost, `${who}: ${m} ${gpath}`).toEqual(existing);
      }
    }
    // the owner may see every project: a name nobody created is simply not found
    const owner = await s.api('GET', '/api/projects/no-such-project/envs');
    expect(owner.status, owner.text).toBe(404);
    expect(owner.json.error.message).toBe('project "no-such-project" not found');
  });

  it('outside the org: the same 403 for both; a role below the route’s: 403 naming it (a member may know the project)', async () => {
    for (const [i, [m, path, body]] of routes(s.project).entries()) {
      const existing = await answer(m, path, body, tokens.outsider, s.project);
      const [gm, gpath, gbody] = routes('no-such-project')[i]!;
      expect(existing.status, `${m} ${path}`).toBe(403);
      expect(await answer(gm, gpath, gbody, tokens.outsider, 'no-such-project'), `${m} ${gpath}`).toEqual(existing);
    }
    const v = await s.api('POST', `/api/projects/${s.project}/envs`, { name: 'probe' }, tokens.viewer);
    expect(v.status).toBe(403);
    expect(v.json.error.message).toBe(`you need project:admin on ${s.project} (you have project:viewer)`);
    // and what a viewer may do still works
    expect((await s.api('GET', `/api/projects/${s.project}/envs`, undefined, tokens.viewer)).status).toBe(200);
  });

  it('envs, connections, keys and releases of another project read like ones that never existed', async () => {
    const blog = (path: string, m = 'GET', body?: unknown) => answer(m, `/api/projects/blog${path}`, body, tokens.blogAdmin, '\u0000');
    const pairs: Array<[string, Awaited<ReturnType<typeof blog>>, Awaited<ReturnType<typeof blog>>]> = [
      ['env', await blog('/envs/secret-env/apikeys'), await blog('/envs/never-env/apikeys')],
      ['connection', await blog('/envs/dev/connections/main/test', 'POST', {}), await blog('/envs/dev/connections/never/test', 'POST', {})],
      ['key by id', await blog(`/envs/dev/apikeys/${keyId}`), await blog('/envs/dev/apikeys/ZZZZZZZZZZZZ')],
      ['key suspend', await blog(`/envs/dev/apikeys/${keyId}/suspend`, 'POST', {}), await blog('/envs/dev/apikeys/ZZZZZZZZZZZZ/suspend', 'POST', {})],
      ['release', await blog(`/releases/${releaseId}`), await blog('/releases/01ZZZZZZZZZZZZZZZZZZZZZZZZ')],
    ];
    for (const [what, theirs, never] of pairs) {
      expect(theirs.status, `${what}: ${JSON.stringify(theirs)}`).toBe(404);
      const blank = (a: typeof theirs) => ({ ...a, message: a.message.replace(/"[^"]*"|\b[0-9A-Z]{12,26}\b|secret-env|never-env|main|never/g, '<id>') });
      expect(blank(theirs), what).toEqual(blank(never));
    }
    // shop's key was not touched
    expect((await s.api('GET', `/api/projects/${s.project}/envs/${s.env}/apikeys/${keyId}`)).json.status).toBe('active');
  });
});
