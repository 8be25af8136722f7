import { signedIn, type Actor } from './actor.js';
import { sql, type Kysely } from 'kysely';
import { AppError, badField, badRequest, conflict, invalidRole, notFound } from '../../protocol/errors.js';
import { IDENT_RE, nameError } from '../../protocol/names.js';
import { referencedRoles } from '../../protocol/release.js';
import { KEY_ID_RE, generateKey, hashSecret, newKeyId } from '../../protocol/key-format.js';
import type { UsageReport } from '../../protocol/sync.js';
import { parseDuration } from '../../common/duration.js';
import { normalizeAllowlist } from '../../common/ip-allowlist.js';
import type { HubContext } from '../context.js';
import type { ApiKeysTable, HubDatabase } from '../store/schema.js';
import { nowIso } from '../store/store.js';
import { isUniqueViolation } from './auth.js';
import { audit } from './audit.js';
import { isPostgres, notifyChanged, recordChange } from './events.js';
import type {
  ApiKeyView,
  CreatedKey,
  GraceEnded,
  KeyStatus,
  KeyUsageReport,
  KeyUsageSummary,
  ResumedKey,
  RevokedKey,
  RevokeResponse,
  RotatedKey,
  SuspendedKey,
  UpdatedKey,
} from '../../protocol/api/hub.js';
import { findEnv, requireProjectRole, type ProjectRef } from './rbac.js';
import { getSync, loadCurrentRelease, waitForBridges } from './sync/index.js';
import { rateLimitedEvents } from './webhooks/queue.js';
import { endGrace, endGraceOnRevoke, graceFigures, recordGraceUsage, recordLostUsage, reportSkewMs, startGrace } from './apikey-grace.js';

/** At most this many live (not revoked, not expired) keys per project+env. */
export const MAX_KEYS_PER_ENV = 100;
export const MAX_GRACE_SECONDS = 7 * 86400;
export const MAX_EXPIRY_SECONDS = 10 * 365 * 86400;
export const MAX_RATE_LIMIT_PER_MIN = 10_000_000;
export const RESERVED_ROLES = ['public', 'authenticated'];
const USAGE_RETENTION_MS = 24 * 3600_000;
const SOURCES_RETENTION_MS = 7 * 86400_000;
const MAX_SOURCES_PER_KEY = 50;

/** Usage tables (migration 0002_apikey_usage); typed here so the shared schema file stays untouched. */
export type ApiKeyUsageTable = { key_id: string; minute: string; count: number };
export type ApiKeySourcesTable = { key_id: string; address: string; first_seen_at: string; last_seen_at: string; count: number };
/** migration 0007_apikey_outcomes */
export type ApiKeyOutcomesTable = { key_id: string; minute: string; kind: 'error' | 'rejected'; status: number; count: number };
export type UsageReportsTable = { bridge_id: string; reported_at: string };
export type UsageTables = {
  api_key_usage: ApiKeyUsageTable;
  api_key_sources: ApiKeySourcesTable;
  api_key_outcomes: ApiKeyOutcomesTable;
  usage_reports: UsageReportsTable;
};
const usageDb = (ctx: HubContext) => ctx.db.withTables<UsageTables>();

export function keyStatus(row: Pick<ApiKeysTable, 'status' | 'expires_at' | 'suspended_at'>, now = nowIso()): KeyStatus {
  if (row.status === 'revoked') return 'revoked';
  if (row.suspended_at) return 'suspended';
  if (row.expires_at && row.expires_at <= now) return 'expired';
  return 'active';
}

function view(row: ApiKeysTable, referenced: Set<string> | null, now = nowIso()): ApiKeyView {
  const roles = JSON.parse(row.roles_json) as string[];
  return {
    keyId: row.id,
    name: row.name,
    roles,
    status: keyStatus(row, now),
    createdAt: row.created_at,
    lastUsedAt: row.last_used_at,
    expiresAt: row.expires_at,
    rateLimitPerMin: row.rate_limit_per_min,
    rotatedAt: row.rotated_at,
    suspendedAt: row.status === 'active' ? (row.suspended_at ?? null) : null,
    allowedIps: row.allowed_ips_json ? (JSON.parse(row.allowed_ips_json) as string[]) : null,
    staleRoles: referenced ? roles.filter((r) => !referenced.has(r)) : [],
    unconfirmed: Boolean(row.undelivered_since),
    grace:
      row.status === 'active' && row.prev_expires_at && row.prev_expires_at > now
        ? { previousSecretValidUntil: row.prev_expires_at, auto: row.grace_auto === 1 }
        : null,
  };
}

// ---------- input validation ----------

/**
 * Roles for a key: a list (or comma-separated string), each trimmed; no empties, no duplicates,
 * identifiers only, never `public`/`authenticated`, and each referenced by some rule of the env's
 * current release. Every failure is 422 INVALID_ROLE.
 */
export function validateRoles(input: unknown, referenced: string[] | null): string[] {
  if (input === undefined || input === null || (typeof input === 'string' && input.trim() === '')) {
    throw invalidRole('roles are required: pass at least one role, e.g. --roles reader', rolesDetails([], referenced));
  }
  let list: unknown[];
  if (typeof input === 'string') list = input.split(',');
  else if (Array.isArray(input)) list = input;
  else throw badField('roles', 'roles must be an array of strings');
  if (list.length === 0) throw invalidRole('roles are required: pass at least one role, e.g. --roles reader', rolesDetails([], referenced));
  if (list.length > 50) throw invalidRole('at most 50 roles per key');
  const roles: string[] = [];
  for (const r of list) {
    if (typeof r !== 'string') throw badField('roles', 'roles must be an array of strings');
    const t = r.trim();
    if (!t) throw invalidRole('empty role in the list: remove the extra comma', rolesDetails([], referenced));
    if (!IDENT_RE.test(t))
      throw invalidRole(
        `invalid role ${JSON.stringify(t.slice(0, 64))}: roles are identifiers (letters, digits, '_'; not starting with a digit)`,
        rolesDetails([t], referenced),
      );
    if (RESERVED_ROLES.includes(t))
      throw invalidRole(
        `role ${t} is reserved (public and authenticated never apply to API keys); name the role a permission rule grants`,
        rolesDetails([t], referenced),
      );
    if (roles.includes(t)) throw invalidRole(`duplicate role ${t}`, rolesDetails([], referenced));
    roles.push(t);
  }
  if (referenced === null) {
    throw invalidRole('this env has no release yet, so no role is valid: run `stk apply` first', { unknownRoles: roles, validRoles: [] });
  }
  const unknown = roles.filter((r) => !referenced.includes(r));
  if (unknown.length) {
    const valid = referenced.length ? referenced.join(', ') : '(none: the current release grants no named role)';
    throw invalidRole(
      `unknown role${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}: not referenced by any permission rule of the current release. Valid roles: ${valid}`,
      rolesDetails(unknown, referenced),
    );
  }
  return roles;
}

