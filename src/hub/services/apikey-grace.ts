/**
 * Rotation that retires the old secret (issue 16 part 5; docs/api-keys.md#rotation-grace-periods).
 *
 * While a rotated key's previous secret is still accepted (its grace period), Bridges count its requests
 * per secret and report them with their usage (`UsageReport.keys[].grace`): the Hub keeps, per key, the
 * requests made with each secret since the rotation, when the previous one was last used and from which
 * client addresses (`api_key_graces`, `api_key_grace_sources`, migration 0012). `stk apikey show` draws them.
 *
 * `--grace auto` lets the Hub end the grace period itself: once the previous secret has had no request
 * for the quiet period (`STK_APIKEY_GRACE_QUIET`, 15 min) — counted from the rotation or its last reported
 * use — and every Bridge that may hold unreported requests has reported since, the previous hash is
 * dropped, synced to every Bridge like any key change and audited (`apikey.grace_end`, actor system). It
 * never outlives 7 days (the deadline set at rotation). Every Hub on a store runs the sweep; the guarded
 * UPDATE makes the end happen once.
 */
import { sql, type ExpressionBuilder, type Kysely } from 'kysely';
import type { UsageReport } from '../../protocol/sync.js';
import type { HubContext } from '../context.js';
import type { HubDatabase } from '../store/schema.js';
import { nowIso } from '../store/store.js';
import type { Actor } from './actor.js';
import { audit } from './audit.js';
import { notifyChanged, recordChange } from './events.js';

/** `api_key_graces` (migration 0012): the grace period of a key's last rotation and its requests per secret */
export interface ApiKeyGracesTable {
  key_id: string;
  rotated_at: string;
  /** the deadline set at rotation (the previous secret's prev_expires_at then; Bridges tag their counts with it) */
  prev_until: string;
  /** 1: `--grace auto` */
  auto: number;
  current_requests: number | string;
  previous_requests: number | string;
  /** the last request counted with the previous secret (a Bridge's clock, ms precision) */
  previous_last_used_at: string | null;
  /**
   * the last request after the rotation that no Bridge could attribute to a secret: reported by a Bridge
   * without per-secret counts, or made before a Bridge applied the rotation. Taken as a possible use of
   * the previous secret.
   */
  unattributed_last_at: string | null;
  ended_at: string | null;
  /** `quiet` (auto: no traffic for the quiet period), `deadline` (auto: the 7-day bound passed), `operator`, `revoked` */
  end_reason: string | null;
}
/** `api_key_grace_sources`: the previous secret's busiest client addresses, at most MAX_GRACE_SOURCES per key */
export interface ApiKeyGraceSourcesTable {
  key_id: string;
  address: string;
  requests: number | string;
  last_seen_at: string;
}
type GraceTables = {
  api_key_graces: ApiKeyGracesTable;
  api_key_grace_sources: ApiKeyGraceSourcesTable;
  usage_reports: { bridge_id: string; reported_at: string };
  sync_bridges: { bridge_id: string; last_seen_at: string; disconnected_at: string | null };
};
const gdb = (db: Kysely<HubDatabase>) => db.withTables<GraceTables>();

export const MAX_GRACE_SOURCES = 20;
/** addresses taken from one report per key (a Bridge sends at most 10) */
const MAX_SOURCES_PER_REPORT = 10;
/**
 * A Bridge last heard of more than this long ago is not waited for: without its Hub a Bridge refuses
 * every key once its max-stale window passes (STK_RELEASE_CACHE_MAX_STALE_SECONDS, default 1 h), so it
 * cannot be serving the previous secret any more.
 */
export const BRIDGE_HOLD_MS = 3600_000;
const SWEEP_LIMIT = 1000;
/** a stopping Bridge's final usage report comes at most this long before its stream closes (HubSync.stop) */
const STOP_REPORT_MS = 2000;
const ADDRESS_RE = /^[0-9A-Fa-f:.]+$/;

const later = (a: string | null, b: string | null) => (a === null ? b : b === null ? a : a > b ? a : b);
const msOf = (s: string | null) => (s ? Date.parse(s) : 0);
/** `col` set to `v` unless it already holds a later time (ISO strings compare in time order) */
const keepLatest = (col: string, v: string) => sql<string>`case when ${sql.ref(col)} is null or ${sql.ref(col)} < ${v} then ${v} else ${sql.ref(col)} end`;

