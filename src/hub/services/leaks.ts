import { timingSafeEqual } from 'node:crypto';
import type { Kysely } from 'kysely';
import { badRequest, conflict, notFound, tooManyRequests, unauthorized } from '../../protocol/errors.js';
import { nameError } from '../../protocol/names.js';
import { cleanText } from '../../protocol/text.js';
import { API_KEY_SCAN_RE, hashSecret, parseKey } from '../../protocol/key-format.js';
import {
  DEFAULT_LEAK_POLICY,
  type CreatedLeakToken,
  type KeyLookupItem,
  type LeakPolicy,
  type LeakPolicyView,
  type LeakReportBody,
  type LeakTokenView,
} from '../../protocol/api/leaks.js';
import { ulid } from '../../common/ulid.js';
import type { HubContext } from '../context.js';
import type { ApiKeysTable, HubDatabase } from '../store/schema.js';
import { nowIso } from '../store/store.js';
import { signedIn, type Actor } from './actor.js';
import { keyStatus, revokeFoundKey, suspendKeyById } from './apikeys.js';
import { audit } from './audit.js';
import { isUniqueViolation } from './auth.js';
import { randomToken, sha256Hex } from './crypto.js';
import { orgRole, requireOrgRole, requireProjectRole } from './rbac.js';

/** Leak-report tokens: `stkl_` + 256 random bits (base64url); only their SHA-256 is stored, like sessions. */
export const LEAK_TOKEN_PREFIX = 'stkl_';
/** Reported keys waiting to be checked on this Hub; a report that would go beyond gets 429. */
export const MAX_PENDING_REPORTS = 10_000;
/**
 * One token's share (per Hub): at most this many of its keys wait to be checked, and it may report at
 * most this many keys a minute (a bucket of that size refilled continuously). Beyond either, that
 * token's reports get 429 with Retry-After while other tokens' still go through: a leaked or runaway
 * scanner token cannot fill the queue every project's reports share.
 */
export const MAX_PENDING_PER_TOKEN = 1_000;
export const REPORTED_KEYS_PER_TOKEN_PER_MIN = 1_000;
/** Retry-After of a refusal for a full queue or share: about the time a full share takes to be checked. */
const QUEUE_FULL_RETRY_S = 10;

/** Migration 0010_leaks; typed here so the shared schema file stays untouched. */
export type LeakTokensTable = {
  id: string;
  org_id: string;
  name: string;
  token_hash: string;
  created_by: string | null;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
};
export type LeakPoliciesTable = { project_id: string; policy: LeakPolicy; updated_by: string | null; updated_at: string };
export type LeakReportsTable = {
  key_id: string;
  /** the stored hash the reported secret matched (api_keys.secret_hash or prev_secret_hash): never the secret */
  secret_hash: string;
  project_id: string;
  /** what the first report did: notify, suspend, revoke, or none (the key was already revoked or expired) */
  action: string;
  source: string | null;
  url: string | null;
  token_id: string | null;
  reports: number;
  first_reported_at: string;
  last_reported_at: string;
};
export type LeakTables = { leak_tokens: LeakTokensTable; leak_policies: LeakPoliciesTable; leak_reports: LeakReportsTable };
const leakDb = (db: Kysely<HubDatabase>) => db.withTables<LeakTables>();

/** Who sent a leak report: the token the route-auth hook accepted. */
export interface LeakReporter {
  tokenId: string;
  tokenName: string;
  orgId: string;
}

// ---------------------------------------------------------------- tokens

function tokenView(r: LeakTokensTable): LeakTokenView {
  return {
    id: r.id,
    name: r.name,
    status: r.revoked_at ? 'revoked' : 'active',
    createdAt: r.created_at,
    createdBy: r.created_by,
    lastUsedAt: r.last_used_at,
    revokedAt: r.revoked_at,
  };
}

