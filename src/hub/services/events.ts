import type { Kysely } from 'kysely';
import type { HubDatabase } from '../store/schema.js';
import type { HubContext } from '../context.js';
import { nowIso } from '../store/store.js';

/**
 * The change log Bridges follow. Write the row inside the same transaction as the change it
 * describes, then call `notifyChanged(ctx)` after commit so streams wake up and push it.
 */
export async function recordChange(
  db: Kysely<HubDatabase>,
  change: { project: string; env: string; kind: string; payload: unknown },
): Promise<number> {
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