/** The rotate transaction: a new grace period (or none) replaces the last rotation's figures. */
export async function startGrace(trx: Kysely<HubDatabase>, keyId: string, rotatedAt: string, prevUntil: string | null, auto: boolean): Promise<void> {
  const db = gdb(trx);
  await db.deleteFrom('api_key_grace_sources').where('key_id', '=', keyId).execute();
  await db.deleteFrom('api_key_graces').where('key_id', '=', keyId).execute();
  if (prevUntil === null) return;
  await db
    .insertInto('api_key_graces')
    .values({
      key_id: keyId,
      rotated_at: rotatedAt,
      prev_until: prevUntil,
      auto: auto ? 1 : 0,
      current_requests: 0,
      previous_requests: 0,
      previous_last_used_at: null,
      unattributed_last_at: null,
      ended_at: null,
      end_reason: null,
    })
    .execute();
}

/** The revoke transaction: a grace period in progress ends with the key (its figures stay for `show`). */
export async function endGraceOnRevoke(trx: Kysely<HubDatabase>, keyId: string, at: string): Promise<void> {
  await gdb(trx).updateTable('api_key_graces').set({ ended_at: at, end_reason: 'revoked' }).where('key_id', '=', keyId).where('ended_at', 'is', null).execute();
}

/**
 * How far this Hub's clock is ahead of the reporting Bridge's (ms; negative: behind), from the time the
 * report says it was sent (`sentAt`; network delay only adds to it). 0 when the report has no such time
 * (an older Bridge).
 */
export function reportSkewMs(report: UsageReport, nowMs: number): number {
  const sent = typeof report.sentAt === 'string' ? Date.parse(report.sentAt) : NaN;
  const skew = Number.isFinite(sent) ? nowMs - sent : 0;
  // no clock is a week off: a time that far away is not one (and would move dates past what Date holds)
  return Math.abs(skew) <= MAX_SKEW_MS ? skew : 0;
}
const MAX_SKEW_MS = 7 * 24 * 3600_000;

/** A report's times in this Hub's clock (see recordGraceUsage); 0 for no time sent. */
function bridgeClock(report: UsageReport, nowMs: number): (s: unknown) => number {
  const skew = reportSkewMs(report, nowMs);
  return (s: unknown): number => {
    if (typeof s !== 'string') return 0;
    const t = Date.parse(s) + skew;
    return Number.isFinite(t) && t <= nowMs + 60_000 ? t : nowMs;
  };
}

/**
 * A report that says its Bridge could not count some requests (`lostLastAt`: its counter was full, or
 * a report was refused): any of them may have used a previous secret, so every grace period open then
 * takes it as a request no Bridge could attribute (one UPDATE, bounded by the open grace periods).
 */
export async function recordLostUsage(db0: Kysely<HubDatabase>, report: UsageReport, nowMs: number): Promise<void> {
  const t = bridgeClock(report, nowMs)(report.lostLastAt);
  if (!t) return;
  const iso = new Date(t).toISOString();
  await gdb(db0)
    .updateTable('api_key_graces')
    .set({ unattributed_last_at: keepLatest('unattributed_last_at', iso) })
    .where('ended_at', 'is', null)
    .where('rotated_at', '<', iso)
    .where('prev_until', '>', iso)
    .execute();
}

/**
 * Part of a usage report's transaction: the per-secret counts of keys with a grace row. A count tagged
 * with another deadline belongs to an earlier rotation and is not added; requests a Bridge could not
 * attribute (see `unattributed_last_at`) only move that time.
 */
