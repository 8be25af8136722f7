import type { FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import { ulid } from 'ulid';
import { badRequest, conflict, forbidden, unauthorized } from '../../protocol/errors.js';
import type { OrgRole, ProjectRole } from '../../protocol/names.js';
import type { HubContext } from '../context.js';
import type { HubDatabase } from '../store/schema.js';
import { nowIso } from '../store/store.js';
import { hashPassword, validateEmail, validateNewPassword, verifyPassword, type Operator } from './auth.js';
import { audit } from './audit.js';
import { randomToken, sha256Hex } from './crypto.js';
import { checkRole, requireProjectMemberAdmin, type Scope } from './members.js';
import { requireOrgRole, type ProjectRef } from './rbac.js';

export const INVITE_CODE_PREFIX = 'stki_';
/** 24 random bytes: 192 bits. */
export const INVITE_CODE_BYTES = 24;
export const INVITE_TTL_MS = 7 * 86400_000;
/** SPEC limits.md: operators per org (memberships of any status). */
export const MAX_OPERATORS_PER_ORG = 500;

export interface InviteView {
  email: string;
  role: string;
  /** shown once; only its hash is stored */
  inviteCode: string;
  expiresAt: string;
}

const INVALID_INVITE = 'invalid or expired invite code for this email';

async function countOrgMembers(db: Kysely<HubDatabase>, orgId: string): Promise<number> {
  const { n } = await db.selectFrom('org_memberships').select((eb) => eb.fn.countAll<number>().as('n')).where('org_id', '=', orgId).executeTakeFirstOrThrow();
  return Number(n);
}

/**
 * Invites an email to the org or to one project: creates a pending operator when the email is new,
 * a pending membership (plus a pending org `member` membership for a project invite when needed) and
 * a one-time code. Inviting again replaces the earlier open invite for the same scope.
 */
export async function createInvite(
  ctx: HubContext,
  req: FastifyRequest | null,
  op: Operator,
  scope: Scope,
  projectName: string | null,
  body: { email?: unknown; role?: unknown },
): Promise<InviteView> {
  let orgId: string;
  let project: ProjectRef | null = null;
  if (scope === 'org') {
    const me = await requireOrgRole(ctx, op, 'admin');
    orgId = me.orgId;
    const role = checkRole('org', body.role);
    if (role === 'owner' && me.role !== 'owner') throw forbidden('you need org:owner to invite an owner');
  } else {
    project = await requireProjectMemberAdmin(ctx, op, projectName as string);
    orgId = project.orgId;
    checkRole('project', body.role);
  }
  const role = body.role as string;
  const email = validateEmail(body.email);
  const code = randomToken(INVITE_CODE_PREFIX, INVITE_CODE_BYTES);
  const now = nowIso();
  const expiresAt = new Date(Date.now() + INVITE_TTL_MS).toISOString();
  const inviteId = ulid();

  await ctx.db.transaction().execute(async (trx) => {
    let target = await trx.selectFrom('operators').select(['id', 'status']).where('email', '=', email).executeTakeFirst();
    if (target?.status === 'disabled') throw conflict(`operator ${email} is disabled`);
    const orgM = target
      ? await trx.selectFrom('org_memberships').select(['role', 'status']).where('org_id', '=', orgId).where('operator_id', '=', target.id).executeTakeFirst()
      : undefined;
    if (!orgM && (await countOrgMembers(trx, orgId)) >= MAX_OPERATORS_PER_ORG) {
      throw conflict(`operator limit reached: an org holds at most ${MAX_OPERATORS_PER_ORG} operators`);
    }
    if (!target) {
      target = { id: ulid(), status: 'pending' };
      await trx.insertInto('operators').values({ id: target.id, email, password_hash: null, status: 'pending', created_at: now }).execute();
    }
    const opId = target.id;

    if (scope === 'org') {
      if (orgM?.status === 'active') throw conflict(`${email} is already an org ${orgM.role}: use stk org members set-role`);
      if (orgM) await trx.updateTable('org_memberships').set({ role: role as OrgRole }).where('org_id', '=', orgId).where('operator_id', '=', opId).execute();
      else await trx.insertInto('org_memberships').values({ org_id: orgId, operator_id: opId, role: role as OrgRole, status: 'pending', created_at: now }).execute();
    } else {
      const p = project!;
      const pm = await trx.selectFrom('project_memberships').select(['role', 'status']).where('project_id', '=', p.id).where('operator_id', '=', opId).executeTakeFirst();
      if (pm?.status === 'active') throw conflict(`${email} already has project:${pm.role} on ${p.name}: use stk project members set-role`);
      if (pm) await trx.updateTable('project_memberships').set({ role: role as ProjectRole }).where('project_id', '=', p.id).where('operator_id', '=', opId).execute();
      else await trx.insertInto('project_memberships').values({ project_id: p.id, operator_id: opId, role: role as ProjectRole, status: 'pending', created_at: now }).execute();
      if (!orgM) await trx.insertInto('org_memberships').values({ org_id: orgId, operator_id: opId, role: 'member', status: 'pending', created_at: now }).execute();
    }

    // an invite again for the same scope replaces the previous open one
    let old = trx.deleteFrom('invites').where('org_id', '=', orgId).where('email', '=', email).where('scope', '=', scope).where('accepted_at', 'is', null);
    old = project ? old.where('project_id', '=', project.id) : old.where('project_id', 'is', null);
    await old.execute();
    await trx
      .insertInto('invites')
      .values({
        id: inviteId,
        code_hash: sha256Hex(code),
        email,
        scope,
        org_id: orgId,
        project_id: project?.id ?? null,
        role,
        created_by: op.id,
        created_at: now,
        expires_at: expiresAt,
        accepted_at: null,
      })
      .execute();
    await audit(ctx, req, { action: 'rbac.invite', project: project?.name ?? null, actor: op, detail: { scope, email, role, inviteId, operatorId: opId } }, trx);
  });
  return { email, role, inviteCode: code, expiresAt };
}

/**
 * Accepts an invite (no session needed): a new operator sets their password, an existing one proves
 * it. The invite's memberships become active and the code is spent.
 */
export async function acceptInvite(ctx: HubContext, req: FastifyRequest | null, body: { email?: unknown; code?: unknown; password?: unknown }): Promise<{ email: string }> {
  const email = validateEmail(body.email);
  const code = body.code;
  if (typeof code !== 'string' || !code.startsWith(INVITE_CODE_PREFIX) || code.length > 200) throw badRequest(INVALID_INVITE);
  if (typeof body.password !== 'string' || body.password.length === 0) throw badRequest('password is required');
  const password = body.password;

  const now = nowIso();
  const invite = await ctx.db.selectFrom('invites').selectAll().where('code_hash', '=', sha256Hex(code)).executeTakeFirst();
  if (!invite || invite.email !== email || invite.accepted_at !== null || invite.expires_at <= now) throw badRequest(INVALID_INVITE);
  const target = await ctx.db.selectFrom('operators').selectAll().where('email', '=', email).executeTakeFirst();
  if (!target) throw badRequest(INVALID_INVITE);
  if (target.status === 'disabled') throw forbidden(`operator ${email} is disabled`);

  let newHash: string | null = null;
  if (target.status === 'pending') {
    newHash = await hashPassword(validateNewPassword(password));
  } else if (!(await verifyPassword(target.password_hash, password))) {
    // an existing operator accepts with their current password
    throw unauthorized('invalid email or password');
  }

  await ctx.db.transaction().execute(async (trx) => {
    const spent = await trx.updateTable('invites').set({ accepted_at: nowIso() }).where('id', '=', invite.id).where('accepted_at', 'is', null).executeTakeFirst();
    if (Number(spent.numUpdatedRows ?? 0) !== 1) throw badRequest(INVALID_INVITE);
    if (newHash !== null) {
      await trx.updateTable('operators').set({ password_hash: newHash, status: 'active' }).where('id', '=', target.id).where('status', '=', 'pending').execute();
    }
    const orgUpd = await trx
      .updateTable('org_memberships')
      .set({ status: 'active' })
      .where('org_id', '=', invite.org_id)
      .where('operator_id', '=', target.id)
      .executeTakeFirst();
    let ok = Number(orgUpd.numUpdatedRows ?? 0) === 1;
    let projectName: string | null = null;
    if (invite.scope === 'project' && invite.project_id) {
      const pUpd = await trx
        .updateTable('project_memberships')
        .set({ status: 'active' })
        .where('project_id', '=', invite.project_id)
        .where('operator_id', '=', target.id)
        .executeTakeFirst();
      ok = ok && Number(pUpd.numUpdatedRows ?? 0) === 1;
      projectName = (await trx.selectFrom('projects').select('name').where('id', '=', invite.project_id).executeTakeFirst())?.name ?? null;
    }
    // the membership was withdrawn after the invite was sent
    if (!ok) throw badRequest(INVALID_INVITE);
    await audit(ctx, req, {
      action: 'rbac.accept',
      project: projectName,
      actor: { id: target.id, email },
      detail: { scope: invite.scope, inviteId: invite.id, role: invite.role },
    }, trx);
  });
  return { email };
}
