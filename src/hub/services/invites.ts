import { signedIn, type Actor } from './actor.js';
import type { Kysely } from 'kysely';
import { ulid } from '../../common/ulid.js';
import { badRequest, conflict, forbidden, unauthorized } from '../../protocol/errors.js';
import { ORG_ROLE_RANK, type OrgRole, type ProjectRole } from '../../protocol/names.js';
import type { HubContext } from '../context.js';
import type { HubDatabase } from '../store/schema.js';
import { nowIso } from '../store/store.js';
import { hashPassword, isUniqueViolation, validateEmail, validateNewPassword, verifyPassword } from './auth.js';
import { audit } from './audit.js';
import { randomToken, sha256Hex } from './crypto.js';
import { isPostgres } from './events.js';
import { checkRole, openInvites, requireMayManage, requireProjectMemberAdmin, senderCanGrant, targetAuthority, type Scope } from './members.js';
import type { AcceptedInvite, InviteView } from '../../protocol/api/hub.js';
import { activeProjectRole, orgAuthority, requireOrgRole, type ProjectRef } from './rbac.js';

export const INVITE_CODE_PREFIX = 'stki_';
/** 24 random bytes: 192 bits. */
export const INVITE_CODE_BYTES = 24;
export const INVITE_TTL_MS = 7 * 86400_000;
/** SPEC limits.md: operators per org (memberships of any status). */
export const MAX_OPERATORS_PER_ORG = 500;

const INVALID_INVITE = 'invalid or expired invite code for this email';

/**
 * Operators the org holds or is about to hold (SPEC limits.md): active members plus people with an
 * open invite who are not members yet.
 */
async function countOrgOperators(db: Kysely<HubDatabase>, orgId: string, now: string): Promise<number> {
  const { n } = await db
    .selectFrom('org_memberships')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('org_id', '=', orgId)
    .executeTakeFirstOrThrow();
  const { p } = await db
    .selectFrom('invites')
    .select((eb) => eb.fn.count<number>('invites.email').distinct().as('p'))
    .where('invites.org_id', '=', orgId)
    .where('invites.accepted_at', 'is', null)
    .where('invites.expires_at', '>', now)
    .where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom('org_memberships')
            .innerJoin('operators', 'operators.id', 'org_memberships.operator_id')
            .select('org_memberships.operator_id')
            .whereRef('org_memberships.org_id', '=', 'invites.org_id')
            .whereRef('operators.email', '=', 'invites.email'),
        ),
      ),
    )
    .executeTakeFirstOrThrow();
  return Number(n) + Number(p);
}

/** On PostgreSQL, locks the operator row until the transaction ends (SQLite transactions are serial already). */
async function lockOperator(db: Kysely<HubDatabase>, email: string) {
  const q = db.selectFrom('operators').select(['id', 'status']).where('email', '=', email);
  return (isPostgres(db) ? q.forUpdate() : q).executeTakeFirst();
}

/**
 * Invites an email to the org or to one project. The invite itself is the pending state: no membership
 * exists until it is accepted, and accepting grants exactly what it names. A new email gets a pending
 * operator (an identity without a password). Nobody invites above their own authority (org admins
 * invite members and admins, owners also owners; project invites need project:admin and cannot
 * target an org member ranked at or above the inviter). Inviting again for the same scope replaces
 * your own earlier open invite; someone else's is never touched: while it is open (for a pending
 * operator: any open invite from someone else, since the first acceptance sets the password) the
 * new invite is refused with 409.
 */
export async function createInvite(
  ctx: HubContext,
  actor: Actor,
  scope: Scope,
  projectName: string | null,
  body: { email?: unknown; role?: unknown },
): Promise<InviteView> {
  const op = signedIn(actor);
  let orgId: string;
  let project: ProjectRef | null = null;
  let authority: number;
  if (scope === 'org') {
    const me = await requireOrgRole(ctx, actor, 'admin');
    orgId = me.orgId;
    authority = orgAuthority(me.role);
    const role = checkRole('org', body.role) as OrgRole;
    if (ORG_ROLE_RANK[role] > ORG_ROLE_RANK[me.role]) throw forbidden(`you need org:${role} to invite an ${role}`);
  } else {
    ({ project, authority } = await requireProjectMemberAdmin(ctx, actor, projectName as string));
    orgId = project.orgId;
    checkRole('project', body.role);
  }
  const role = body.role as string;
  const email = validateEmail(body.email);
  const code = randomToken(INVITE_CODE_PREFIX, INVITE_CODE_BYTES);
  const now = nowIso();
  const expiresAt = new Date(Date.now() + INVITE_TTL_MS).toISOString();
  const inviteId = ulid();
  const where = project ? `project ${project.name}` : 'the org';

  await ctx.db
    .transaction()
    .execute(async (trx) => {
      // expired invites are dead: drop them so the table stays bounded
      await trx.deleteFrom('invites').where('org_id', '=', orgId).where('accepted_at', 'is', null).where('expires_at', '<=', now).execute();
      let target = await lockOperator(trx, email);
      if (target?.status === 'disabled') throw conflict(`operator ${email} is disabled`);
      let counted = false;
      if (target) {
        const t = await targetAuthority(trx, orgId, target.id);
        counted = t.role !== null;
        if (scope === 'org' && t.role) throw conflict(`${email} is already an org ${t.role}: use stk org members set-role`);
        if (project) {
          const pm = await activeProjectRole(trx, project.id, target.id);
          if (pm) throw conflict(`${email} already has project:${pm} on ${project.name}: use stk project members set-role`);
          requireMayManage(authority, t, `invite ${email} to project ${project.name}`);
        }
        const open = await openInvites(trx, orgId, email, now).select(['created_by', 'scope', 'project_id', 'expires_at']).execute();
        counted ||= open.length > 0;
        const others = open.filter(
          (i) => i.created_by !== op.id && (target!.status === 'pending' || (i.scope === scope && i.project_id === (project?.id ?? null))),
        );
        if (others.length) {
          const until = others
            .map((i) => i.expires_at)
            .sort()[0]!
            .slice(0, 10);
          throw conflict(
            `${email} already has an open invite${target.status === 'pending' ? '' : ` to ${where}`} from another operator (until ${until}): ` +
              'it has to be accepted, expire or be withdrawn (stk org/project members remove) before you invite them',
          );
        }
      }
      if (!counted && (await countOrgOperators(trx, orgId, now)) >= MAX_OPERATORS_PER_ORG) {
        throw conflict(`operator limit reached: an org holds at most ${MAX_OPERATORS_PER_ORG} operators`);
      }
      if (!target) {
        target = { id: ulid(), status: 'pending' };
        await trx.insertInto('operators').values({ id: target.id, email, password_hash: null, status: 'pending', created_at: now }).execute();
      }
      // your own earlier open invite for the same scope is replaced
      let mine = trx
        .deleteFrom('invites')
        .where('org_id', '=', orgId)
        .where('email', '=', email)
        .where('scope', '=', scope)
        .where('accepted_at', 'is', null)
        .where('created_by', '=', op.id);
      mine = project ? mine.where('project_id', '=', project.id) : mine.where('project_id', 'is', null);
      await mine.execute();
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
      await audit(ctx, actor, { action: 'rbac.invite', project: project?.name ?? null, detail: { scope, email, role, inviteId, operatorId: target.id } }, trx);
    })
    .catch((e: unknown) => {
      // two invites for a new email at once: the operator row exists now, the other one won
      if (isUniqueViolation(e)) throw conflict(`${email} was invited concurrently by someone else: try again`);
      throw e;
    });
  return { email, role, inviteCode: code, expiresAt };
}