export async function createLeakToken(ctx: HubContext, actor: Actor, body: { name?: unknown }): Promise<CreatedLeakToken> {
  const { orgId } = await requireOrgRole(ctx, actor, 'admin');
  const err = nameError('leak-report token', body.name);
  if (err) throw badRequest(err);
  const name = body.name as string;
  const token = randomToken(LEAK_TOKEN_PREFIX);
  const row: LeakTokensTable = {
    id: ulid(),
    org_id: orgId,
    name,
    token_hash: sha256Hex(token),
    created_by: signedIn(actor).email,
    created_at: nowIso(),
    last_used_at: null,
    revoked_at: null,
  };
  try {
    await ctx.db.transaction().execute(async (trx) => {
      await leakDb(trx).insertInto('leak_tokens').values(row).execute();
      await audit(ctx, actor, { action: 'leaks.token.create', detail: { tokenId: row.id, name } }, trx);
    });
  } catch (e) {
    if (isUniqueViolation(e)) throw conflict(`a leak-report token named ${name} already exists (names stay reserved after revoke)`);
    throw e;
  }
  return { ...tokenView(row), token };
}

export async function listLeakTokens(ctx: HubContext, actor: Actor): Promise<LeakTokenView[]> {
  const { orgId } = await requireOrgRole(ctx, actor, 'admin');
  const rows = await leakDb(ctx.db).selectFrom('leak_tokens').selectAll().where('org_id', '=', orgId).orderBy('created_at').orderBy('id').execute();
  return rows.map(tokenView);
}

export async function revokeLeakToken(ctx: HubContext, actor: Actor, idOrName: string): Promise<LeakTokenView & { alreadyRevoked: boolean }> {
  const { orgId } = await requireOrgRole(ctx, actor, 'admin');
  const db = leakDb(ctx.db);
  const find = () =>
    db
      .selectFrom('leak_tokens')
      .selectAll()
      .where('org_id', '=', orgId)
      .where((eb) => eb.or([eb('id', '=', idOrName), eb('name', '=', idOrName)]))
      .executeTakeFirst();
  const row = await find();
  if (!row) throw notFound(`leak-report token ${JSON.stringify(idOrName.slice(0, 64))} not found`);
  if (row.revoked_at) return { ...tokenView(row), alreadyRevoked: true };
  const now = nowIso();
  const changed = await ctx.db.transaction().execute(async (trx) => {
    const r = await leakDb(trx).updateTable('leak_tokens').set({ revoked_at: now }).where('id', '=', row.id).where('revoked_at', 'is', null).executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) return false;
    await audit(ctx, actor, { action: 'leaks.token.revoke', detail: { tokenId: row.id, name: row.name } }, trx);
    return true;
  });
  return { ...tokenView((await find()) ?? row), alreadyRevoked: !changed };
}

/** The `leakToken` route auth: a live leak-report token as `Authorization: Bearer stkl_…`, else 401. */
export async function authenticateLeakToken(ctx: HubContext, authorization: string | undefined): Promise<LeakReporter> {
  if (typeof authorization !== 'string' || !authorization.startsWith('Bearer ')) {
    throw unauthorized('a leak-report token is required (Authorization: Bearer stkl_…; created with `stk leaks token create`)');
  }
  const token = authorization.slice(7).trim();
  const row =
    token.startsWith(LEAK_TOKEN_PREFIX) && token.length <= 200
      ? await leakDb(ctx.db)
          .selectFrom('leak_tokens')
          .select(['id', 'name', 'org_id', 'revoked_at'])
          .where('token_hash', '=', sha256Hex(token))
          .executeTakeFirst()
      : undefined;
  if (!row || row.revoked_at) throw unauthorized('invalid or revoked leak-report token');
  return { tokenId: row.id, tokenName: row.name, orgId: row.org_id };
}

// ---------------------------------------------------------------- policy

async function policyOf(db: Kysely<HubDatabase>, projectId: string): Promise<{ policy: LeakPolicy; isDefault: boolean; updatedAt: string | null }> {
  const row = await leakDb(db).selectFrom('leak_policies').select(['policy', 'updated_at']).where('project_id', '=', projectId).executeTakeFirst();
  return row ? { policy: row.policy, isDefault: false, updatedAt: row.updated_at } : { policy: DEFAULT_LEAK_POLICY, isDefault: true, updatedAt: null };
}

export async function getLeakPolicy(ctx: HubContext, actor: Actor, projectName: string): Promise<LeakPolicyView> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'admin');
  return { project: project.name, ...(await policyOf(ctx.db, project.id)) };
}