export async function recordGraceUsage(trx: Kysely<HubDatabase>, report: UsageReport, entries: UsageReport['keys'], nowMs: number): Promise<void> {
  if (entries.length === 0) return;
  const db = gdb(trx);
  const rows = new Map<string, { rotated_at: string; prev_until: string; ended_at: string | null }>();
  for (let i = 0; i < entries.length; i += 500) {
    const ids = entries.slice(i, i + 500).map((k) => k.keyId);
    for (const g of await db.selectFrom('api_key_graces').select(['key_id', 'rotated_at', 'prev_until', 'ended_at']).where('key_id', 'in', ids).execute()) {
      rows.set(g.key_id, g);
    }
  }
  if (rows.size === 0) return;
  const perSecret = report.perSecret === true;
  // A Bridge's times in this Hub's clock: moved by the difference between the two clocks the report
  // shows (`sentAt`; network delay only makes them later, the safe side). A time sent that is still no
  // usable time (more than a minute ahead of this Hub, not a time: an older Bridge with a clock ahead)
  // is taken as now: requests were made, and a use dropped would end a grace period still in use.
  const at = bridgeClock(report, nowMs);
  const count = (n: unknown) => (Number.isSafeInteger(n) && (n as number) > 0 ? (n as number) : 0);
  for (const k of entries) {
    const g = rows.get(k.keyId);
    if (!g) continue;
    const rotated = Date.parse(g.rotated_at);
    const block = k.grace && typeof k.grace === 'object' ? k.grace : null;
    const tagged = block !== null && typeof block.prevUntil === 'string' && Date.parse(block.prevUntil) === Date.parse(g.prev_until) ? block : null;
    // requests after the rotation that may have used the previous secret without being counted as such
    let unattributed: number;
    if (!perSecret) unattributed = at(k.lastUsedAt);
    else {
      unattributed = at(k.plainLastUsedAt);
      if (block && !tagged) unattributed = Math.max(unattributed, at(block.currentLastUsedAt), at(block.previousLastUsedAt));
    }
    // only inside the grace period: before it the previous secret was the current one; after it (ended, or
    // past its deadline) a Bridge's entry has no grace any more and every request counts as plain
    if (unattributed <= rotated || unattributed >= Math.min(Date.parse(g.prev_until), g.ended_at ? Date.parse(g.ended_at) : Infinity)) unattributed = 0;
    const current = tagged ? count(tagged.current) : 0;
    const previous = tagged ? count(tagged.previous) : 0;
    const prevLast = tagged ? at(tagged.previousLastUsedAt) : 0;
    if (!current && !previous && !prevLast && !unattributed) continue;
    const prevLastIso = prevLast ? new Date(prevLast).toISOString() : null;
    // the row lock taken here also orders concurrent reports' source updates for this key (PostgreSQL)
    await db
      .updateTable('api_key_graces')
      .set({
        current_requests: sql<number>`current_requests + ${current}`,
        previous_requests: sql<number>`previous_requests + ${previous}`,
        ...(prevLastIso ? { previous_last_used_at: keepLatest('previous_last_used_at', prevLastIso) } : {}),
        ...(unattributed ? { unattributed_last_at: keepLatest('unattributed_last_at', new Date(unattributed).toISOString()) } : {}),
      })
      .where('key_id', '=', k.keyId)
      .where('prev_until', '=', g.prev_until)
      .execute();
    if (!tagged || !Array.isArray(tagged.previousSources) || !prevLastIso) continue;
    let added = 0;
    for (const src of tagged.previousSources.slice(0, MAX_SOURCES_PER_REPORT)) {
      const a = src?.address;
      const n = count(src?.count);
      if (typeof a !== 'string' || !a || a.length > 64 || !ADDRESS_RE.test(a) || !n) continue;
      added++;
      await db
        .insertInto('api_key_grace_sources')
        .values({ key_id: k.keyId, address: a, requests: n, last_seen_at: prevLastIso })
        .onConflict((oc) =>
          oc.columns(['key_id', 'address']).doUpdateSet({
            requests: sql<number>`api_key_grace_sources.requests + excluded.requests`,
            last_seen_at: sql<string>`case when excluded.last_seen_at > api_key_grace_sources.last_seen_at then excluded.last_seen_at else api_key_grace_sources.last_seen_at end`,
          }),
        )
        .execute();
    }
    // bounded: the busiest MAX_GRACE_SOURCES addresses of the key stay
    if (added) {
      await db
        .deleteFrom('api_key_grace_sources')
        .where('key_id', '=', k.keyId)
        .where('address', 'not in', (eb) =>
          eb
            .selectFrom('api_key_grace_sources as s')
            .select('s.address')
            .where('s.key_id', '=', k.keyId)
            .orderBy('s.requests', 'desc')
            .orderBy('s.last_seen_at', 'desc')
            .limit(MAX_GRACE_SOURCES),
        )
        .execute();
    }
  }
}

