/**
 * Sends queued webhook deliveries (queue.ts). Every Hub on a store runs one; they share the queue:
 *
 *  - a delivery is claimed by an UPDATE that sets this Hub's lease (`lease_owner`, `lease_until`) only
 *    where no live lease is set, so each attempt is made by exactly one Hub (on PostgreSQL a second
 *    Hub's UPDATE of the same row waits for the first to commit, then finds the lease and skips it);
 *  - a Hub that dies mid-attempt (kill -9) leaves its lease to expire (STK_WEBHOOK_LEASE_MS, longer
 *    than the attempt timeout); any Hub then sends the delivery again, with the same webhook-id;
 *  - a failed attempt is retried with exponential backoff (×4 from STK_WEBHOOK_BACKOFF_BASE_MS, ±20 %
 *    jitter, at most STK_WEBHOOK_BACKOFF_MAX_MS, later if the receiver sent Retry-After) until
 *    STK_WEBHOOK_RETRY_FOR after the event, then marked failed; 410 Gone disables the endpoint;
 *  - at most STK_WEBHOOK_CONCURRENCY attempts per Hub, and a delivery is only claimed while its
 *    endpoint has fewer than STK_WEBHOOK_ENDPOINT_CONCURRENCY live leases.
 *
 * It also sends apikey.expiring (7 days and 1 day before a key expires, once each) and prunes
 * finished deliveries after 7 days.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { HubContext } from '../../context.js';
import { nowIso } from '../../store/store.js';
import { enqueueEvent, firstNotice, keyFacts, SYSTEM_ACTOR, whDb } from './queue.js';
import { sendWebhook, signWebhook, type AttemptResult } from './sender.js';

const DAY = 86400_000;
const FINISHED_RETENTION_MS = 7 * DAY;
const PRUNE_EVERY_MS = 3600_000;
const EXPIRING_SCAN_LIMIT = 1000;
export const USER_AGENT = 'Santokit-Hub-Webhooks/1';

interface Claimed {
  id: string;
  endpoint_id: string;
  payload: string;
  attempts: number;
  created_at: string;
}

/** The delay before retry number `attempts` (1 = after the first attempt), jittered. */
export function backoffMs(attempts: number, base: number, max: number, random = Math.random): number {
  const raw = Math.min(max, base * 4 ** Math.max(0, attempts - 1));
  return Math.min(max, Math.round(raw * (0.8 + 0.4 * random())));
}

export class WebhookWorker {
  readonly owner = `hub-${randomUUID()}`;
  private inFlight = 0;
  private readonly aborts = new Set<AbortController>();
  private readonly claimedIds = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private scanTimer: NodeJS.Timeout | null = null;
  private running = false;
  private again = false;
  private stopped = false;
  private lastPrune = 0;
  private readonly wake = () => this.kick();

  constructor(private readonly ctx: HubContext) {}

  start(): void {
    const s = this.ctx.config.webhooks;
    this.ctx.events.on('webhooks', this.wake);
    this.timer = setInterval(() => this.kick(), s.pollMs);
    this.timer.unref();
    this.scanTimer = setInterval(() => void this.scan(), s.scanMs);
    this.scanTimer.unref();
    this.kick();
    void this.scan();
  }