function rolesDetails(unknown: string[], referenced: string[] | null) {
  return { unknownRoles: unknown, validRoles: referenced ?? [] };
}

/** `expiresIn` ("90d") or `expiresAt` (ISO, future) → ISO or null. */
export function parseExpiry(body: { expiresIn?: unknown; expiresAt?: unknown }, now = Date.now()): string | null {
  const { expiresIn, expiresAt } = body;
  const hasIn = expiresIn !== undefined && expiresIn !== null && expiresIn !== '';
  const hasAt = expiresAt !== undefined && expiresAt !== null && expiresAt !== '';
  if (hasIn && hasAt) throw badField(['expiresIn', 'expiresAt'], 'pass expiresIn or expiresAt, not both');
  if (hasIn) {
    let secs: number;
    try {
      if (typeof expiresIn !== 'string' && typeof expiresIn !== 'number') throw new Error('type');
      secs = parseDuration(expiresIn);
    } catch {
      throw badField('expiresIn', 'expiresIn must be a duration like 30m, 12h or 90d');
    }
    if (secs < 1 || secs > MAX_EXPIRY_SECONDS) throw badField('expiresIn', 'expiresIn must be between 1s and 3650d');
    return new Date(now + Math.round(secs * 1000)).toISOString();
  }
  if (hasAt) {
    const t = typeof expiresAt === 'string' && /^\d{4}-\d{2}-\d{2}/.test(expiresAt) ? Date.parse(expiresAt) : NaN;
    if (!Number.isFinite(t)) throw badField('expiresAt', 'expiresAt must be an ISO-8601 timestamp, e.g. 2027-01-31T00:00:00Z');
    if (t <= now) throw badField('expiresAt', 'expiresAt must be in the future');
    if (t - now > MAX_EXPIRY_SECONDS * 1000) throw badField('expiresAt', 'expiresAt must be within 10 years');
    return new Date(t).toISOString();
  }
  return null;
}

export function parseRateLimit(v: unknown): number | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_RATE_LIMIT_PER_MIN) {
    throw badField('rateLimitPerMin', `rateLimitPerMin must be an integer between 1 and ${MAX_RATE_LIMIT_PER_MIN}`);
  }
  return v;
}

/** `allowedIps` → the entries to store, or null (any address); 422 INVALID_IP_ALLOWLIST naming a bad entry. */
export function parseAllowedIps(v: unknown): string[] | null {
  if (v === undefined || v === null) return null;
  try {
    return normalizeAllowlist(v);
  } catch (e) {
    throw new AppError('INVALID_IP_ALLOWLIST', (e as Error).message);
  }
}

/**
 * `grace`: a duration (0 to 7d), or `auto` — the previous secret works until it has been unused for
 * the quiet period (STK_APIKEY_GRACE_QUIET), at most 7 days (src/hub/services/apikey-grace.ts).
 */
export function parseGrace(v: unknown): { seconds: number; auto: boolean } {
  if (v === undefined || v === null || v === '') return { seconds: 0, auto: false };
  if (v === 'auto') return { seconds: MAX_GRACE_SECONDS, auto: true };
  let secs: number;
  try {
    if (typeof v !== 'string' && typeof v !== 'number') throw new Error('type');
    secs = parseDuration(v);
  } catch {
    throw badField('grace', 'grace must be a duration like 0, 15m, 1h or 7d, or auto (ends once the previous secret is unused)');
  }
  if (secs > MAX_GRACE_SECONDS) throw badField('grace', 'grace must be between 0 and 7d, or auto');
  return { seconds: secs, auto: false };
}

// ---------- lookups ----------

interface EnvRef {
  project: ProjectRef;
  env: { id: string; name: string };
}

async function adminEnv(ctx: HubContext, actor: Actor, project: string, env: string): Promise<EnvRef> {
  const { project: p } = await requireProjectRole(ctx, actor, project, 'admin');
  return { project: p, env: await findEnv(ctx, p, env) };
}

async function referencedFor(ctx: HubContext, envId: string): Promise<string[] | null> {
  const release = await loadCurrentRelease(ctx, envId);
  return release ? referencedRoles(release.permissions) : null;
}

/** A key of the env by id or name; 404 otherwise. Ids are upper case, names lower case. */
async function findKey(db: Kysely<HubDatabase>, envId: string, idOrName: string): Promise<ApiKeysTable> {
  if (typeof idOrName !== 'string' || !idOrName || idOrName.length > 128) throw notFound('API key not found');
  const q = db.selectFrom('api_keys').selectAll().where('env_id', '=', envId);
  let row = KEY_ID_RE.test(idOrName) ? await q.where('id', '=', idOrName).executeTakeFirst() : undefined;
  row ??= await q.where('name', '=', idOrName).executeTakeFirst();
  if (!row) throw notFound(`API key ${JSON.stringify(idOrName.slice(0, 64))} not found in this env`);
  return row;
}

// ---------- operations ----------

/**
 * Serialises the writes that can add a live key to one env, so two of them cannot both see room under
 * the limit: a row lock on the env until commit on PostgreSQL (SQLite runs one write transaction at a
 * time already). Take it first in the transaction.
 */
async function lockEnvKeys(trx: Kysely<HubDatabase>, envId: string): Promise<void> {
  if (isPostgres(trx)) await trx.selectFrom('envs').select('id').where('id', '=', envId).forUpdate().execute();
}

