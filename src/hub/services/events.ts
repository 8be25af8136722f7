import { PostgresAdapter, sql, type Kysely } from 'kysely';
import type { HubDatabase } from '../store/schema.js';
import type { HubContext } from '../context.js';
import { nowIso } from '../store/store.js';

/**
 * Key of the transaction-scoped advisory lock every change-log writer takes on PostgreSQL. Holding it
 * from the insert to the commit means seqs become visible in order: seq N+1 is only drawn after the
 * transaction that drew N has committed or rolled back, so a reader that sees N+1 and not N knows N
 * will never appear (its transaction rolled back). (Kysely's migration lock uses another key.)
 */
export const CHANGE_LOG_LOCK = 0x53544b43484e; // "STKCHN"

/** LISTEN/NOTIFY channel that wakes every Hub's streams when a change commits (PostgreSQL store). */
export const CHANGES_CHANNEL = 'stk_changes';

/** True when `db` (a Kysely instance or transaction) talks to PostgreSQL. */
export function isPostgres<DB>(db: Kysely<DB>): boolean {
  return db.getExecutor().adapter instanceof PostgresAdapter;
}

/**
 * The change log Bridges follow. Write the row inside the same transaction as the change it
 * describes (as late in it as possible: the lock below is held until commit), then call
 * `notifyChanged(ctx)` after commit so streams wake up and push it.
 */
export async function recordChange(db: Kysely<HubDatabase>, change: { project: string; env: string; kind: string; payload: unknown }): Promise<number> {
  // PostgreSQL: the lock, plus a NOTIFY that PostgreSQL delivers to every Hub when (and only if) this
  // transaction commits, in the same round trip
  if (isPostgres(db)) await sql`select pg_advisory_xact_lock(${sql.lit(CHANGE_LOG_LOCK)}), pg_notify(${CHANGES_CHANNEL}, '')`.execute(db);
  const row = await db
    .insertInto('change_events')
    .values({ ts: nowIso(), project: change.project, env: change.env, kind: change.kind, payload_json: JSON.stringify(change.payload ?? null) })
    .returning('seq')
    .executeTakeFirstOrThrow();
  return Number(row.seq);
}

export function notifyChanged(ctx: HubContext, seq?: number): void {
  ctx.events.emit('changed', seq);
}
