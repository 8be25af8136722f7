/**
 * The webhook outbox: events become delivery rows (one per subscribed endpoint) in the same store
 * transaction as the change they describe, so an event is queued exactly when its change commits and
 * survives a Hub restart or kill -9. The worker (worker.ts) sends them.
 *
 * Key events come from the audit log: `audit()` calls `eventsForAudit` with the entry it writes, in
 * the same transaction, so every audited key change (including ones added later, e.g. suspend, leak
 * reports) becomes its event once its audit action is mapped in AUDIT_EVENTS.
 */
import { sql, type Kysely } from 'kysely';
import { ulid } from '../../../common/ulid.js';
import type { HubContext } from '../../context.js';
import type { HubDatabase } from '../../store/schema.js';
import { nowIso } from '../../store/store.js';
import { WEBHOOK_TEST_EVENT, type WebhookEvent, type WebhookPayload } from '../../../protocol/webhooks.js';

/** migration 0011_webhooks; typed here so the shared schema file stays untouched */
export interface WebhookEndpointsTable {
  /** `wh_` + ULID */
  id: string;
  project_id: string;
  url: string;
  /** WebhookEvent[] */
  events_json: string;
  /** `whsec_…`, AES-256-GCM under a subkey of STK_SECRET_KEY (Crypto.sealWebhookSecret) */
  secret_enc: string;
  status: 'active' | 'disabled';
  /** why it was disabled (the receiver answered 410 Gone) */
  disabled_reason: string | null;
  /** events not queued for it because the project's queue was full */
  dropped: number;
  created_by: string | null;
  created_at: string;
}
export interface WebhookDeliveriesTable {
  /** the webhook-id header: `msg_` + ULID, the same on every attempt */
  id: string;
  endpoint_id: string;
  project_id: string;
  event_type: string;
  /** the exact body sent (and signed) on every attempt */
  payload: string;
  status: 'pending' | 'succeeded' | 'failed';
  /** attempts started (counted when claimed: an attempt a dead Hub started counts) */
  attempts: number;
  next_attempt_at: string;
  /** which Hub holds the delivery, until when (null: nobody) */
  lease_owner: string | null;
  lease_until: string | null;
  last_attempt_at: string | null;
  /** HTTP status of the last answer (null: none, e.g. timeout, connection refused) */
  last_status: number | null;
  last_error: string | null;
  created_at: string;
  finished_at: string | null;
}
export interface WebhookNoticesTable {
  key_id: string;
  /** `expiring:7d:<expiresAt>`, `expiring:1d:<expiresAt>`, `rate_limited:<hour>` */
  notice: string;
  /** when the notice stops mattering (the expiry, the hour): pruned two days after */
  at: string;
}
export type WebhookTables = {
  webhook_endpoints: WebhookEndpointsTable;
  webhook_deliveries: WebhookDeliveriesTable;
  webhook_notices: WebhookNoticesTable;
};
export const whDb = (db: Kysely<HubDatabase>) => db.withTables<WebhookTables>();

/** Audit actions that are webhook events. */
export const AUDIT_EVENTS: Record<string, WebhookEvent> = {
  'apikey.create': 'apikey.created',
  'apikey.rotate': 'apikey.rotated',
  'apikey.revoke': 'apikey.revoked',
  'apikey.update': 'apikey.updated',
  'apikey.suspend': 'apikey.suspended',
  'apikey.resume': 'apikey.resumed',
  'apikey.leaked': 'apikey.leaked',
  'apikey.grace_end': 'apikey.grace_ended',
};

/**
 * The audit detail fields a payload may carry: ids, names, roles, times, reasons. A whitelist, so a
 * field added to an audit entry later never reaches a receiver unless listed here.
 */
const PAYLOAD_FIELDS = [
  'keyId',
  'name',
  'roles',
  'expiresAt',
  'rateLimitPerMin',
  'graceSeconds',
  'previousSecretValidUntil',
  // apikey.rotated with grace auto; apikey.grace_ended (what ended it, the previous secret's use)
  'graceMode',
  'graceQuietSeconds',
  'trigger',
  'rotatedAt',
  'previousRequests',
  'previousLastUsedAt',
  'quietSince',
  'allowedIps',
  'reason',
  // apikey.leaked (the leak report's audit entry): where it was reported from and what the policy did;
  // not the report's url, which may hold the key itself
  'source',
  'policy',
  'action',
  'status',
  'reportedBy',
  'releaseId',
] as const;

