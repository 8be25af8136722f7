/**
 * Services take one Actor and check roles themselves: with the route's auth hook they reuse the roles
 * the hook read for the request (the store is asked once per request, not once by the hook and again
 * by the service); called without the hook — by a test, another service, a CLI command — they read
 * the store and refuse exactly as before. A role read for one project is never taken for another.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AliasNode, SelectQueryNode, TableNode, type KyselyPlugin, type OperationNode } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import type { HubContext } from '../../src/hub/context.js';
import type { Actor } from '../../src/hub/services/actor.js';
import { createOwner, type Operator } from '../../src/hub/services/auth.js';
import { createEnv, listEnvs } from '../../src/hub/services/envs.js';
import { acceptInvite, createInvite } from '../../src/hub/services/invites.js';
import { createProject } from '../../src/hub/services/projects.js';
import { rememberSecret } from '../helpers/secrets.js';

const PW: string = rememberSecret('password', 'authz-password-1');
type App = Awaited<ReturnType<typeof buildHub>>['app'];

/** The tables each SELECT reads (FROM and JOINs), in order. */
function selectTables(node: OperationNode, out: string[][]): void {
  if (!SelectQueryNode.is(node)) return;
  const name = (n: OperationNode): string => (TableNode.is(n) ? n.table.identifier.name : AliasNode.is(n) ? name(n.node) : '?');
  out.push([...(node.from?.froms ?? []).map(name), ...(node.joins ?? []).map((j) => name(j.table))]);
}

describe('services: one Actor, roles read once', () => {
  let dir: string;
  let app: App;
  let ctx: HubContext;
  let owner: Operator;
  let viewer: Operator;
  const actorOf = (operator: Operator | null): Actor => ({ operator, requestId: null, ip: null });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'stk-authz-'));
    ({ app, ctx } = await buildHub(
      loadHubConfig({ STK_SECRET_KEY: 'b'.repeat(64), STK_SERVICE_TOKEN: 'authz-token-xxxxxxxx', STK_HUB_DB_URL: `sqlite://${join(dir, 'hub.db')}` }),
      { logger: false },
    ));
    await app.ready();
    // no HTTP: the services are called as `stk hub create-owner` or a test would call them
    owner = await createOwner(ctx, 'authz-owner@example.com', PW);
    await createProject(ctx, actorOf(owner), 'shop');
    await createProject(ctx, actorOf(owner), 'blog');
    await createEnv(ctx, actorOf(owner), 'shop', 'dev');
    const inv = await createInvite(ctx, actorOf(owner), 'project', 'shop', { email: 'authz-viewer@example.com', role: 'viewer' });
    await acceptInvite(ctx, actorOf(null), { email: inv.email, code: rememberSecret('invite-code', inv.inviteCode), password: PW });
    const row = await ctx.db.selectFrom('operators').select(['id', 'email']).where('email', '=', inv.email).executeTakeFirstOrThrow();
    viewer = { id: row.id, email: row.email };
  }, 60_000);
  afterAll(async () => {
    await app?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('without the auth hook a service reads the roles and refuses what they do not allow', async () => {
    await expect(createEnv(ctx, actorOf(viewer), 'shop', 'staging')).rejects.toMatchObject({
      code: 'FORBIDDEN',
      message: 'you need project:admin on shop (you have project:viewer)',
    });
    await expect(createEnv(ctx, actorOf(viewer), 'blog', 'staging')).rejects.toMatchObject({ code: 'FORBIDDEN', message: 'you need project:admin on blog' });
    await expect(createProject(ctx, actorOf(viewer), 'viewers-own')).rejects.toMatchObject({
      code: 'FORBIDDEN',
      message: 'you need org:admin (you have org:member)',
    });
    // no operator at all: refused, never run as nobody
    await expect(listEnvs(ctx, actorOf(null), 'shop')).rejects.toMatchObject({ code: 'INTERNAL_ERROR' });
    expect((await listEnvs(ctx, actorOf(viewer), 'shop')).map((e) => e.name)).toEqual(['dev']);
    expect(await ctx.db.selectFrom('envs').select('name').where('name', '=', 'staging').execute()).toEqual([]);
  });

  it('a role read for one project is not taken for another, and is not more than it was', async () => {
    const a = actorOf(viewer);
    await listEnvs(ctx, a, 'shop'); // the actor now holds viewer on shop
    expect(a.roles?.project).toMatchObject({ project: { name: 'shop' }, role: 'viewer' });
    // no role on blog: refused exactly as for a name nobody created
    await expect(listEnvs(ctx, a, 'blog')).rejects.toMatchObject({ code: 'FORBIDDEN', message: 'you need project:viewer on blog' });
    await expect(createEnv(ctx, a, 'shop', 'staging')).rejects.toMatchObject({ code: 'FORBIDDEN' });
    await expect(listEnvs(ctx, a, 'nosuch')).rejects.toMatchObject({ code: 'FORBIDDEN', message: 'you need project:viewer on nosuch' });
  });

  it('over HTTP the service reuses what the auth hook read: the project and each membership are read once', async () => {
    const login = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: owner.email, password: PW } });
    expect(login.statusCode, login.body).toBe(200);
    const token = (login.json() as { token: string }).token;
    const selects: string[][] = [];
    const counter: KyselyPlugin = {
      transformQuery: (args) => (selectTables(args.node, selects), args.node),
      transformResult: async (args) => args.result,
    };
    const db = ctx.db;
    ctx.db = db.withPlugin(counter);
    try {
      // the owner has no explicit role on shop: the hook reads project, explicit membership and org role
      const r = await app.inject({ method: 'GET', url: '/api/projects/shop/envs', headers: { authorization: `Bearer ${token}` } });
      expect(r.statusCode, r.body).toBe(200);
      expect((r.json() as { items: Array<{ name: string }> }).items.map((e) => e.name)).toEqual(['dev']);
    } finally {
      ctx.db = db;
    }
    const reading = (table: string) => selects.filter((t) => t[0] === table).length;
    expect(reading('projects'), JSON.stringify(selects)).toBe(1);
    // the explicit membership is read with the project, in the same query
    expect(
      selects.filter((t) => t.includes('project_memberships')),
      JSON.stringify(selects),
    ).toEqual([['projects', 'orgs', 'project_memberships']]);
    expect(reading('orgs'), JSON.stringify(selects)).toBe(1);
    expect(reading('envs'), JSON.stringify(selects)).toBe(1);
  });

  it('a project the operator has no role on and one that does not exist: the same answer, after the same reads', async () => {
    const db = ctx.db;
    const attempt = async (project: string) => {
      const selects: string[][] = [];
      ctx.db = db.withPlugin({ transformQuery: (args) => (selectTables(args.node, selects), args.node), transformResult: async (args) => args.result });
      try {
        const e = await listEnvs(ctx, actorOf(viewer), project).then(
          () => null,
          (err: { code: string; message: string }) => ({ code: err.code, message: err.message.replace(project, '<name>') }),
        );
        return { e, selects: selects.map((t) => t.join('+')).sort() };
      } finally {
        ctx.db = db;
      }
    };
    const unseen = await attempt('blog'); // exists; the viewer of shop has no role on it
    const unknown = await attempt('nosuch');
    expect(unseen.e).toEqual({ code: 'FORBIDDEN', message: 'you need project:viewer on <name>' });
    expect(unseen).toEqual(unknown);
  });
});