export async function setLeakPolicy(ctx: HubContext, actor: Actor, projectName: string, policy: LeakPolicy): Promise<LeakPolicyView> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'admin');
  const now = nowIso();
  await ctx.db.transaction().execute(async (trx) => {
    const before = await policyOf(trx, project.id);
    await leakDb(trx)
      .insertInto('leak_policies')
      .values({ project_id: project.id, policy, updated_by: signedIn(actor).email, updated_at: now })
      .onConflict((oc) => oc.column('project_id').doUpdateSet({ policy, updated_by: signedIn(actor).email, updated_at: now }))
      .execute();
    await audit(ctx, actor, { action: 'leaks.policy.set', project: project.name, detail: { policy, previous: before.policy } }, trx);
  });
  return { project: project.name, policy, isDefault: false, updatedAt: now };
}

// ---------------------------------------------------------------- lookup (stk apikey scan)

const NOT_FOUND_ITEM = (keyId: string): KeyLookupItem => ({
  keyId,
  found: false,
  project: null,
  env: null,
  name: null,
  status: null,
  lastUsedAt: null,
  rotatedAt: null,
  expiresAt: null,
});

/**
 * Describes keys by id to whoever is project:admin on each key's project; to anyone else a key reads
 * exactly like an id nobody ever issued (`found: false`, every field null). The caller's roles are read
 * once, before and whatever the ids are, so the work done does not depend on which ids exist either.
 * Never takes or compares a secret: only ids travel.
 */
export async function lookupKeys(ctx: HubContext, actor: Actor, keyIds: string[]): Promise<KeyLookupItem[]> {
  const op = signedIn(actor);
  const ids = [...new Set(keyIds)];
  const [{ role: org }, memberships, rows] = await Promise.all([
    orgRole(ctx, actor),
    ctx.db.selectFrom('project_memberships').select(['project_id', 'role']).where('operator_id', '=', op.id).where('status', '=', 'active').execute(),
    ctx.db
      .selectFrom('api_keys')
      .innerJoin('projects', 'projects.id', 'api_keys.project_id')
      .innerJoin('envs', 'envs.id', 'api_keys.env_id')
      .selectAll('api_keys')
      .select(['projects.name as project_name', 'projects.org_id as org_id', 'envs.name as env_name'])
      .where('api_keys.id', 'in', ids)
      .execute(),
  ]);
  const explicit = new Map(memberships.map((m) => [m.project_id, m.role]));
  const orgAdmin = org === 'owner' || org === 'admin';
  const byId = new Map(rows.map((r) => [r.id, r]));
  const now = nowIso();
  return keyIds.map((id) => {
    const r = byId.get(id);
    // effective role: an explicit membership wins, else org owner/admin act as project admin (rbac.effectiveRole)
    const role = r ? (explicit.get(r.project_id) ?? (orgAdmin ? 'admin' : null)) : null;
    if (!r || role !== 'admin') return NOT_FOUND_ITEM(id);
    return {
      keyId: r.id,
      found: true,
      project: r.project_name,
      env: r.env_name,
      name: r.name,
      status: keyStatus(r, now),
      lastUsedAt: r.last_used_at,
      rotatedAt: r.rotated_at,
      expiresAt: r.expires_at,
    };
  });
}

// ---------------------------------------------------------------- reports (POST /api/leaks)

interface ReportedItem {
  token: string;
  url: string | null;
  source: string | null;
}

/** A report's where-found text as kept: bounded, one line of printable text, any key-shaped string blanked out. */
function where(s: unknown, max: number): string | null {
  if (typeof s !== 'string' || s === '') return null;
  return cleanText(s, { max }).replace(API_KEY_SCAN_RE, '[key]');
}

function itemsOf(body: LeakReportBody): ReportedItem[] {
  if (Array.isArray(body)) return body.map((k) => ({ token: k.token, url: where(k.url, 2048), source: where(k.source ?? k.type, 200) }));
  return body.keys.map((token) => ({ token, url: where(body.url, 2048), source: where(body.source, 200) }));
}

export interface Pending {
  reporter: LeakReporter;
  item: ReportedItem;
  requestId: string | null;
  ip: string | null;
}

/** A token's reporting budget: `keys` reported keys it may still send now, refilled continuously. */
interface Budget {
  keys: number;
  at: number;
}