export interface GraceFigures {
  rotatedAt: string;
  auto: boolean;
  until: string;
  endedAt: string | null;
  endReason: string | null;
  current: { requests: number };
  previous: { requests: number; lastUsedAt: string | null; sources: Array<{ address: string; requests: number; lastSeenAt: string }> };
  unattributedLastAt: string | null;
  quietSince: string;
  /** auto, in progress: the earliest time it can end if the previous secret stays unused */
  endsAfter: string | null;
}

/** The last rotation's grace figures for `apikey show` (null: rotated without a grace period, or never). */
export async function graceFigures(ctx: HubContext, keyId: string): Promise<GraceFigures | null> {
  const db = gdb(ctx.db);
  const [g, sources] = await Promise.all([
    db.selectFrom('api_key_graces').selectAll().where('key_id', '=', keyId).executeTakeFirst(),
    db
      .selectFrom('api_key_grace_sources')
      .select(['address', 'requests', 'last_seen_at'])
      .where('key_id', '=', keyId)
      .orderBy('requests', 'desc')
      .orderBy('last_seen_at', 'desc')
      .limit(MAX_GRACE_SOURCES)
      .execute(),
  ]);
  if (!g) return null;
  const quietSince = later(later(g.rotated_at, g.previous_last_used_at), g.unattributed_last_at)!;
  const auto = g.auto === 1;
  return {
    rotatedAt: g.rotated_at,
    auto,
    until: g.prev_until,
    endedAt: g.ended_at,
    endReason: g.end_reason,
    current: { requests: Number(g.current_requests) },
    previous: {
      requests: Number(g.previous_requests),
      lastUsedAt: g.previous_last_used_at,
      sources: sources.map((s) => ({ address: s.address, requests: Number(s.requests), lastSeenAt: s.last_seen_at })),
    },
    unattributedLastAt: g.unattributed_last_at,
    quietSince,
    endsAfter: auto && !g.ended_at ? new Date(Math.min(msOf(quietSince) + ctx.config.apikeyGraceQuietMs, msOf(g.prev_until))).toISOString() : null,
  };
}

export interface EndableKey {
  id: string;
  name: string;
  roles_json: string;
  prev_expires_at: string;
  project: string;
  env: string;
}

/**
 * Ends a key's grace period now: the previous hash is dropped and the change goes to every Bridge.
 * `guard` (the automatic end) = the activity times the decision was made on: if a report moved them
 * meanwhile, nothing happens. Returns the change seq, or null when nothing changed (ended, rotated or
 * revoked concurrently, or by another Hub).
 */
