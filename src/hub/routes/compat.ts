import type { FastifyInstance, FastifyRequest } from 'fastify';
import { inviteAcceptCommand } from '../../common/shell-quote.js';
import { compat as api } from '../../protocol/api/compat.js';
import { badField, badRequest, notFound, unavailable } from '../../protocol/errors.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';
import { createKey, listKeys, revokeKey } from '../services/apikeys.js';
import { setConnection, testConnection } from '../services/connections.js';
import { createEnv, listEnvs } from '../services/envs.js';
import type { InviteView } from '../../protocol/api/hub.js';
import { createInvite } from '../services/invites.js';
import { removeOrgMember, removeProjectMember, setOrgRole, setProjectRole } from '../services/members.js';
import { apply, listReleases, promote, rollback } from '../services/releases.js';
import { deliversPlaintext } from './apikeys.js';

/**
 * The upstream Santokit routes (src/protocol/api/compat.ts, docs/compat.md): each maps the upstream
 * request shape onto the service our own route calls and maps the answer back. No logic of its own
 * beyond that: RBAC, validation, limits, audit and the wait for Bridges are the services'.
 */
export default async function compatRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  route(app, api.createEnv, async ({ body }, actor) => {
    const e = await createEnv(ctx, actor, body.project, body.env, { existingOk: true });
    return { ok: true as const, created: e.created };
  });

  route(app, api.setConnection, async ({ body }, actor) => {
    await setConnection(ctx, actor, body.project, body.env, body.name, { engine: body.engine ?? 'postgres', dbUrl: body.db_url });
    return { ok: true as const };
  });
  route(app, api.testConnection, async ({ body }, actor) => {
    await testConnection(ctx, actor, body.project, body.env, body.name);
    return { ok: true as const };
  });

  route(app, api.apply, async ({ body }, actor) => {
    const known = ['project', 'env', 'ref', 'schema', 'permissions', 'storage', 'logics', 'dry_run', 'force', 'adopt'];
    const extra = Object.keys(body).find((k) => !known.includes(k));
    if (extra !== undefined) throw badRequest(`unknown field ${JSON.stringify(extra.slice(0, 40))} (allowed: ${known.join(', ')})`);
    if (body.storage !== undefined && body.storage !== null)
      throw badField('storage', 'storage policies (config/storage.yaml) are not supported by this Hub: send storage: null');
    const logics = body.logics;
    if (logics !== undefined && logics !== null && !(typeof logics === 'object' && !Array.isArray(logics) && Object.keys(logics).length === 0)) {
      throw badField('logics', 'custom logics (logics/*.sql) are not supported by this Hub: send logics: {} (docs/compat.md)');
    }
    const r = await apply(ctx, actor, body.project, body.env, {
      // upstream sends each schema file's text without its name: named by position in errors and plans
      schema: body.schema.map((content, i) => ({ file: `schema/${i + 1}.yaml`, content })),
      permissions: body.permissions ?? null,
      ref: body.ref ?? null,
      ...(body.dry_run !== undefined ? { dryRun: body.dry_run } : {}),
      ...(body.force !== undefined ? { force: body.force } : {}),
      ...(body.adopt !== undefined ? { adopt: body.adopt } : {}),
    });
    return { release_id: r.releaseId, reused: r.reused, dry_run: r.dryRun };
  });

  route(app, api.createKey, async ({ body }, actor, { reply }) => {
    const k = await createKey(ctx, actor, body.project, body.env, { name: body.name, roles: body.roles });
    deliversPlaintext(app, ctx, reply, k.keyId, k.createdAt);
    return { key_id: k.keyId, api_key: k.apiKey };
  });
  route(app, api.listKeys, async ({ query }, actor) => {
    const keys = await listKeys(ctx, actor, query.project, query.env);
    // upstream lists newest first
    return keys.reverse().map((k) => ({ id: k.keyId, name: k.name, revoked: k.status === 'revoked', status: k.status, roles: k.roles }));
  });
  route(app, api.revokeKey, async ({ body }, actor) => {
    const r = await revokeKey(ctx, actor, body.project, body.env, body.key_id, {});
    if ('dryRun' in r) throw new Error('unreachable: not a dry run');
    // a script must not read "ok" while a Bridge may still accept the key: the CLI exits 1 here too
    if (r.ack && r.ack.lagging.length) {
      throw unavailable(
        `API key ${r.keyId} (${r.name}) is revoked, but ${r.ack.lagging.length} of ${r.ack.bridges} Bridge(s) did not confirm in time: ${r.ack.lagging.join(', ')}; ` +
          'they refuse it once they catch up (check their connection to the Hub)',
      );
    }
    return { ok: true as const, key_id: r.keyId, name: r.name, already_revoked: r.alreadyRevoked };
  });

  // what the invitee must do: the invite counts only once accepted with its code (one line, like `stk org invite` prints)
  const invited = (v: InviteView, req: FastifyRequest) => ({
    ok: true as const,
    email: v.email,
    role: v.role,
    invite_code: v.inviteCode,
    expires_at: v.expiresAt,
    accept_command: inviteAcceptCommand(`${req.protocol}://${req.host}`, v.email, v.inviteCode),
  });
  route(app, api.orgInvite, async ({ body }, actor, { req }) => invited(await createInvite(ctx, actor, 'org', null, body), req));
  route(app, api.orgSetRole, async ({ body }, actor) => {
    await setOrgRole(ctx, actor, body.user, body.role);
    return { ok: true as const };
  });
  route(app, api.orgRemove, async ({ body }, actor) => {
    await removeOrgMember(ctx, actor, body.user);
    return { ok: true as const };
  });
  route(app, api.projectInvite, async ({ body }, actor, { req }) =>
    invited(await createInvite(ctx, actor, 'project', body.project, { email: body.email, role: body.role }), req),
  );
  route(app, api.projectSetRole, async ({ body }, actor) => {
    await setProjectRole(ctx, actor, body.project, body.user, body.role);
    return { ok: true as const };
  });
  route(app, api.projectRemove, async ({ body }, actor) => {
    await removeProjectMember(ctx, actor, body.project, body.user);
    return { ok: true as const };
  });

  route(app, api.listReleases, async ({ query }, actor) => {
    const { items } = await listReleases(ctx, actor, query.project, query.limit);
    let current: string | null | undefined;
    if (query.env !== undefined) {
      // releases belong to the project (any may be promoted to any env); the env is checked and marked
      const env = (await listEnvs(ctx, actor, query.project)).find((e) => e.name === query.env);
      if (!env) throw notFound(`env ${JSON.stringify(query.env.slice(0, 80))} not found in project ${query.project}`);
      current = env.currentReleaseId;
    }
    return items.map((r) => ({
      id: r.releaseId,
      ref: r.ref,
      created_at: r.createdAt,
      envs: r.envs,
      ...(current !== undefined ? { current: r.releaseId === current } : {}),
    }));
  });
  route(app, api.promote, async ({ body }, actor) => {
    const r = await promote(ctx, actor, body.project, {
      to: body.to,
      ...(body.from !== undefined ? { from: body.from } : {}),
      ...(body.release_id !== undefined ? { releaseId: body.release_id } : {}),
    });
    return { ok: true as const, release_id: r.releaseId, previous_release_id: r.previousReleaseId, moved: r.moved, bridges: r.ack };
  });
  route(app, api.rollback, async ({ body }, actor) => {
    const r = await rollback(ctx, actor, body.project, body.env, { releaseId: body.to_release_id });
    return { ok: true as const, release_id: r.releaseId, previous_release_id: r.previousReleaseId, moved: r.moved, bridges: r.ack };
  });
}