/**
 * The keys waiting to be checked on this Hub, kept per leak-report token and served round-robin (one
 * key of each token in turn), so one token's backlog delays nobody else's reports; with each token's
 * reporting budget. Both maps hold only tokens that authenticated (an org admin created each one).
 */
export class ReportQueue {
  /** per token, its keys in arrival order; Map order is the round-robin order */
  readonly byToken = new Map<string, Pending[]>();
  readonly budgets = new Map<string, Budget>();
  size = 0;
  running = false;
  idle: Promise<void> = Promise.resolve();

  /** The next key to check: the first token's oldest, and that token goes to the back of the line. */
  next(): Pending | undefined {
    for (const [tokenId, list] of this.byToken) {
      const p = list.shift()!;
      this.byToken.delete(tokenId);
      if (list.length > 0) this.byToken.set(tokenId, list);
      this.size--;
      return p;
    }
    return undefined;
  }

  /**
   * Admits `items` from `reporter` or refuses with 429 (nothing queued, nothing spent): the token's
   * minute budget, then its share of the queue, then the whole queue. The refusal is the same whatever
   * the keys are.
   */
  admit(reporter: LeakReporter, items: Pending[], now: number): void {
    const n = items.length;
    const rate = REPORTED_KEYS_PER_TOKEN_PER_MIN / 60_000; // keys per ms
    const b = this.budgets.get(reporter.tokenId) ?? { keys: REPORTED_KEYS_PER_TOKEN_PER_MIN, at: now };
    const keys = Math.min(REPORTED_KEYS_PER_TOKEN_PER_MIN, b.keys + Math.max(0, now - b.at) * rate);
    if (keys < n) {
      throw tooManyRequests(
        `this leak-report token reported more than ${REPORTED_KEYS_PER_TOKEN_PER_MIN} keys in the last minute: retry later`,
        (n - keys) / rate / 1000,
      );
    }
    const mine = this.byToken.get(reporter.tokenId);
    if ((mine?.length ?? 0) + n > MAX_PENDING_PER_TOKEN) {
      throw tooManyRequests(
        `this leak-report token has ${mine?.length ?? 0} keys waiting to be checked (at most ${MAX_PENDING_PER_TOKEN} per token): retry later`,
        QUEUE_FULL_RETRY_S,
      );
    }
    if (this.size + n > MAX_PENDING_REPORTS) throw tooManyRequests('too many leak reports waiting to be checked: retry later', QUEUE_FULL_RETRY_S);
    this.budgets.set(reporter.tokenId, { keys: keys - n, at: now });
    if (mine) mine.push(...items);
    else this.byToken.set(reporter.tokenId, items);
    this.size += n;
  }
}
const queues = new WeakMap<HubContext, ReportQueue>();

/**
 * Takes a leak report: the keys are queued and checked after the answer is sent, so the answer (status,
 * body and timing) is the same for valid, invalid and unknown keys. 429 (with Retry-After) when the
 * token is over its share (REPORTED_KEYS_PER_TOKEN_PER_MIN, MAX_PENDING_PER_TOKEN) or this Hub already
 * holds MAX_PENDING_REPORTS unchecked keys, whatever they are.
 */
export function submitLeakReport(ctx: HubContext, reporter: LeakReporter, actor: Actor, body: LeakReportBody): { received: number } {
  const items = itemsOf(body);
  let q = queues.get(ctx);
  if (!q) {
    q = new ReportQueue();
    queues.set(ctx, q);
    const queue = q;
    ctx.onClose.push(() => queue.idle);
  }
  q.admit(
    reporter,
    items.map((item) => ({ reporter, item, requestId: actor.requestId, ip: actor.ip })),
    Date.now(),
  );
  if (!q.running) {
    q.running = true;
    q.idle = drain(ctx, q);
  }
  // the token was used: written after the answer (best effort), like the keys' checks
  void leakDb(ctx.db)
    .updateTable('leak_tokens')
    .set({ last_used_at: nowIso() })
    .where('id', '=', reporter.tokenId)
    .execute()
    .catch((err: unknown) => ctx.log.warn({ err }, 'could not record leak-report token use'));
  return { received: items.length };
}

async function drain(ctx: HubContext, q: ReportQueue): Promise<void> {
  // after the answer went out
  await new Promise((r) => setImmediate(r));
  try {
    for (let p = q.next(); p; p = q.next()) {
      try {
        await handleReported(ctx, p);
      } catch (err) {
        ctx.log.error({ err, tokenId: p.reporter.tokenId }, 'leak report: checking a reported key failed');
      }
    }
  } finally {
    q.running = false;
  }
}