/** 409 when the env already holds MAX_KEYS_PER_ENV live (active, not expired) keys. Call under `lockEnvKeys`. */
async function requireRoomForLiveKey(trx: Kysely<HubDatabase>, project: ProjectRef, env: { id: string; name: string }, now: string): Promise<void> {
  const live = await trx
    .selectFrom('api_keys')
    .select((eb) => eb.fn.countAll().as('n'))
    .where('env_id', '=', env.id)
    .where('status', '=', 'active')
    .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
    .executeTakeFirst();
  if (Number(live?.n ?? 0) >= MAX_KEYS_PER_ENV) {
    throw conflict(`${project.name}/${env.name} already has ${MAX_KEYS_PER_ENV} live API keys (the limit): revoke unused ones first`);
  }
}

export interface CreateInput {
  name?: unknown;
  roles?: unknown;
  expiresIn?: unknown;
  expiresAt?: unknown;
  rateLimitPerMin?: unknown;
  allowedIps?: unknown;
}

export async function createKey(ctx: HubContext, actor: Actor, projectName: string, envName: string, body: CreateInput): Promise<CreatedKey> {
  const { project, env } = await adminEnv(ctx, actor, projectName, envName);
  const nameErr = nameError('API key', body.name);
  if (nameErr) throw badRequest(nameErr);
  const name = body.name as string;
  const expiresAt = parseExpiry(body);
  const rateLimitPerMin = parseRateLimit(body.rateLimitPerMin);
  const allowedIps = parseAllowedIps(body.allowedIps);
  const referenced = await referencedFor(ctx, env.id);
  const roles = validateRoles(body.roles, referenced);

  const now = nowIso();
  let created: { row: ApiKeysTable; apiKey: string; seq: number } | undefined;
  for (let attempt = 0; attempt < 3 && !created; attempt++) {
    const { key, keyId, secret } = generateKey(env.name, newKeyId());
    const row: ApiKeysTable = {
      id: keyId,
      project_id: project.id,
      env_id: env.id,
      name,
      roles_json: JSON.stringify(roles),
      secret_hash: hashSecret(ctx.crypto.apiKeyPepper, secret).toString('hex'),
      prev_secret_hash: null,
      prev_expires_at: null,
      status: 'active',
      rate_limit_per_min: rateLimitPerMin,
      created_by: signedIn(actor).id,
      created_at: now,
      expires_at: expiresAt,
      revoked_at: null,
      rotated_at: null,
      last_used_at: null,
      suspended_at: null,
      allowed_ips_json: allowedIps ? JSON.stringify(allowedIps) : null,
      // cleared by confirmDelivery once the HTTP response with the plaintext is on the wire
      undelivered_since: now,
    };
    try {
      const seq = await ctx.db.transaction().execute(async (trx) => {
        await lockEnvKeys(trx, env.id);
        const dup = await trx.selectFrom('api_keys').select('id').where('env_id', '=', env.id).where('name', '=', name).executeTakeFirst();
        if (dup) throw conflict(`an API key named ${name} already exists in ${project.name}/${env.name} (names stay reserved after revoke)`);
        await requireRoomForLiveKey(trx, project, env, now);
        await trx.insertInto('api_keys').values(row).execute();
        await audit(
          ctx,
          actor,
          {
            action: 'apikey.create',
            project: project.name,
            env: env.name,
            detail: { keyId, name, roles, expiresAt, rateLimitPerMin, ...(allowedIps ? { allowedIps } : {}) },
          },
          trx,
        );
        return recordChange(trx, { project: project.name, env: env.name, kind: 'apikey', payload: { keyId } });
      });
      created = { row, apiKey: key, seq };
    } catch (e) {
      if (!isUniqueViolation(e)) throw e;
      const again = await ctx.db.selectFrom('api_keys').select('id').where('env_id', '=', env.id).where('name', '=', name).executeTakeFirst();
      if (again) throw conflict(`an API key named ${name} already exists in ${project.name}/${env.name}`);
      // a key id collision (60 random bits): try a new id
    }
  }
  if (!created) throw new Error('could not allocate a unique key id');
  notifyChanged(ctx, created.seq);
  const ack = await waitForBridges(ctx, created.seq);
  const v = view(created.row, new Set(referenced ?? []));
  return {
    keyId: v.keyId,
    name: v.name,
    roles: v.roles,
    status: v.status,
    createdAt: v.createdAt,
    expiresAt: v.expiresAt,
    rateLimitPerMin: v.rateLimitPerMin,
    allowedIps: v.allowedIps,
    apiKey: created.apiKey,
    ack,
  };
}

/**
 * The response carrying a plaintext (create/rotate issued at `issuedAt`) was handed to the network:
 * clear the key's unconfirmed flag. A crash before this leaves the flag set, so `apikey list` can tell
 * keys whose secret may exist nowhere from keys that were delivered.
 */
export async function confirmDelivery(ctx: HubContext, keyId: string, issuedAt: string): Promise<void> {
  await ctx.db.updateTable('api_keys').set({ undelivered_since: null }).where('id', '=', keyId).where('undelivered_since', '=', issuedAt).execute();
}

export async function listKeys(ctx: HubContext, actor: Actor, projectName: string, envName: string): Promise<ApiKeyView[]> {
  const { env } = await adminEnv(ctx, actor, projectName, envName);
  const [rows, referenced] = await Promise.all([
    ctx.db.selectFrom('api_keys').selectAll().where('env_id', '=', env.id).orderBy('created_at').orderBy('id').execute(),
    referencedFor(ctx, env.id),
  ]);
  const ref = referenced ? new Set(referenced) : null;
  const now = nowIso();
  return rows.map((r) => view(r, ref, now));
}

export async function getKey(ctx: HubContext, actor: Actor, projectName: string, envName: string, idOrName: string): Promise<ApiKeyView> {
  const { env } = await adminEnv(ctx, actor, projectName, envName);
  const row = await findKey(ctx.db, env.id, idOrName);
  const referenced = await referencedFor(ctx, env.id);
  return view(row, referenced ? new Set(referenced) : null);
}

