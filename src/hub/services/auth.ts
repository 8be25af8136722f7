import { signedIn, type Actor } from './actor.js';
import { ulid } from '../../common/ulid.js';
import { AppError, badRequest, tooManyRequests, unauthorized } from '../../protocol/errors.js';
import type { HubContext } from '../context.js';
import { nowIso } from '../store/store.js';
import { randomToken, sha256Hex } from './crypto.js';
import { audit } from './audit.js';
import { isRefusal } from './login-throttle.js';

export interface Operator {
  id: string;
  email: string;
  sessionId?: string;
}

export const DEFAULT_ORG = 'default';
export const SESSION_TOKEN_PREFIX = 'stks_';
export const EMAIL_RE = /^[^\s@]{1,64}@[^\s@]{1,255}$/;
export const MIN_PASSWORD_LENGTH = 8;

let argon: typeof import('@node-rs/argon2') | undefined;
async function argon2() {
  return (argon ??= await import('@node-rs/argon2'));
}

/** argon2id, OWASP parameters (19 MiB, t=2, p=1). */
export async function hashPassword(password: string): Promise<string> {
  const a = await argon2();
  return a.hash(password, { algorithm: 2 /* Argon2id */, memoryCost: 19456, timeCost: 2, parallelism: 1 });
}

let dummyHash: Promise<string> | undefined;
export async function verifyPassword(hash: string | null, password: string): Promise<boolean> {
  const a = await argon2();
  // unknown email or no password yet: verify against a dummy so timing matches a real miss
  const target = hash ?? (await (dummyHash ??= hashPassword('not-the-password-' + ulid())));
  try {
    const ok = await a.verify(target, password);
    return hash !== null && ok;
  } catch {
    return false;
  }
}

export function validateEmail(email: unknown): string {
  if (typeof email !== 'string' || !EMAIL_RE.test(email.trim())) throw badRequest('email must look like name@example.com');
  return email.trim().toLowerCase();
}

export function validateNewPassword(password: unknown): string {
  if (typeof password !== 'string' || password.length < MIN_PASSWORD_LENGTH || password.length > 1024) {
    throw badRequest(`password must be ${MIN_PASSWORD_LENGTH}-1024 characters`);
  }
  return password;
}

/** What login accepts at most: longer input cannot be an operator's credential (and is not hashed). */
const MAX_LOGIN_EMAIL = 320;
const MAX_LOGIN_PASSWORD = 1024;

/**
 * Email + password → a session. Throttled per client address and per account (services/login-throttle.ts)
 * before the password hash is touched. A failed attempt is audited (bounded: ctx.loginAudit) with the
 * operator's email when the email belongs to one, otherwise only a keyed hash of what was typed (it may
 * be a password pasted into the wrong field).
 */
export async function login(ctx: HubContext, actor: Actor, emailIn: unknown, password: unknown) {
  if (typeof emailIn !== 'string' || typeof password !== 'string' || !emailIn || !password) {
    ctx.stats.logins.malformed++;
    throw badRequest('email and password are required');
  }
  if (emailIn.length > MAX_LOGIN_EMAIL || password.length > MAX_LOGIN_PASSWORD) {
    ctx.stats.logins.malformed++;
    throw badRequest(`email must be at most ${MAX_LOGIN_EMAIL} and password at most ${MAX_LOGIN_PASSWORD} characters`);
  }
  const now = Date.now();
  const email = emailIn.trim().toLowerCase();
  const typedId = ctx.crypto.identifierHash(email);
  const ticket = ctx.loginThrottle.begin(actor.ip ?? '', typedId, now);
  if (isRefusal(ticket)) {
    const whose = ticket.scope === 'address' ? 'from this address' : 'for this account';
    ctx.stats.logins.throttled++;
    throw tooManyRequests(`too many failed logins ${whose}; try again later`, ticket.retryAfterMs / 1000);
  }
  const op = await ctx.db.selectFrom('operators').selectAll().where('email', '=', email).executeTakeFirst();
  const ok = await verifyPassword(op?.status === 'active' ? op.password_hash : null, password);
  if (!op || !ok) {
    ctx.stats.logins.invalid++;
    const budget = ctx.loginAudit.take(Date.now());
    if (budget) {
      await audit(ctx, actor, {
        action: 'operator.login_failed',
        actorType: 'anonymous',
        actorEmail: op ? op.email : null,
        detail: {
          ...(op ? {} : { typedEmailHash: typedId }),
          ...(ticket.locked ? { accountLocked: { strikes: ticket.locked.strikes, seconds: Math.round(ticket.locked.lockMs / 1000) } } : {}),
          ...(budget.suppressed ? { suppressedBefore: budget.suppressed } : {}),
        },
      });
    }
    throw unauthorized('invalid email or password');
  }
  ctx.loginThrottle.succeeded(ticket, Date.now());
  ctx.stats.logins.ok++;
  const token = randomToken(SESSION_TOKEN_PREFIX);
  const expiresAt = new Date(now + ctx.config.sessionTtlSeconds * 1000).toISOString();
  const sessionId = ulid();
  await ctx.db
    .insertInto('sessions')
    .values({ id: sessionId, token_hash: sha256Hex(token), operator_id: op.id, created_at: nowIso(), expires_at: expiresAt, revoked_at: null })
    .execute();
  await audit(ctx, actor, { action: 'operator.login', actor: { id: op.id, email: op.email }, detail: { sessionId } });
  return { token, expiresAt, operator: { id: op.id, email: op.email } };
}