const sameHash = (a: Buffer, hex: string | null) => {
  if (!hex || hex.length !== a.length * 2) return false;
  return timingSafeEqual(a, Buffer.from(hex, 'hex'));
};

/**
 * One reported key: its checksum, then its secret's HMAC against the stored hash (the current secret,
 * or the previous one while its grace lasts). Anything but a full match does nothing at all — a key id
 * with a wrong secret suspends nobody. A match is recorded once per (key, secret): the first report is
 * audited (`apikey.leaked`) and acted on under the project's policy; later ones only count.
 */
async function handleReported(ctx: HubContext, p: Pending): Promise<void> {
  const parsed = parseKey(p.item.token);
  if (typeof parsed !== 'object') return;
  const hash = hashSecret(ctx.crypto.apiKeyPepper, parsed.secret);
  const row = await ctx.db
    .selectFrom('api_keys')
    .innerJoin('projects', 'projects.id', 'api_keys.project_id')
    .innerJoin('envs', 'envs.id', 'api_keys.env_id')
    .selectAll('api_keys')
    .select(['projects.name as project_name', 'projects.org_id as org_id', 'envs.name as env_name'])
    .where('api_keys.id', '=', parsed.keyId)
    .executeTakeFirst();
  if (!row || row.org_id !== p.reporter.orgId) return;
  const now = nowIso();
  const matched = sameHash(hash, row.secret_hash)
    ? row.secret_hash
    : row.prev_expires_at && row.prev_expires_at > now && sameHash(hash, row.prev_secret_hash)
      ? row.prev_secret_hash!
      : null;
  if (!matched) return;
  const status = keyStatus(row, now);
  const { policy } = await policyOf(ctx.db, row.project_id);
  // a revoked or expired key is only recorded; a suspended one can still be revoked
  const action = status === 'active' || (status === 'suspended' && policy === 'revoke') ? policy : 'none';
  const actor: Actor = { operator: null, requestId: p.requestId, ip: p.ip };
  const reportedBy = { tokenId: p.reporter.tokenId, tokenName: p.reporter.tokenName };
  const first = await ctx.db.transaction().execute(async (trx) => {
    const db = leakDb(trx);
    const ins = await db
      .insertInto('leak_reports')
      .values({
        key_id: row.id,
        secret_hash: matched,
        project_id: row.project_id,
        action,
        source: p.item.source,
        url: p.item.url,
        token_id: p.reporter.tokenId,
        reports: 1,
        first_reported_at: now,
        last_reported_at: now,
      })
      .onConflict((oc) => oc.columns(['key_id', 'secret_hash']).doNothing())
      .executeTakeFirst();
    if (Number(ins.numInsertedOrUpdatedRows ?? 0) === 0) {
      // reported before: counted, not acted on or audited again
      await db
        .updateTable('leak_reports')
        .set((eb) => ({ reports: eb('reports', '+', 1), last_reported_at: now }))
        .where('key_id', '=', row.id)
        .where('secret_hash', '=', matched)
        .execute();
      return false;
    }
    await audit(
      ctx,
      actor,
      {
        action: 'apikey.leaked',
        project: row.project_name,
        env: row.env_name,
        actorType: 'system',
        detail: {
          keyId: row.id,
          name: row.name,
          status,
          policy,
          action,
          secret: matched === row.secret_hash ? 'current' : 'previous',
          source: p.item.source,
          url: p.item.url,
          reportedBy,
        },
      },
      trx,
    );
    return true;
  });
  if (!first) return;
  ctx.log.warn({ keyId: row.id, project: row.project_name, env: row.env_name, action, tokenName: p.reporter.tokenName }, 'leaked API key reported');
  const reason = `leak reported to POST /api/leaks with the leak-report token ${p.reporter.tokenName}`;
  if (action === 'revoke')
    await revokeFoundKey(ctx, actor, row.project_name, { id: row.env_id, name: row.env_name }, row as ApiKeysTable, { reason, reportedBy });
  else if (action === 'suspend') await suspendKeyById(ctx, actor, row.id, { reason });
}