export interface EventActor {
  type: 'operator' | 'system' | 'bridge' | 'anonymous';
  id: string | null;
  email: string | null;
}
export const SYSTEM_ACTOR: EventActor = { type: 'system', id: null, email: null };

/** A new delivery id: the webhook-id header (no '.': it is part of the signed content). */
export const newDeliveryId = () => `msg_${ulid()}`;

/** The endpoints of a project that receive `type` (all active ones for the test event, or just `only`). */
async function receivers(db: Kysely<HubDatabase>, projectId: string, type: string, only?: string): Promise<string[]> {
  let q = whDb(db).selectFrom('webhook_endpoints').select(['id', 'events_json']).where('project_id', '=', projectId).where('status', '=', 'active');
  if (only) q = q.where('id', '=', only);
  const rows = await q.execute();
  return rows.filter((r) => type === WEBHOOK_TEST_EVENT || (JSON.parse(r.events_json) as string[]).includes(type)).map((r) => r.id);
}

/**
 * Queues one event for every endpoint of the project that subscribed to it. Call with the
 * transaction of the change. Past STK_WEBHOOK_QUEUE_MAX pending deliveries in the project, an
 * endpoint's delivery is not queued and counted in its `dropped`. Returns the delivery ids.
 */
export async function enqueueEvent(
  ctx: HubContext,
  db: Kysely<HubDatabase>,
  e: { projectId: string; type: WebhookEvent | typeof WEBHOOK_TEST_EVENT; data: Record<string, unknown>; at?: string; only?: string },
): Promise<string[]> {
  const endpoints = await receivers(db, e.projectId, e.type, e.only);
  if (endpoints.length === 0) return [];
  const max = ctx.config.webhooks.queueMax;
  const counted = await sql<{
    n: number | string;
  }>`select count(*) as n from (select 1 from webhook_deliveries where project_id = ${e.projectId} and status = 'pending' limit ${max}) q`.execute(db);
  const room = Math.max(0, max - Number(counted.rows[0]?.n ?? 0));
  const now = nowIso();
  const payload: WebhookPayload = { type: e.type, timestamp: e.at ?? now, data: e.data };
  const body = JSON.stringify(payload);
  const queued = endpoints.slice(0, room);
  const dropped = endpoints.slice(room);
  const ids = queued.map(() => newDeliveryId());
  if (queued.length) {
    await whDb(db)
      .insertInto('webhook_deliveries')
      .values(
        queued.map((endpointId, i) => ({
          id: ids[i]!,
          endpoint_id: endpointId,
          project_id: e.projectId,
          event_type: e.type,
          payload: body,
          status: 'pending' as const,
          attempts: 0,
          next_attempt_at: now,
          lease_owner: null,
          lease_until: null,
          last_attempt_at: null,
          last_status: null,
          last_error: null,
          created_at: now,
          finished_at: null,
        })),
      )
      .execute();
    // the local worker looks at once (a delivery written in a transaction is seen once it commits:
    // at the latest on the next poll)
    ctx.events.emit('webhooks');
  }
  if (dropped.length) {
    await whDb(db)
      .updateTable('webhook_endpoints')
      .set({ dropped: sql<number>`dropped + 1` })
      .where('id', 'in', dropped)
      .execute();
    ctx.log.warn({ project: e.projectId, type: e.type, endpoints: dropped.length }, 'webhook queue of the project is full: event not queued');
  }
  return ids;
}

async function projectId(db: Kysely<HubDatabase>, name: string): Promise<string | undefined> {
  return (await db.selectFrom('projects').select('id').where('name', '=', name).executeTakeFirst())?.id;
}

/** Called by `audit()` with each entry, in its transaction: queues the entry's event, if it is one. */
export async function eventsForAudit(
  ctx: HubContext,
  db: Kysely<HubDatabase>,
  entry: { id: string; ts: string; action: string; project: string | null; env: string | null; detail: Record<string, unknown>; actor: EventActor },
): Promise<void> {
  const type = AUDIT_EVENTS[entry.action];
  if (!type || !entry.project) return;
  const pid = await projectId(db, entry.project);
  if (!pid) return;
  const data: Record<string, unknown> = { project: entry.project, env: entry.env };
  for (const f of PAYLOAD_FIELDS) if (entry.detail[f] !== undefined) data[f] = entry.detail[f];
  data.actor = entry.actor;
  data.auditId = entry.id;
  await enqueueEvent(ctx, db, { projectId: pid, type, data, at: entry.ts });
}