export async function usageSummary(ctx: HubContext, keyId: string, lastUsedAt: string | null): Promise<KeyUsageSummary> {
  const db = usageDb(ctx);
  const since = minuteOf(new Date(Date.now() - 60 * 60_000));
  const [sum, sources, { asOf }] = await Promise.all([
    db
      .selectFrom('api_key_usage')
      .select((eb) => eb.fn.sum<number>('count').as('n'))
      .where('key_id', '=', keyId)
      .where('minute', '>', since)
      .executeTakeFirst(),
    db
      .selectFrom('api_key_sources')
      .select(['address', 'last_seen_at', 'count'])
      .where('key_id', '=', keyId)
      .orderBy('last_seen_at', 'desc')
      .limit(MAX_SOURCES_PER_KEY)
      .execute(),
    usageAsOf(ctx),
  ]);
  return {
    asOf,
    lastUsedAt,
    requestsLast60m: Number(sum?.n ?? 0),
    sources: sources.map((s) => ({ address: s.address, lastSeenAt: s.last_seen_at, count: Number(s.count) })),
  };
}

/**
 * How recent the usage figures are: they include every request up to the oldest last report among the
 * Bridges connected to the Hubs of this store (a Bridge that has not reported yet: since it connected).
 * Null when no Bridge is connected.
 */
async function usageAsOf(ctx: HubContext): Promise<{ asOf: string | null; bridges: number }> {
  const live = await getSync(ctx).cluster();
  if (!live.length) return { asOf: null, bridges: 0 };
  const reported = await usageDb(ctx)
    .selectFrom('usage_reports')
    .select(['bridge_id', 'reported_at'])
    .where(
      'bridge_id',
      'in',
      live.map((b) => b.bridgeId),
    )
    .execute();
  const at = new Map(reported.map((r) => [r.bridge_id, r.reported_at]));
  return { asOf: live.map((b) => at.get(b.bridgeId) ?? b.connectedAt).sort()[0]!, bridges: live.length };
}

/** `GET …/apikeys/:key/usage`: what `stk apikey show` draws. */
export async function keyUsage(ctx: HubContext, actor: Actor, projectName: string, envName: string, idOrName: string): Promise<KeyUsageReport> {
  const { env } = await adminEnv(ctx, actor, projectName, envName);
  const row = await findKey(ctx.db, env.id, idOrName);
  const referenced = await referencedFor(ctx, env.id);
  const db = usageDb(ctx);
  const nowMs = Date.now();
  const from = minuteOf(new Date(nowMs - USAGE_RETENTION_MS));
  const [series, outcomes, sources, { asOf, bridges }, grace] = await Promise.all([
    db.selectFrom('api_key_usage').select(['minute', 'count']).where('key_id', '=', row.id).where('minute', '>=', from).orderBy('minute').execute(),
    db
      .selectFrom('api_key_outcomes')
      .select(['kind', 'status', (eb) => eb.fn.sum<number>('count').as('n')])
      .where('key_id', '=', row.id)
      .where('minute', '>=', from)
      .groupBy(['kind', 'status'])
      .execute(),
    db.selectFrom('api_key_sources').selectAll().where('key_id', '=', row.id).orderBy('last_seen_at', 'desc').limit(MAX_SOURCES_PER_KEY).execute(),
    usageAsOf(ctx),
    graceFigures(ctx, row.id),
  ]);
  const total = series.reduce((n, m) => n + Number(m.count), 0);
  const counts = new Map<string, number>();
  let failed = 0;
  for (const o of outcomes) {
    const n = Number(o.n);
    if (o.kind === 'error') failed += n;
    counts.set(String(o.status), (counts.get(String(o.status)) ?? 0) + n);
  }
  const byStatus = [
    { status: '2xx', requests: Math.max(0, total - failed) },
    ...[...counts].sort(([a], [b]) => a.localeCompare(b)).map(([status, requests]) => ({ status, requests })),
  ];
  return {
    key: view(row, referenced ? new Set(referenced) : null),
    asOf,
    bridges,
    grace,
    from,
    to: new Date(nowMs).toISOString(),
    series: series.map((m) => ({ minute: m.minute, requests: Number(m.count) })),
    byStatus,
    sources: sources.map((x) => ({ address: x.address, requests: Number(x.count), firstSeenAt: x.first_seen_at, lastSeenAt: x.last_seen_at })),
  };
}

export async function revokeKey(
  ctx: HubContext,
  actor: Actor,
  projectName: string,
  envName: string,
  idOrName: string,
  opts: { dryRun?: unknown },
): Promise<RevokeResponse> {
  const { project, env } = await adminEnv(ctx, actor, projectName, envName);
  if (opts.dryRun !== undefined && typeof opts.dryRun !== 'boolean') throw badRequest('dryRun must be a boolean');
  const found = await findKey(ctx.db, env.id, idOrName);
  const roles = JSON.parse(found.roles_json) as string[];
  if (opts.dryRun) {
    const u = await usageSummary(ctx, found.id, found.last_used_at);
    return { dryRun: true as const, keyId: found.id, name: found.name, roles, status: keyStatus(found), ...u };
  }
  return revokeFoundKey(ctx, actor, project.name, { id: env.id, name: env.name }, found);
}

/**
 * Revokes a key already found (the caller checked who may): one audit entry (`detail` adds to it,
 * e.g. the leak report that caused it), and every connected Bridge refuses it before this returns.
 */
