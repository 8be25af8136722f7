import type { Actor } from './actor.js';
import { ulid } from '../../common/ulid.js';
import type { Kysely } from 'kysely';
import type { HubDatabase } from '../store/schema.js';
import type { HubContext } from '../context.js';
import type { Operator } from './auth.js';
import { nowIso } from '../store/store.js';
import { eventsForAudit } from './webhooks/queue.js';

export interface AuditEntry {
  action: string; // domain.verb, e.g. apikey.create
  project?: string | null;
  env?: string | null;
  /** what changed: ids, names, roles, hashes of inputs. Never a secret, token, password or URL. */
  detail?: Record<string, unknown>;
  /** who did it (default: the actor's operator; null: nobody, e.g. a system entry) */
  actor?: Operator | null;
  actorType?: 'operator' | 'system' | 'bridge' | 'anonymous';
  actorEmail?: string | null;
}

/** Appends one audit row. Pass `db` = the transaction when the change is transactional. */
export async function audit(ctx: HubContext, actor: Actor | null, e: AuditEntry, db: Kysely<HubDatabase> = ctx.db) {
  const who = e.actor === undefined ? (actor?.operator ?? null) : e.actor;
  const row = {
    id: ulid(),
    ts: nowIso(),
    actor_id: who?.id ?? null,
    actor_type: e.actorType ?? (who ? 'operator' : 'system'),
    actor_email: who?.email ?? e.actorEmail ?? null,
    action: e.action,
    project: e.project ?? null,
    env: e.env ?? null,
    request_id: actor?.requestId ?? null,
    ip: actor?.ip ?? null,
    detail_json: JSON.stringify(e.detail ?? {}),
  } as const;
  await db.insertInto('audit_log').values(row).execute();
  // an audited key change is a webhook event: queued in the same transaction (webhooks/queue.ts)
  await eventsForAudit(ctx, db, {
    id: row.id,
    ts: row.ts,
    action: row.action,
    project: row.project,
    env: row.env,
    detail: e.detail ?? {},
    actor: { type: row.actor_type, id: row.actor_id, email: row.actor_email },
  });
}

/** Deletes rows older than STK_AUDIT_RETENTION_DAYS. */
export async function pruneAudit(ctx: HubContext): Promise<number> {
  const cutoff = new Date(Date.now() - ctx.config.auditRetentionDays * 86400_000).toISOString();
  const r = await ctx.db.deleteFrom('audit_log').where('ts', '<', cutoff).executeTakeFirst();
  return Number(r.numDeletedRows ?? 0);
}