  /** Stops claiming, aborts attempts in flight and gives their leases back (another Hub, or this one restarted, sends them). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.ctx.events.off('webhooks', this.wake);
    if (this.timer) clearInterval(this.timer);
    if (this.scanTimer) clearInterval(this.scanTimer);
    for (const a of this.aborts) a.abort();
    const ids = [...this.claimedIds];
    if (ids.length) {
      await whDb(this.ctx.db)
        .updateTable('webhook_deliveries')
        .set({ lease_owner: null, lease_until: null })
        .where('id', 'in', ids)
        .where('lease_owner', '=', this.owner)
        .where('status', '=', 'pending')
        .execute()
        .catch(() => {});
    }
  }

  /** Claims and starts what is due (one pass at a time; a kick during a pass runs another). */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void (async () => {
      try {
        do {
          this.again = false;
          await this.pass();
        } while (this.again && !this.stopped);
      } catch (err) {
        if (!this.stopped) this.ctx.log.warn({ err }, 'webhook queue pass failed');
      } finally {
        this.running = false;
      }
    })();
  }

  private async pass(): Promise<void> {
    const free = this.ctx.config.webhooks.concurrency - this.inFlight;
    if (free <= 0) return;
    if (Date.now() - this.lastPrune > PRUNE_EVERY_MS) {
      this.lastPrune = Date.now();
      await this.prune();
    }
    const rows = await this.claim(free);
    if (rows.length === 0) return;
    const endpoints = await whDb(this.ctx.db)
      .selectFrom('webhook_endpoints')
      .select(['id', 'url', 'secret_enc'])
      .where(
        'id',
        'in',
        rows.map((r) => r.endpoint_id),
      )
      .execute();
    const byId = new Map(endpoints.map((e) => [e.id, e]));
    for (const row of rows) {
      const ep = byId.get(row.endpoint_id);
      this.inFlight++;
      this.claimedIds.add(row.id);
      void this.attempt(row, ep)
        .catch((err: unknown) => this.ctx.log.warn({ err, delivery: row.id }, 'webhook attempt bookkeeping failed'))
        .finally(() => {
          this.inFlight--;
          this.claimedIds.delete(row.id);
          this.kick();
        });
    }
    if (rows.length === free) this.again = true;
  }

  /** Leases up to `n` due deliveries to this Hub (see the file comment). */
  private async claim(n: number): Promise<Claimed[]> {
    const s = this.ctx.config.webhooks;
    const now = nowIso();
    const until = new Date(Date.now() + s.leaseMs).toISOString();
    const db = this.ctx.db;
    // due deliveries of active endpoints, at most (limit − live leases) per endpoint
    const candidates = await sql<{ id: string }>`
      with busy as (
        select endpoint_id, count(*) as n from webhook_deliveries
        where status = 'pending' and lease_until is not null and lease_until > ${now}
        group by endpoint_id
      ),
      due as (
        select d.id, d.endpoint_id, d.next_attempt_at from webhook_deliveries d
        join webhook_endpoints e on e.id = d.endpoint_id
        where d.status = 'pending' and d.next_attempt_at <= ${now} and (d.lease_until is null or d.lease_until <= ${now}) and e.status = 'active'
        order by d.next_attempt_at, d.id
        limit 1000
      ),
      ranked as (
        select id, endpoint_id, next_attempt_at, row_number() over (partition by endpoint_id order by next_attempt_at, id) as rn from due
      )
      select ranked.id from ranked left join busy on busy.endpoint_id = ranked.endpoint_id
      where ranked.rn + coalesce(busy.n, 0) <= ${s.endpointConcurrency}
      order by ranked.next_attempt_at, ranked.id
      limit ${n}`.execute(db);
    const ids = candidates.rows.map((r) => r.id);
    if (ids.length === 0) return [];
    // the lease: only where nobody holds a live one (the row lock makes a concurrent claimer re-check)
    return whDb(db)
      .updateTable('webhook_deliveries')
      .set({ lease_owner: this.owner, lease_until: until, attempts: sql<number>`attempts + 1`, last_attempt_at: now })
      .where('id', 'in', ids)
      .where('status', '=', 'pending')
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<=', now)]))
      .returning(['id', 'endpoint_id', 'payload', 'attempts', 'created_at'])
      .execute();
  }

  private async attempt(row: Claimed, ep: { url: string; secret_enc: string } | undefined): Promise<void> {
    const s = this.ctx.config.webhooks;
    if (!ep) return; // the endpoint was removed (its deliveries went with it)
    const ts = Math.floor(Date.now() / 1000);
    const secret = this.ctx.crypto.openWebhookSecret(ep.secret_enc);
    const headers = {
      'webhook-id': row.id,
      'webhook-timestamp': String(ts),
      'webhook-signature': signWebhook(secret, row.id, ts, row.payload),
      'user-agent': USER_AGENT,
    };
    const abort = new AbortController();
    this.aborts.add(abort);
    let r: AttemptResult;
    try {
      r = await sendWebhook(ep.url, headers, row.payload, { policy: s.allow, timeoutMs: s.timeoutMs, signal: abort.signal });
    } finally {
      this.aborts.delete(abort);
    }
    if (abort.signal.aborted) return; // stop() gives the lease back
    await this.record(row, r);
  }

  private async record(row: Claimed, r: AttemptResult): Promise<void> {
    const s = this.ctx.config.webhooks;
    const db = whDb(this.ctx.db);
    const now = nowIso();
    // lease_owner stays: which Hub made the last attempt
    const done = { lease_until: null, last_status: r.status, last_error: r.error };
    if (r.error === null) {
      await db
        .updateTable('webhook_deliveries')
        .set({ ...done, status: 'succeeded', finished_at: now })
        .where('id', '=', row.id)
        .where('status', '=', 'pending')
        .execute();
      return;
    }
    if (r.status === 410) {
      // the receiver said it wants no more: the endpoint stops (Standard Webhooks)
      await db
        .updateTable('webhook_endpoints')
        .set({ status: 'disabled', disabled_reason: `the receiver answered 410 Gone at ${now}` })
        .where('id', '=', row.endpoint_id)
        .execute();
      await db
        .updateTable('webhook_deliveries')
        .set({ ...done, status: 'failed', finished_at: now })
        .where('id', '=', row.id)
        .where('status', '=', 'pending')
        .execute();
      return;
    }
    let delay = backoffMs(row.attempts, s.backoffBaseMs, s.backoffMaxMs);
    if (r.retryAfterMs !== null) delay = Math.min(s.backoffMaxMs, Math.max(delay, r.retryAfterMs));
    const next = Date.now() + delay;
    const giveUp = next > Date.parse(row.created_at) + s.retryForMs;
    await db
      .updateTable('webhook_deliveries')
      .set(giveUp ? { ...done, status: 'failed', finished_at: now } : { ...done, next_attempt_at: new Date(next).toISOString() })
      .where('id', '=', row.id)
      .where('status', '=', 'pending')
      .where('lease_owner', '=', this.owner)
      .execute();
  }

  /** apikey.expiring: keys expiring within 7 days (then within 1 day) of projects with webhooks, once each. */
  async scan(): Promise<void> {
    if (this.stopped) return;
    try {
      const now = Date.now();
      const keys = await whDb(this.ctx.db)
        .selectFrom('api_keys')
        .select(['id', 'expires_at'])
        .where('status', '!=', 'revoked')
        .where('expires_at', '>', new Date(now).toISOString())
        .where('expires_at', '<=', new Date(now + 7 * DAY).toISOString())
        .where((eb) =>
          eb.exists(
            eb
              .selectFrom('webhook_endpoints')
              .select('webhook_endpoints.id')
              .whereRef('webhook_endpoints.project_id', '=', 'api_keys.project_id')
              .where('webhook_endpoints.status', '=', 'active'),
          ),
        )
        .orderBy('expires_at')
        .limit(EXPIRING_SCAN_LIMIT)
        .execute();
      for (const k of keys) {
        if (this.stopped) return;
        const expiresAt = k.expires_at!;
        const within = Date.parse(expiresAt) - now <= DAY ? '1d' : '7d';
        await this.ctx.db.transaction().execute(async (trx) => {
          // a key first seen inside a day gets the 1-day notice only (its 7-day one is moot)
          const sent = await firstNotice(trx, k.id, `expiring:${within}:${expiresAt}`, expiresAt);
          if (within === '1d') await firstNotice(trx, k.id, `expiring:7d:${expiresAt}`, expiresAt);
          if (!sent) return;
          const facts = await keyFacts(trx, k.id);
          if (!facts) return;
          const { projectId, ...data } = facts;
          await enqueueEvent(this.ctx, trx, { projectId, type: 'apikey.expiring', data: { ...data, within, actor: SYSTEM_ACTOR } });
        });
      }
    } catch (err) {
      if (!this.stopped) this.ctx.log.warn({ err }, 'webhook expiry scan failed');
    }
  }

  private async prune(): Promise<void> {
    const db = whDb(this.ctx.db);
    const cutoff = new Date(Date.now() - FINISHED_RETENTION_MS).toISOString();
    await db.deleteFrom('webhook_deliveries').where('status', '!=', 'pending').where('finished_at', '<', cutoff).execute();
    await db
      .deleteFrom('webhook_notices')
      .where('at', '<', new Date(Date.now() - 2 * DAY).toISOString())
      .execute();
  }
}