export async function endGrace(
  ctx: HubContext,
  actor: Actor | null,
  key: EndableKey,
  trigger: 'quiet' | 'deadline' | 'operator',
  guard?: { prevUntil: string; previousLastUsedAt: string | null; unattributedLastAt: string | null },
): Promise<number | null> {
  const now = nowIso();
  const abort = new Error('grace changed concurrently');
  try {
    const seq = await ctx.db.transaction().execute(async (trx) => {
      const db = gdb(trx);
      const same = (eb: ExpressionBuilder<GraceTables, 'api_key_graces'>, col: 'previous_last_used_at' | 'unattributed_last_at', v: string | null) =>
        v === null ? eb(col, 'is', null) : eb(col, '=', v);
      let q = db.updateTable('api_key_graces').set({ ended_at: now, end_reason: trigger }).where('key_id', '=', key.id).where('ended_at', 'is', null);
      if (guard) {
        q = q
          .where('prev_until', '=', guard.prevUntil)
          .where((eb) => same(eb, 'previous_last_used_at', guard.previousLastUsedAt))
          .where((eb) => same(eb, 'unattributed_last_at', guard.unattributedLastAt));
      }
      const g = await q.executeTakeFirst();
      if (guard && Number(g.numUpdatedRows) === 0) return null;
      const r = await trx
        .updateTable('api_keys')
        .set({ prev_secret_hash: null, prev_expires_at: null, grace_auto: null })
        .where('id', '=', key.id)
        .where('status', '=', 'active')
        .where('prev_expires_at', '=', key.prev_expires_at)
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) throw abort; // rotated, revoked or ended meanwhile: undo the grace row too
      const f = await db
        .selectFrom('api_key_graces')
        .select(['rotated_at', 'previous_requests', 'previous_last_used_at', 'unattributed_last_at', 'auto'])
        .where('key_id', '=', key.id)
        .executeTakeFirst();
      const quietSince = f ? later(later(f.rotated_at, f.previous_last_used_at), f.unattributed_last_at) : null;
      const quietMin = Math.round(ctx.config.apikeyGraceQuietMs / 60_000);
      const reason =
        trigger === 'quiet'
          ? `no request with the previous secret for ${quietMin >= 1 ? `${quietMin} min` : `${ctx.config.apikeyGraceQuietMs / 1000} s`} (since ${quietSince}), every Bridge reported`
          : trigger === 'deadline'
            ? `the grace period reached its deadline (${key.prev_expires_at})`
            : 'ended by an operator';
      await audit(
        ctx,
        actor,
        {
          action: 'apikey.grace_end',
          project: key.project,
          env: key.env,
          detail: {
            keyId: key.id,
            name: key.name,
            roles: JSON.parse(key.roles_json) as string[],
            trigger,
            reason,
            previousSecretValidUntil: key.prev_expires_at,
            ...(f
              ? {
                  rotatedAt: f.rotated_at,
                  graceMode: f.auto === 1 ? 'auto' : 'fixed',
                  previousRequests: Number(f.previous_requests),
                  previousLastUsedAt: f.previous_last_used_at,
                  quietSince,
                }
              : {}),
          },
          ...(actor ? {} : { actor: null, actorType: 'system' as const }),
        },
        trx,
      );
      return recordChange(trx, { project: key.project, env: key.env, kind: 'apikey', payload: { keyId: key.id } });
    });
    if (seq !== null) notifyChanged(ctx, seq);
    return seq;
  } catch (e) {
    if (e === abort) return null;
    throw e;
  }
}

/** How often the sweep runs for a quiet period: a quarter of it, between 250 ms and 1 min. */
export const sweepEveryMs = (quietMs: number) => Math.min(60_000, Math.max(250, Math.floor(quietMs / 4)));

/**
 * Finds the `--grace auto` periods to end (every Hub runs one; see the file comment). The rule, per key:
 * quietSince = the latest of the rotation, the previous secret's last reported request and the last
 * request no Bridge could attribute to a secret; it ends when now ≥ quietSince + quiet AND every Bridge
 * heard of within the last hour (BRIDGE_HOLD_MS: connected, or gone less than an hour ago) has reported
 * usage at or after quietSince + quiet (a Bridge that has not reported since may hold uncounted requests),
 * except a Bridge that stopped (its final report came as it closed its stream).
 * A suspended key is left alone (its requests are refused, so nothing tells whether the previous
 * secret is still in use). Past the deadline (7 days, or the key's expiry) it ends regardless.
 */
export class GraceSweeper {
  #timer: NodeJS.Timeout | null = null;
  #running = false;
  #stopped = false;
  constructor(private readonly ctx: HubContext) {}

  start(): void {
    this.#timer = setInterval(() => void this.sweep(), sweepEveryMs(this.ctx.config.apikeyGraceQuietMs));
    this.#timer.unref();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
  }