export async function revokeFoundKey(
  ctx: HubContext,
  actor: Actor,
  projectName: string,
  env: { id: string; name: string },
  found: ApiKeysTable,
  detail: Record<string, unknown> = {},
): Promise<RevokedKey> {
  const roles = JSON.parse(found.roles_json) as string[];
  if (found.status === 'revoked') {
    return { keyId: found.id, name: found.name, roles, status: 'revoked' as const, revokedAt: found.revoked_at, alreadyRevoked: true, ack: null };
  }
  const now = nowIso();
  const seq = await ctx.db.transaction().execute(async (trx) => {
    const r = await trx
      .updateTable('api_keys')
      .set({ status: 'revoked', revoked_at: now, prev_secret_hash: null, prev_expires_at: null, grace_auto: null })
      .where('id', '=', found.id)
      .where('status', '=', 'active')
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) return null; // revoked concurrently
    await endGraceOnRevoke(trx, found.id, now);
    await audit(
      ctx,
      actor,
      { action: 'apikey.revoke', project: projectName, env: env.name, detail: { keyId: found.id, name: found.name, roles, ...detail } },
      trx,
    );
    return recordChange(trx, { project: projectName, env: env.name, kind: 'apikey', payload: { keyId: found.id } });
  });
  if (seq === null) {
    const again = await findKey(ctx.db, env.id, found.id);
    return { keyId: found.id, name: found.name, roles, status: 'revoked' as const, revokedAt: again.revoked_at, alreadyRevoked: true, ack: null };
  }
  notifyChanged(ctx, seq);
  const ack = await waitForBridges(ctx, seq);
  return { keyId: found.id, name: found.name, roles, status: 'revoked' as const, revokedAt: now, alreadyRevoked: false, ack };
}

/** What `suspendKey` takes besides the key: an optional reason, kept in the audit log (at most 500 characters). */
export interface SuspendInput {
  reason?: unknown;
}

function parseReason(v: unknown): string | null {
  if (v === undefined || v === null || v === '') return null;
  if (typeof v !== 'string' || v.length > 500) throw badField('reason', 'reason must be a string of at most 500 characters');
  return v;
}

/**
 * Suspends a key (project:admin): every Bridge refuses it with 401 `API key suspended` before this
 * returns (the same change feed and acknowledgement as revoke). Reversible with `resumeKey`; the key
 * keeps its secret, roles and history. A revoked key → 409. Suspending a suspended key changes
 * nothing: `alreadySuspended: true`, `ack: null`.
 */
export async function suspendKey(
  ctx: HubContext,
  actor: Actor,
  projectName: string,
  envName: string,
  idOrName: string,
  input: SuspendInput = {},
): Promise<SuspendedKey> {
  const { project, env } = await adminEnv(ctx, actor, projectName, envName);
  const reason = parseReason(input.reason);
  const found = await findKey(ctx.db, env.id, idOrName);
  return setSuspended(ctx, actor, project, env, found, true, reason) as Promise<SuspendedKey>;
}

/**
 * `suspendKey` for a caller that has already decided the actor may do it (e.g. a leak report
 * authenticated by its own token): the key by id alone, no role check here. Audited under `actor`
 * (an actor without an operator is recorded as `system`).
 */
export async function suspendKeyById(
  ctx: HubContext,
  actor: Actor,
  keyId: string,
  input: SuspendInput = {},
): Promise<SuspendedKey & { project: string; env: string }> {
  const reason = parseReason(input.reason);
  if (typeof keyId !== 'string' || !KEY_ID_RE.test(keyId)) throw notFound('API key not found');
  const row = await ctx.db
    .selectFrom('api_keys')
    .innerJoin('projects', 'projects.id', 'api_keys.project_id')
    .innerJoin('envs', 'envs.id', 'api_keys.env_id')
    .selectAll('api_keys')
    .select(['projects.name as project_name', 'envs.name as env_name'])
    .where('api_keys.id', '=', keyId)
    .executeTakeFirst();
  if (!row) throw notFound('API key not found');
  const { project_name, env_name, ...key } = row;
  const r = (await setSuspended(ctx, actor, { name: project_name }, { id: key.env_id, name: env_name }, key, true, reason)) as SuspendedKey;
  return { ...r, project: project_name, env: env_name };
}

/**
 * Resumes a suspended key (project:admin): every Bridge accepts it again, with the same secret,
 * before this returns. A revoked key → 409; a key that was not suspended: `alreadyActive: true`,
 * `ack: null`.
 */
export async function resumeKey(ctx: HubContext, actor: Actor, projectName: string, envName: string, idOrName: string): Promise<ResumedKey> {
  const { project, env } = await adminEnv(ctx, actor, projectName, envName);
  const found = await findKey(ctx.db, env.id, idOrName);
  return setSuspended(ctx, actor, project, env, found, false, null) as Promise<ResumedKey>;
}

async function setSuspended(
  ctx: HubContext,
  actor: Actor,
  project: { name: string },
  env: { id: string; name: string },
  found: ApiKeysTable,
  suspend: boolean,
  reason: string | null,
): Promise<SuspendedKey | ResumedKey> {
  const roles = JSON.parse(found.roles_json) as string[];
  const verb = suspend ? 'suspended' : 'resumed';
  if (found.status === 'revoked') throw conflict(`API key ${found.id} (${found.name}) is revoked and cannot be ${verb}`);
  const unchanged = (row: ApiKeysTable): SuspendedKey | ResumedKey =>
    suspend
      ? { keyId: row.id, name: row.name, roles, status: 'suspended', suspendedAt: row.suspended_at ?? null, alreadySuspended: true, ack: null }
      : { keyId: row.id, name: row.name, roles, status: keyStatus(row), alreadyActive: true, ack: null };
  if (Boolean(found.suspended_at) === suspend) return unchanged(found);
  const now = nowIso();
  const seq = await ctx.db.transaction().execute(async (trx) => {
    const r = await trx
      .updateTable('api_keys')
      .set({ suspended_at: suspend ? now : null })
      .where('id', '=', found.id)
      .where('status', '=', 'active')
      .where('suspended_at', suspend ? 'is' : 'is not', null)
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) return null; // revoked, suspended or resumed concurrently
    const detail: Record<string, unknown> = { keyId: found.id, name: found.name, roles };
    if (reason !== null) detail.reason = reason;
    if (!suspend) detail.suspendedAt = found.suspended_at;
    await audit(ctx, actor, { action: suspend ? 'apikey.suspend' : 'apikey.resume', project: project.name, env: env.name, detail }, trx);
    return recordChange(trx, { project: project.name, env: env.name, kind: 'apikey', payload: { keyId: found.id } });
  });
  if (seq === null) {
    const again = await findKey(ctx.db, env.id, found.id);
    if (again.status === 'revoked') throw conflict(`API key ${found.id} (${found.name}) was revoked concurrently`);
    return unchanged(again);
  }
  notifyChanged(ctx, seq);
  const ack = await waitForBridges(ctx, seq);
  return suspend
    ? { keyId: found.id, name: found.name, roles, status: 'suspended', suspendedAt: now, alreadySuspended: false, ack }
    : { keyId: found.id, name: found.name, roles, status: keyStatus({ ...found, suspended_at: null }), alreadyActive: false, ack };
}