/** Resolves the bearer session token to an operator, or throws 401. */
export async function authenticate(ctx: HubContext, authorization: string | undefined): Promise<Operator> {
  const h = authorization;
  if (typeof h !== 'string' || !h.startsWith('Bearer ')) throw unauthorized('operator login required: run `stk login`');
  const token = h.slice(7).trim();
  if (!token.startsWith(SESSION_TOKEN_PREFIX) || token.length > 200) throw unauthorized('invalid or expired session: run `stk login`');
  const row = await ctx.db
    .selectFrom('sessions')
    .innerJoin('operators', 'operators.id', 'sessions.operator_id')
    .select(['sessions.id as session_id', 'sessions.expires_at', 'sessions.revoked_at', 'operators.id', 'operators.email', 'operators.status'])
    .where('sessions.token_hash', '=', sha256Hex(token))
    .executeTakeFirst();
  if (!row || row.revoked_at || row.expires_at <= nowIso() || row.status !== 'active') {
    throw unauthorized('invalid or expired session: run `stk login`');
  }
  return { id: row.id, email: row.email, sessionId: row.session_id };
}

export async function logout(ctx: HubContext, actor: Actor) {
  const op = signedIn(actor);
  if (op.sessionId) await ctx.db.updateTable('sessions').set({ revoked_at: nowIso() }).where('id', '=', op.sessionId).execute();
  await audit(ctx, actor, { action: 'operator.logout', detail: { sessionId: op.sessionId } });
}

export async function ensureDefaultOrg(ctx: HubContext): Promise<string> {
  const org = await ctx.db.selectFrom('orgs').select('id').where('name', '=', DEFAULT_ORG).executeTakeFirst();
  if (org) return org.id;
  const id = ulid();
  try {
    await ctx.db.insertInto('orgs').values({ id, name: DEFAULT_ORG, created_at: nowIso() }).execute();
    return id;
  } catch (e) {
    if (!isUniqueViolation(e)) throw e;
    // another Hub created it at the same moment
    const again = await ctx.db.selectFrom('orgs').select('id').where('name', '=', DEFAULT_ORG).executeTakeFirstOrThrow();
    return again.id;
  }
}

/** Creates an active operator who owns the default org. Used by bootstrap and `stk hub create-owner`. */
export async function createOwner(ctx: HubContext, emailIn: string, password: string): Promise<Operator> {
  const email = validateEmail(emailIn);
  validateNewPassword(password);
  const orgId = await ensureDefaultOrg(ctx);
  const existing = await ctx.db.selectFrom('operators').select('id').where('email', '=', email).executeTakeFirst();
  if (existing) throw new AppError('CONFLICT', `operator ${email} already exists`);
  const id = ulid();
  const hash = await hashPassword(password);
  try {
    await ctx.db.transaction().execute(async (trx) => {
      await trx.insertInto('operators').values({ id, email, password_hash: hash, status: 'active', created_at: nowIso() }).execute();
      await trx.insertInto('org_memberships').values({ org_id: orgId, operator_id: id, role: 'owner', status: 'active', created_at: nowIso() }).execute();
    });
  } catch (e) {
    if (isUniqueViolation(e)) throw new AppError('CONFLICT', `operator ${email} already exists`);
    throw e;
  }
  await audit(ctx, null, { action: 'operator.create_owner', actorType: 'system', detail: { operatorId: id, email } });
  return { id, email };
}

/** First start with an empty store: create the owner from STK_OWNER_EMAIL/STK_OWNER_PASSWORD, or say how. */
export async function bootstrapOwner(ctx: HubContext): Promise<void> {
  await ensureDefaultOrg(ctx);
  const any = await ctx.db.selectFrom('operators').select('id').limit(1).executeTakeFirst();
  const { ownerEmail, ownerPassword } = ctx.config;
  if (any) {
    if (ownerEmail && !ctx.config.dev) {
      const known = await ctx.db.selectFrom('operators').select('id').where('email', '=', ownerEmail.trim().toLowerCase()).executeTakeFirst();
      if (!known)
        ctx.log.warn(
          'STK_OWNER_EMAIL is ignored: this store already has operators (it only creates the first owner of an empty store); invite more with `stk org invite`',
        );
    }
    return;
  }
  if (ownerEmail && ownerPassword) {
    try {
      await createOwner(ctx, ownerEmail, ownerPassword);
      ctx.log.info({ email: ownerEmail }, 'created the first owner from STK_OWNER_EMAIL');
    } catch (e) {
      if (!(e instanceof AppError && e.code === 'CONFLICT')) throw e; // another Hub won the race
    }
    return;
  }
  ctx.log.warn(
    'no operator exists yet: set STK_OWNER_EMAIL and STK_OWNER_PASSWORD, or run `stk hub create-owner --email <email> --password-stdin` against this store',
  );
}

/** True for a unique-constraint violation on SQLite or PostgreSQL. */
export function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  return (
    err?.code === '23505' ||
    err?.code === 'SQLITE_CONSTRAINT_UNIQUE' ||
    err?.code === 'SQLITE_CONSTRAINT_PRIMARYKEY' ||
    /UNIQUE constraint failed/.test(err?.message ?? '')
  );
}
