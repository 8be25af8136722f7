import { sql, type Selectable } from 'kysely';
import type { HubContext } from '../../context.js';
import { nowIso } from '../../store/store.js';

/**
 * Cluster presence: the shared `sync_bridges` table, one row per Bridge, written by the Hub it
 * streams from (on connect, on every ack, refreshed each heartbeat, on disconnect) with the highest
 * seq the Bridge applied. Other Hubs read it to know whom to wait for, and learn of acks through
 * NOTIFY on ACK_CHANNEL (PostgreSQL) or by reading the rows.
 */

export const ACK_CHANNEL = 'stk_acks';
/** rows of Bridges gone for longer than this are deleted */
const PRESENCE_KEEP_MS = 7 * 24 * 3600_000;

/** `sync_bridges` (migration 0003) */
interface SyncBridgesTable {
  bridge_id: string;
  hub_id: string;
  /** highest change seq the Bridge applied (it applies in order: everything below is applied too) */
  acked_seq: number;
  address: string | null;
  connected_at: string;
  last_seen_at: string;
  /** set when the Bridge closed its stream; null while connected (or while its Hub is gone) */
  disconnected_at: string | null;
}
export type PresenceRow = Selectable<SyncBridgesTable>;

export class Presence {
  readonly #ctx: HubContext;
  readonly #hubId: string;
  /** acks not yet written (coalesced per Bridge) */
  readonly #ackWrites = new Map<string, number>();
  #ackWriting: Promise<void> | null = null;
  /** writes in flight (awaited on close, before the store goes away) */
  readonly #writes = new Set<Promise<unknown>>();
  #lastCleanup = 0;
  #closed = false;

  constructor(ctx: HubContext, hubId: string) {
    this.#ctx = ctx;
    this.#hubId = hubId;
  }

  #db() {
    return this.#ctx.db.withTables<{ sync_bridges: SyncBridgesTable }>();
  }

  /** Waits for the writes in flight (e.g. a Bridge that just left: other Hubs must not wait for it). */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#ackWriting?.catch(() => {});
    await Promise.allSettled([...this.#writes]);
  }

  async connect(bridgeId: string, address: string | null, connectedAt: string): Promise<void> {
    try {
      await this.#db()
        .insertInto('sync_bridges')
        .values({
          bridge_id: bridgeId,
          hub_id: this.#hubId,
          acked_seq: 0,
          address,
          connected_at: connectedAt,
          last_seen_at: connectedAt,
          disconnected_at: null,
        })
        .onConflict((oc) =>
          oc.column('bridge_id').doUpdateSet({ hub_id: this.#hubId, address, connected_at: connectedAt, last_seen_at: connectedAt, disconnected_at: null }),
        )
        .execute();
    } catch (err) {
      this.#ctx.log.warn({ err: (err as Error).message, bridgeId }, 'sync: recording Bridge presence failed (other Hubs may not wait for it)');
    }
  }

  /** The Bridge went away: only the row of that very session (a reconnect that replaced it is left alone). */
  disconnect(bridgeId: string, connectedAt: string): void {
    if (this.#closed) return;
    const p = this.#db()
      .updateTable('sync_bridges')
      .set({ disconnected_at: nowIso() })
      .where('bridge_id', '=', bridgeId)
      .where('hub_id', '=', this.#hubId)
      .where('connected_at', '=', connectedAt)
      .where('disconnected_at', 'is', null)
      .execute()
      .catch((err: unknown) => {
        if (!this.#closed) this.#ctx.log.warn({ err: (err as Error).message, bridgeId }, 'sync: recording a Bridge disconnect failed');
      });
    this.#writes.add(p);
    void p.finally(() => this.#writes.delete(p));
  }

  /** Live Bridges of OTHER Hubs: seen within config.sync.presenceStaleMs and not closed by the Bridge. */
  async liveOfOtherHubs(): Promise<PresenceRow[]> {
    const cutoff = new Date(Date.now() - this.#ctx.config.sync.presenceStaleMs).toISOString();
    return this.#db()
      .selectFrom('sync_bridges')
      .selectAll()
      .where('disconnected_at', 'is', null)
      .where('last_seen_at', '>', cutoff)
      .where('hub_id', '!=', this.#hubId)
      .orderBy('bridge_id')
      .execute();
  }

  async ackedSeqs(ids: string[]): Promise<Array<{ bridge_id: string; acked_seq: number }>> {
    return this.#db().selectFrom('sync_bridges').select(['bridge_id', 'acked_seq']).where('bridge_id', 'in', ids).execute();
  }

  /**
   * Each heartbeat: this Hub's Bridges are still here. Once an hour, rows gone for a week are
   * deleted; returns true then (the caller forgets what it remembers of Bridges gone everywhere).
   */
  async refresh(localIds: string[]): Promise<boolean> {
    if (this.#closed) return false;
    const db = this.#db();
    try {
      const now = nowIso();
      for (let i = 0; i < localIds.length; i += 500) {
        await db
          .updateTable('sync_bridges')
          .set({ last_seen_at: now, disconnected_at: null })
          .where('hub_id', '=', this.#hubId)
          .where('bridge_id', 'in', localIds.slice(i, i + 500))
          .execute();
      }
      if (Date.now() - this.#lastCleanup > 3600_000) {
        this.#lastCleanup = Date.now();
        await db
          .deleteFrom('sync_bridges')
          .where('last_seen_at', '<', new Date(Date.now() - PRESENCE_KEEP_MS).toISOString())
          .execute();
        return true;
      }
    } catch (err) {
      if (!this.#closed) this.#ctx.log.warn({ err: (err as Error).message }, 'sync: refreshing Bridge presence failed');
    }
    return false;
  }

  /** Records an ack (coalesced per Bridge, written in the background). */
  queueAck(bridgeId: string, seq: number): void {
    if (seq > (this.#ackWrites.get(bridgeId) ?? 0)) this.#ackWrites.set(bridgeId, seq);
    if (!this.#ackWriting) {
      this.#ackWriting = this.#flushAcks().finally(() => {
        this.#ackWriting = null;
      });
    }
  }

  /** Writes acks to sync_bridges and, on PostgreSQL, tells the other Hubs in the same statement. */
  async #flushAcks(): Promise<void> {
    const db = this.#ctx.db;
    const pg = Boolean(this.#ctx.store.pgUrl);
    while (this.#ackWrites.size > 0) {
      const batch = [...this.#ackWrites];
      this.#ackWrites.clear();
      const now = nowIso();
      await Promise.all(
        batch.map(async ([id, seq]) => {
          try {
            if (pg) {
              const payload = JSON.stringify({ h: this.#hubId, b: id, s: seq });
              await sql`with u as (update sync_bridges set acked_seq = greatest(acked_seq, ${seq}::bigint), last_seen_at = ${now} where bridge_id = ${id} returning 1)
                select pg_notify(${ACK_CHANNEL}, ${payload})`.execute(db);
            } else {
              await this.#db()
                .updateTable('sync_bridges')
                .set({ acked_seq: sql<number>`case when acked_seq < ${seq} then ${seq} else acked_seq end`, last_seen_at: now })
                .where('bridge_id', '=', id)
                .execute();
            }
          } catch (err) {
            if (!this.#closed)
              this.#ctx.log.warn({ err: (err as Error).message, bridgeId: id }, 'sync: recording an ack failed (other Hubs may report this Bridge as lagging)');
          }
        }),
      );
    }
  }
}