export async function rotateKey(
  ctx: HubContext,
  actor: Actor,
  projectName: string,
  envName: string,
  idOrName: string,
  body: { grace?: unknown },
): Promise<RotatedKey> {
  const { project, env } = await adminEnv(ctx, actor, projectName, envName);
  const { seconds: graceSeconds, auto } = parseGrace(body.grace);
  const found = await findKey(ctx.db, env.id, idOrName);
  const status = keyStatus(found);
  if (status !== 'active') throw conflict(`API key ${found.id} (${found.name}) is ${status} and cannot be rotated: create a new key`);
  const roles = JSON.parse(found.roles_json) as string[];
  const { key, secret } = generateKey(env.name, found.id);
  const nowMs = Date.now();
  const now = new Date(nowMs).toISOString();
  let prevExpiresAt: string | null = graceSeconds > 0 ? new Date(nowMs + graceSeconds * 1000).toISOString() : null;
  if (prevExpiresAt && found.expires_at && prevExpiresAt > found.expires_at) prevExpiresAt = found.expires_at; // the grace never outlives the key
  const seq = await ctx.db.transaction().execute(async (trx) => {
    const r = await trx
      .updateTable('api_keys')
      .set({
        secret_hash: hashSecret(ctx.crypto.apiKeyPepper, secret).toString('hex'),
        prev_secret_hash: prevExpiresAt ? found.secret_hash : null,
        prev_expires_at: prevExpiresAt,
        grace_auto: prevExpiresAt && auto ? 1 : null,
        rotated_at: now,
        undelivered_since: now,
      })
      .where('id', '=', found.id)
      .where('status', '=', 'active')
      .where('secret_hash', '=', found.secret_hash)
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) throw conflict(`API key ${found.id} changed while rotating (revoked or rotated concurrently): list it and retry`);
    await startGrace(trx, found.id, now, prevExpiresAt, auto);
    await audit(
      ctx,
      actor,
      {
        action: 'apikey.rotate',
        project: project.name,
        env: env.name,
        detail: {
          keyId: found.id,
          name: found.name,
          roles,
          graceSeconds,
          ...(auto ? { graceMode: 'auto', graceQuietSeconds: ctx.config.apikeyGraceQuietMs / 1000 } : {}),
          previousSecretValidUntil: prevExpiresAt,
        },
      },
      trx,
    );
    return recordChange(trx, { project: project.name, env: env.name, kind: 'apikey', payload: { keyId: found.id } });
  });
  notifyChanged(ctx, seq);
  const ack = await waitForBridges(ctx, seq);
  return {
    keyId: found.id,
    name: found.name,
    roles,
    status: 'active' as const,
    rotatedAt: now,
    previousSecretValidUntil: prevExpiresAt,
    autoEnd: prevExpiresAt && auto ? { quietSeconds: ctx.config.apikeyGraceQuietMs / 1000 } : null,
    expiresAt: found.expires_at,
    apiKey: key,
    ack,
  };
}

/**
 * Ends a key's rotation grace period now (project:admin): the previous secret stops working on every
 * Bridge before this returns; audited as `apikey.grace_end`. A key without one: `alreadyEnded: true`.
 */
export async function endKeyGrace(ctx: HubContext, actor: Actor, projectName: string, envName: string, idOrName: string): Promise<GraceEnded> {
  const { project, env } = await adminEnv(ctx, actor, projectName, envName);
  const found = await findKey(ctx.db, env.id, idOrName);
  const roles = JSON.parse(found.roles_json) as string[];
  const base = { keyId: found.id, name: found.name, roles };
  const live = found.status === 'active' && found.prev_expires_at !== null && found.prev_expires_at > nowIso();
  const seq = live ? await endGrace(ctx, actor, { ...found, prev_expires_at: found.prev_expires_at!, project: project.name, env: env.name }, 'operator') : null;
  if (seq === null) return { ...base, alreadyEnded: true, ack: null };
  return { ...base, alreadyEnded: false, ack: await waitForBridges(ctx, seq) };
}

export interface UpdateInput {
  roles?: unknown;
  expiresIn?: unknown;
  expiresAt?: unknown;
  rateLimitPerMin?: unknown;
  /** null: any address again */
  allowedIps?: unknown;
}