  async sweep(): Promise<number> {
    if (this.#running || this.#stopped) return 0;
    this.#running = true;
    try {
      return await this.#sweep();
    } catch (err) {
      if (!this.#stopped) this.ctx.log.warn({ err }, 'API key grace sweep failed');
      return 0;
    } finally {
      this.#running = false;
    }
  }

  async #sweep(): Promise<number> {
    const ctx = this.ctx;
    const quiet = ctx.config.apikeyGraceQuietMs;
    const db = gdb(ctx.db);
    // the common case, no --grace auto in progress: one small query and nothing more
    const any = await db.selectFrom('api_key_graces').select('key_id').where('auto', '=', 1).where('ended_at', 'is', null).limit(1).executeTakeFirst();
    if (!any) return 0;
    const nowMs = Date.now();
    // first what the Bridges reported: a report's counts commit before its time is recorded, so the
    // grace rows read afterwards include everything these times cover
    const bridges = await db
      .selectFrom('sync_bridges')
      .select(['bridge_id', 'disconnected_at'])
      .where('last_seen_at', '>=', new Date(nowMs - BRIDGE_HOLD_MS).toISOString())
      .execute();
    let coveredTo = Infinity;
    if (bridges.length) {
      const reported = new Map<string, string>();
      for (let i = 0; i < bridges.length; i += 500) {
        for (const r of await db
          .selectFrom('usage_reports')
          .select(['bridge_id', 'reported_at'])
          .where(
            'bridge_id',
            'in',
            bridges.slice(i, i + 500).map((b) => b.bridge_id),
          )
          .execute()) {
          reported.set(r.bridge_id, r.reported_at);
        }
      }
      for (const b of bridges) {
        const at = msOf(reported.get(b.bridge_id) ?? null);
        // a Bridge that stopped: it reports its last counts just before closing its stream (stop() waits
        // at most 2 s), after it stopped serving; nothing more can come from it
        if (b.disconnected_at && at >= msOf(b.disconnected_at) - STOP_REPORT_MS) continue;
        coveredTo = Math.min(coveredTo, at);
      }
    }
    // quiet since at or before this: quiet for long enough, and covered by every Bridge's reports
    const cutoff = new Date(Math.min(nowMs, coveredTo) - quiet).toISOString();
    const nowAt = new Date(nowMs).toISOString();
    const rows = await ctx.db
      .withTables<GraceTables>()
      .selectFrom('api_key_graces as g')
      .innerJoin('api_keys as k', 'k.id', 'g.key_id')
      .innerJoin('projects as p', 'p.id', 'k.project_id')
      .innerJoin('envs as e', 'e.id', 'k.env_id')
      .select([
        'k.id',
        'k.name',
        'k.roles_json',
        'k.prev_expires_at',
        'k.suspended_at',
        'p.name as project',
        'e.name as env',
        'g.rotated_at',
        'g.prev_until',
        'g.previous_last_used_at',
        'g.unattributed_last_at',
      ])
      .where('g.auto', '=', 1)
      .where('g.ended_at', 'is', null)
      .where('k.grace_auto', '=', 1)
      .where('k.status', '=', 'active')
      .where('k.prev_expires_at', 'is not', null)
      // only periods that can end now, so the batch is never filled by ones that cannot (still in use,
      // suspended): past the deadline, or quiet up to the cut-off (the rule below, on ISO times)
      .where((eb) =>
        eb.or([
          eb('k.prev_expires_at', '<=', nowAt),
          eb.and([
            eb('k.suspended_at', 'is', null),
            eb('g.rotated_at', '<=', cutoff),
            eb.or([eb('g.previous_last_used_at', 'is', null), eb('g.previous_last_used_at', '<=', cutoff)]),
            eb.or([eb('g.unattributed_last_at', 'is', null), eb('g.unattributed_last_at', '<=', cutoff)]),
          ]),
        ]),
      )
      .orderBy('g.rotated_at')
      .limit(SWEEP_LIMIT)
      .execute();
    let ended = 0;
    for (const r of rows) {
      if (this.#stopped) break;
      const deadline = msOf(r.prev_expires_at) <= nowMs;
      const quietSince = msOf(later(later(r.rotated_at, r.previous_last_used_at), r.unattributed_last_at));
      const quietEnough = !r.suspended_at && nowMs >= quietSince + quiet && coveredTo >= quietSince + quiet;
      if (!deadline && !quietEnough) continue;
      const key: EndableKey = { id: r.id, name: r.name, roles_json: r.roles_json, prev_expires_at: r.prev_expires_at!, project: r.project, env: r.env };
      const seq = await endGrace(ctx, null, key, deadline ? 'deadline' : 'quiet', {
        prevUntil: r.prev_until,
        previousLastUsedAt: r.previous_last_used_at,
        unattributedLastAt: r.unattributed_last_at,
      });
      if (seq !== null) {
        ended++;
        ctx.log.info({ keyId: r.id, project: r.project, env: r.env, trigger: deadline ? 'deadline' : 'quiet' }, 'API key grace period ended automatically');
      }
    }
    return ended;
  }
}