/**
 * Records a once-only notice (apikey.expiring per key and expiry, apikey.rate_limited per key and
 * hour); true when this call recorded it (so the caller sends its event), false when it was already
 * there (another Hub or an earlier scan sent it).
 */
export async function firstNotice(db: Kysely<HubDatabase>, keyId: string, notice: string, at: string): Promise<boolean> {
  const r = await whDb(db)
    .insertInto('webhook_notices')
    .values({ key_id: keyId, notice, at })
    .onConflict((oc) => oc.columns(['key_id', 'notice']).doNothing())
    .returning('key_id')
    .executeTakeFirst();
  return r !== undefined;
}

/**
 * Whether any active endpoint (any project) receives `type`: checked before per-key work. Reads
 * through `db`: inside a transaction pass the transaction (a SQLite store has one connection, which
 * the transaction holds).
 */
export async function anyReceiver(db: Kysely<HubDatabase>, type: WebhookEvent): Promise<boolean> {
  const rows = await whDb(db).selectFrom('webhook_endpoints').select('events_json').where('status', '=', 'active').limit(10_000).execute();
  return rows.some((r) => (JSON.parse(r.events_json) as string[]).includes(type));
}

/** The facts about a key every key event carries. */
export async function keyFacts(
  db: Kysely<HubDatabase>,
  keyId: string,
): Promise<{ projectId: string; project: string; env: string; keyId: string; name: string; roles: string[]; expiresAt: string | null } | undefined> {
  const r = await db
    .selectFrom('api_keys')
    .innerJoin('projects', 'projects.id', 'api_keys.project_id')
    .innerJoin('envs', 'envs.id', 'api_keys.env_id')
    .select([
      'api_keys.id',
      'api_keys.name',
      'api_keys.roles_json',
      'api_keys.expires_at',
      'projects.id as pid',
      'projects.name as project',
      'envs.name as env',
    ])
    .where('api_keys.id', '=', keyId)
    .executeTakeFirst();
  if (!r) return undefined;
  return { projectId: r.pid, project: r.project, env: r.env, keyId: r.id, name: r.name, roles: JSON.parse(r.roles_json) as string[], expiresAt: r.expires_at };
}

/** Bridges' usage report entries (the part read here). */
interface ReportedKey {
  keyId: string;
  minutes: Array<{ minute: string; rejected?: Record<string, number> }>;
}

const MAX_RATE_LIMITED_PER_REPORT = 1000;

/**
 * apikey.rate_limited: the first time in an hour that a Bridge reports a key's request refused with
 * 429, once per key and hour across Hubs and Bridges. Call in the report's transaction.
 */
export async function rateLimitedEvents(ctx: HubContext, db: Kysely<HubDatabase>, keys: ReportedKey[]): Promise<void> {
  const first = new Map<string, string>(); // keyId|hour → first minute
  for (const k of keys) {
    for (const m of k.minutes.slice(0, 1440)) {
      const n = m?.rejected?.['429'];
      if (typeof m?.minute !== 'string' || !Number.isInteger(n) || (n as number) < 1) continue;
      const id = `${k.keyId}|${m.minute.slice(0, 13)}:00:00.000Z`;
      const seen = first.get(id);
      if (!seen || m.minute < seen) first.set(id, m.minute);
    }
    if (first.size >= MAX_RATE_LIMITED_PER_REPORT) break;
  }
  if (first.size === 0 || !(await anyReceiver(db, 'apikey.rate_limited'))) return;
  for (const [id, minute] of first) {
    const [keyId, hour] = id.split('|') as [string, string];
    const facts = await keyFacts(db, keyId);
    if (!facts) continue;
    if (!(await firstNotice(db, keyId, `rate_limited:${hour}`, hour))) continue;
    const { projectId: pid, ...data } = facts;
    await enqueueEvent(ctx, db, { projectId: pid, type: 'apikey.rate_limited', data: { ...data, hour, firstRejectedMinute: minute, actor: SYSTEM_ACTOR } });
  }
}