/** Changes roles, expiry or rate limit of an active key; Bridges apply it before this returns. */
export async function updateKey(ctx: HubContext, actor: Actor, projectName: string, envName: string, idOrName: string, body: UpdateInput): Promise<UpdatedKey> {
  const { project, env } = await adminEnv(ctx, actor, projectName, envName);
  const found = await findKey(ctx.db, env.id, idOrName);
  const set: Partial<ApiKeysTable> = {};
  const detail: Record<string, unknown> = { keyId: found.id, name: found.name };
  if (body.roles !== undefined) {
    const roles = validateRoles(body.roles, await referencedFor(ctx, env.id));
    set.roles_json = JSON.stringify(roles);
    detail.roles = roles;
  }
  if ((body.expiresIn !== undefined && body.expiresIn !== null) || (body.expiresAt !== undefined && body.expiresAt !== null)) {
    set.expires_at = parseExpiry(body);
    detail.expiresAt = set.expires_at;
  } else if (body.expiresAt === null) {
    set.expires_at = null;
    detail.expiresAt = null;
  }
  if (body.rateLimitPerMin !== undefined) {
    set.rate_limit_per_min = parseRateLimit(body.rateLimitPerMin);
    detail.rateLimitPerMin = set.rate_limit_per_min;
  }
  if (body.allowedIps !== undefined) {
    const ips = parseAllowedIps(body.allowedIps);
    set.allowed_ips_json = ips ? JSON.stringify(ips) : null;
    detail.allowedIps = ips;
  }
  if (Object.keys(set).length === 0) throw badRequest('nothing to change: pass roles, expiresIn/expiresAt, rateLimitPerMin or allowedIps');
  if (found.status === 'revoked') throw conflict(`API key ${found.id} (${found.name}) is revoked`);
  const seq = await ctx.db.transaction().execute(async (trx) => {
    if (set.expires_at !== undefined) {
      // an expired key given a later expiry (or none) becomes live again: it needs room under the limit
      await lockEnvKeys(trx, env.id);
      const now = nowIso();
      const cur = await trx.selectFrom('api_keys').select(['status', 'expires_at']).where('id', '=', found.id).executeTakeFirst();
      const liveAfter = set.expires_at === null || set.expires_at > now;
      if (cur && keyStatus(cur, now) === 'expired' && liveAfter) await requireRoomForLiveKey(trx, project, env, now);
    }
    const r = await trx.updateTable('api_keys').set(set).where('id', '=', found.id).where('status', '=', 'active').executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) throw conflict(`API key ${found.id} was revoked concurrently`);
    await audit(ctx, actor, { action: 'apikey.update', project: project.name, env: env.name, detail }, trx);
    return recordChange(trx, { project: project.name, env: env.name, kind: 'apikey', payload: { keyId: found.id } });
  });
  notifyChanged(ctx, seq);
  const ack = await waitForBridges(ctx, seq);
  const row = await findKey(ctx.db, env.id, found.id);
  const referenced = await referencedFor(ctx, env.id);
  return { ...view(row, referenced ? new Set(referenced) : null), ack };
}

// ---------- usage reports from Bridges ----------

/** rows per statement of a usage report's writes (5 values each: well under SQLite's 32,766 and PostgreSQL's 65,535 parameters) */
const BATCH_ROWS = 500;
function* batches<T>(rows: T[]): Generator<T[]> {
  for (let i = 0; i < rows.length; i += BATCH_ROWS) yield rows.slice(i, i + BATCH_ROWS);
}

export const minuteOf = (d: Date) => d.toISOString().slice(0, 16) + ':00.000Z';

const MINUTE_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:00\.000Z$/;

/**
 * Merges a Bridge's usage report: per-minute counts (kept 24 h), source addresses (kept 7 days) and
 * `last_used_at`, which only moves forward and has minute granularity.
 */