/**
 * Accepts an invite (no session needed): a new operator sets their password, an existing one proves
 * it. Grants exactly what the invite names and nothing else: an org invite the org role (never
 * lowering a higher one), a project invite that project role plus org `member` when not a member
 * yet. Other open invites for the same email stay as they are. The invite is void when its sender
 * can no longer grant it (removed, demoted, disabled).
 */
export async function acceptInvite(ctx: HubContext, actor: Actor, body: { email?: unknown; code?: unknown; password?: unknown }): Promise<AcceptedInvite> {
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
    await lockOperator(trx, email);
    const spent = await trx
      .updateTable('invites')
      .set({ accepted_at: nowIso() })
      .where('id', '=', invite.id)
      .where('accepted_at', 'is', null)
      .executeTakeFirst();
    if (Number(spent.numUpdatedRows ?? 0) !== 1) throw badRequest(INVALID_INVITE);

    // the sender must still be able to grant this, now (demotions and removals withdraw such invites; this is the last guard)
    const { ok, project } = await senderCanGrant(trx, invite);
    if (!ok) throw forbidden(`this invite is void: the operator who sent it can no longer grant ${invite.scope}:${invite.role}`);

    if (newHash !== null) {
      const activated = await trx
        .updateTable('operators')
        .set({ password_hash: newHash, status: 'active' })
        .where('id', '=', target.id)
        .where('status', '=', 'pending')
        .executeTakeFirst();
      // another invite for this email was accepted at the same moment and set the password
      if (Number(activated.numUpdatedRows ?? 0) !== 1) throw conflict(`${email} was activated concurrently: accept again with that password`);
    }
    const at = nowIso();
    const orgM = await trx
      .selectFrom('org_memberships')
      .select(['role', 'status'])
      .where('org_id', '=', invite.org_id)
      .where('operator_id', '=', target.id)
      .executeTakeFirst();
    const orgGrant: OrgRole = invite.scope === 'org' ? (invite.role as OrgRole) : 'member';
    if (!orgM) {
      await trx
        .insertInto('org_memberships')
        .values({ org_id: invite.org_id, operator_id: target.id, role: orgGrant, status: 'active', created_at: at })
        .execute();
    } else if (orgM.status !== 'active' || ORG_ROLE_RANK[orgGrant] > ORG_ROLE_RANK[orgM.role as OrgRole]) {
      // (a membership is never lowered by accepting an invite)
      const role = orgM.status === 'active' && ORG_ROLE_RANK[orgM.role as OrgRole] > ORG_ROLE_RANK[orgGrant] ? (orgM.role as OrgRole) : orgGrant;
      await trx
        .updateTable('org_memberships')
        .set({ role, status: 'active' })
        .where('org_id', '=', invite.org_id)
        .where('operator_id', '=', target.id)
        .execute();
    }
    if (project) {
      const pm = await trx
        .selectFrom('project_memberships')
        .select('role')
        .where('project_id', '=', project.id)
        .where('operator_id', '=', target.id)
        .executeTakeFirst();
      if (pm)
        await trx
          .updateTable('project_memberships')
          .set({ role: invite.role as ProjectRole, status: 'active' })
          .where('project_id', '=', project.id)
          .where('operator_id', '=', target.id)
          .execute();
      else
        await trx
          .insertInto('project_memberships')
          .values({ project_id: project.id, operator_id: target.id, role: invite.role as ProjectRole, status: 'active', created_at: at })
          .execute();
    }
    await audit(
      ctx,
      actor,
      {
        action: 'rbac.accept',
        project: project?.name ?? null,
        actor: { id: target.id, email },
        detail: { scope: invite.scope, inviteId: invite.id, role: invite.role, invitedBy: invite.created_by },
      },
      trx,
    );
  });
  return { email };
}