export async function recordUsage(ctx: HubContext, report: UsageReport): Promise<{ keys: number }> {
  if (!report || typeof report !== 'object' || !Array.isArray(report.keys)) throw badRequest('usage report must be {bridgeId, keys: [...]}');
  if (report.keys.length > 100_000) throw badRequest('usage report too large');
  // every report writes its keys in one order (key id, then minute): Bridges' reports merged at once
  // lock the same rows in the same order and queue instead of deadlocking (PostgreSQL aborts one of two
  // transactions that lock in opposite orders)
  const entries = report.keys
    .filter(
      (k) =>
        k && typeof k.keyId === 'string' && KEY_ID_RE.test(k.keyId) && Array.isArray(k.minutes) && (typeof k.lastUsedAt === 'string' || k.lastUsedAt === null),
    )
    .sort((a, b) => (a.keyId < b.keyId ? -1 : a.keyId > b.keyId ? 1 : 0));
  const db = usageDb(ctx);
  // every report (an empty one too) says this Bridge's counts are in up to now: recorded once they are
  // committed (`--grace auto` reads this time first, then the counts it covers)
  const reported = async () => {
    // requests the Bridge could not count (apikey-grace.ts), before its report time says it is all in
    await recordLostUsage(ctx.db, report, Date.now());
    // a part with more to follow: the counts of the rest are not in yet
    if (typeof report.bridgeId !== 'string' || report.bridgeId.length > 200 || report.more === true) return;
    const at = nowIso();
    await db
      .insertInto('usage_reports')
      .values({ bridge_id: report.bridgeId, reported_at: at })
      .onConflict((oc) => oc.column('bridge_id').doUpdateSet({ reported_at: at }))
      .execute();
  };
  if (entries.length === 0) {
    await reported();
    return { keys: 0 };
  }
  const known = new Set<string>();
  for (let i = 0; i < entries.length; i += 500) {
    const ids = entries.slice(i, i + 500).map((k) => k.keyId);
    for (const r of await ctx.db.selectFrom('api_keys').select('id').where('id', 'in', ids).execute()) known.add(r.id);
  }
  const nowMs = Date.now();
  const nowMinute = minuteOf(new Date(nowMs + 60_000));
  const oldest = minuteOf(new Date(nowMs - USAGE_RETENTION_MS));
  // the Bridge's times in this Hub's clock: a Bridge whose clock is ahead had its minutes dropped as
  // "future" and one behind filed them (and last use) in the past. Minutes move by whole minutes, so
  // network delay (well under 30 s) moves nothing.
  const skewMs = reportSkewMs(report, nowMs);
  const shiftMs = Math.round(skewMs / 60_000) * 60_000;
  const inHubClock = (minute: string) => (shiftMs === 0 ? minute : minuteOf(new Date(Date.parse(minute) + shiftMs)));
  // every reader of the report's minutes below (usage rows, the rate_limited webhook) sees them in this
  // Hub's clock; `lastUsedAt` and the grace times are moved where they are read
  if (shiftMs !== 0) {
    for (const k of entries) {
      k.minutes = k.minutes
        .slice(0, 1440)
        .map((m) => (m && typeof m.minute === 'string' && MINUTE_RE.test(m.minute) ? { ...m, minute: inHubClock(m.minute) } : m));
    }
  }
  // what the report adds, row by row, summed where it names a row twice; then written in batches of
  // BATCH_ROWS (a report part holds up to 20,000 keys: one statement per row was minutes on PostgreSQL)
  const usageRows = new Map<string, { key_id: string; minute: string; count: number }>();
  const outcomeRows = new Map<string, { key_id: string; minute: string; kind: 'error' | 'rejected'; status: number; count: number }>();
  const lastUsed = new Map<string, string[]>(); // minute → key ids whose last use it is
  const sourceRows = new Map<string, { key_id: string; address: string; first_seen_at: string; last_seen_at: string; count: number }>();
  for (const k of entries) {
    if (!known.has(k.keyId)) continue;
    let last: string | null = null;
    const minutes = k.minutes
      .slice(0, 1440)
      .filter((m) => m && typeof m.minute === 'string' && MINUTE_RE.test(m.minute) && Number.isInteger(m.count) && m.count >= 0)
      .sort((a, b) => (a.minute < b.minute ? -1 : a.minute > b.minute ? 1 : 0));
    for (const m of minutes) {
      if (m.minute > nowMinute || m.minute < oldest) continue;
      for (const kind of ['error', 'rejected'] as const) {
        const byStatus = kind === 'error' ? m.errors : m.rejected;
        if (!byStatus || typeof byStatus !== 'object') continue;
        for (const [st, n] of Object.entries(byStatus).slice(0, 20)) {
          const status = Number(st);
          if (!Number.isInteger(status) || status < 100 || status > 599 || !Number.isInteger(n) || n < 1) continue;
          const id = `${k.keyId} ${m.minute} ${kind} ${status}`;
          const row = outcomeRows.get(id);
          if (row) row.count += n;
          else outcomeRows.set(id, { key_id: k.keyId, minute: m.minute, kind, status, count: n });
        }
      }
      if (m.count < 1) continue; // only refusals this minute: not a use of the key
      const id = `${k.keyId} ${m.minute}`;
      const row = usageRows.get(id);
      if (row) row.count += m.count;
      else usageRows.set(id, { key_id: k.keyId, minute: m.minute, count: m.count });
      if (!last || m.minute > last) last = m.minute;
    }
    const lu = k.lastUsedAt === null ? NaN : Date.parse(k.lastUsedAt) + skewMs;
    // (a made-up last use at the edge of what a date holds, moved by the skew, is no date: skipped)
    if (Number.isFinite(lu) && Math.abs(lu) < 8.64e15 && lu <= nowMs + 60_000) {
      const minute = minuteOf(new Date(lu));
      if (!last || minute > last) last = minute;
    }
    if (last) {
      const ids = lastUsed.get(last);
      if (ids) ids.push(k.keyId);
      else lastUsed.set(last, [k.keyId]);
    }
    const seenAt = last ?? minuteOf(new Date(nowMs));
    for (const src of (Array.isArray(k.sources) ? k.sources : []).slice(0, MAX_SOURCES_PER_KEY)) {
      const a = src?.address;
      const n = Number.isInteger(src?.count) && src.count > 0 ? src.count : 1;
      if (typeof a !== 'string' || !a || a.length > 64 || !/^[0-9A-Fa-f:.]+$/.test(a)) continue;
      const id = `${k.keyId} ${a}`;
      const row = sourceRows.get(id);
      if (row) row.count += n;
      else sourceRows.set(id, { key_id: k.keyId, address: a, first_seen_at: seenAt, last_seen_at: seenAt, count: n });
    }
  }
  // every row in one order (by key id first: the entries are sorted), table after table, in each report
  await ctx.db.transaction().execute(async (trx0) => {
    const trx = trx0.withTables<UsageTables>();
    for (const rows of batches([...usageRows.values()])) {
      await trx
        .insertInto('api_key_usage')
        .values(rows)
        .onConflict((oc) => oc.columns(['key_id', 'minute']).doUpdateSet({ count: sql<number>`api_key_usage.count + excluded.count` }))
        .execute();
    }
    for (const rows of batches([...outcomeRows.values()])) {
      await trx
        .insertInto('api_key_outcomes')
        .values(rows)
        .onConflict((oc) => oc.columns(['key_id', 'minute', 'kind', 'status']).doUpdateSet({ count: sql<number>`api_key_outcomes.count + excluded.count` }))
        .execute();
    }
    // `last_used_at` only moves forward: one statement per distinct minute (a report's keys mostly share one)
    for (const minute of [...lastUsed.keys()].sort()) {
      for (const ids of batches(lastUsed.get(minute)!)) {
        await trx
          .updateTable('api_keys')
          .set({ last_used_at: minute })
          .where('id', 'in', ids)
          .where((eb) => eb.or([eb('last_used_at', 'is', null), eb('last_used_at', '<', minute)]))
          .execute();
      }
    }
    const sources = [...sourceRows.values()].sort((a, b) =>
      a.key_id !== b.key_id ? (a.key_id < b.key_id ? -1 : 1) : a.address < b.address ? -1 : a.address > b.address ? 1 : 0,
    );
    for (const rows of batches(sources)) {
      await trx
        .insertInto('api_key_sources')
        .values(rows)
        .onConflict((oc) =>
          oc.columns(['key_id', 'address']).doUpdateSet({
            last_seen_at: sql<string>`case when excluded.last_seen_at > api_key_sources.last_seen_at then excluded.last_seen_at else api_key_sources.last_seen_at end`,
            count: sql<number>`api_key_sources.count + excluded.count`,
          }),
        )
        .execute();
    }
    const knownEntries = entries.filter((k) => known.has(k.keyId));
    // requests per secret of keys in a rotation grace period (apikey-grace.ts)
    await recordGraceUsage(trx0, report, knownEntries, nowMs);
    // apikey.rate_limited webhook events: the first 429 of a key in an hour
    await rateLimitedEvents(
      ctx,
      trx0,
      knownEntries.map((k) => ({ ...k, minutes: k.minutes.filter((m) => m && typeof m.minute === 'string' && m.minute <= nowMinute && m.minute >= oldest) })),
    );
  });
  await reported();
  // retention, cheap and bounded by the indexes
  await db.deleteFrom('api_key_usage').where('minute', '<', oldest).execute();
  await db.deleteFrom('api_key_outcomes').where('minute', '<', oldest).execute();
  await db
    .deleteFrom('usage_reports')
    .where('reported_at', '<', new Date(nowMs - SOURCES_RETENTION_MS).toISOString())
    .execute();
  await db
    .deleteFrom('api_key_sources')
    .where('last_seen_at', '<', new Date(nowMs - SOURCES_RETENTION_MS).toISOString())
    .execute();
  return { keys: known.size };
}
