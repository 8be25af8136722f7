import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { sql, type Selectable } from 'kysely';
import type { ReleaseIR } from '../../protocol/release.js';
import type { SyncEnvState, SyncKeyRecord, SyncMessage } from '../../protocol/sync.js';
import { badRequest, conflict } from '../../protocol/errors.js';
import type { HubContext } from '../context.js';
import type { ApiKeysTable } from '../store/schema.js';
import { nowIso } from '../store/store.js';
import { DEFAULT_ORG } from './auth.js';
import { connectionUrls } from './connections.js';
import { CHANGES_CHANNEL } from './events.js';
import { currentRelease } from './releases.js';

/**
 * The Hub side of the Bridge sync: snapshots, the change stream, acknowledgements and the
 * "wait until every Bridge applied seq N" primitive that makes revoke (and apply, promote, rollback,
 * connection changes) read-your-writes.
 *
 * Sequence numbers live in the store (`change_events.seq`), so a change committed by ANOTHER Hub
 * process on the same PostgreSQL store reaches this Hub's streams too: through LISTEN/NOTIFY
 * (channel `stk_changes`, notified inside the writing transaction, so delivered exactly at commit)
 * when the store is PostgreSQL, and through a slow poll in every case.
 *
 * Order: on PostgreSQL every writer takes one transaction-scoped advisory lock before drawing a seq
 * (`recordChange`), so seqs commit in order and a gap seen by a reader is a rolled-back seq that never
 * appears. A stream therefore waits only briefly at a gap (GAP_WAIT_MS, for writers that do not take
 * the lock), then moves on and keeps watching the missing seqs for LATE_WATCH_MS. Messages carry the
 * entity's CURRENT state (read when the message is built), so a late or repeated delivery never moves
 * a Bridge backwards.
 *
 * Cluster-wide acks: every Hub records the Bridges streaming from it in the shared `sync_bridges`
 * table (on connect, on every ack, refreshed each heartbeat, on disconnect) with the highest seq each
 * one applied. A waiting Hub waits for every Bridge connected to ANY Hub: its own (in memory) plus the
 * rows of other Hubs seen within PRESENCE_STALE_MS and not closed by the Bridge. It learns about acks
 * received by other Hubs through NOTIFY on `stk_acks` and, as a fallback, by polling those rows
 * every ACK_POLL_MS while it waits. A Hub that stops or crashes leaves its rows in place: its Bridges
 * keep being waited for until they reconnect to a Hub (and ack there) or their rows go stale, because
 * until then they serve what they had. On SQLite there is one Hub and the same code runs unchanged.
 */
const num = (v: string | undefined, d: number) => {
  const n = Number(v);
  return v !== undefined && v !== '' && Number.isFinite(n) && n >= 0 ? n : d;
};
export const HEARTBEAT_MS = num(process.env.STK_SYNC_HEARTBEAT_MS, 10_000);
/** a Bridge row not refreshed for this long no longer counts (its Hub is gone and it did not come back) */
const PRESENCE_STALE_MS = num(process.env.STK_SYNC_PRESENCE_STALE_MS, HEARTBEAT_MS * 3);
const GAP_WAIT_MS = num(process.env.STK_SYNC_GAP_WAIT_MS, 250);
const LATE_WATCH_MS = 10 * 60_000;
const POLL_MS = num(process.env.STK_SYNC_POLL_MS, 2000);
const ACK_POLL_MS = 200;
const PAGE = 500;
const KEY_CHUNK = 1000;
const GAP_LOOKBACK = 1000;
const ACKED_KEEP = 5000;
const MESSAGE_CACHE = 256;
const ACK_CHANNEL = 'stk_acks';
/** rows of Bridges gone for longer than this are deleted */
const PRESENCE_KEEP_MS = 7 * 24 * 3600_000;

type ChangeRow = { seq: number; ts: string; project: string; env: string; kind: string; payload_json: string };
type DistOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
type ChangeBody = DistOmit<Extract<SyncMessage, { type: 'change' }>, 'cursor'>;

/** `sync_bridges` (migration 0003): one row per Bridge, written by the Hub it streams from. */
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
const presenceDb = (ctx: HubContext) => ctx.db.withTables<{ sync_bridges: SyncBridgesTable }>();

export interface AckResult {
  /** Bridges connected (to any Hub) when the change committed */
  bridges: number;
  acked: number;
  /** ids of the Bridges that did not acknowledge within the bound */
  lagging: string[];
}

/** A Bridge as the cluster sees it (`GET /internal/sync/cluster`). */
export interface ClusterBridge {
  bridgeId: string;
  hubId: string;
  ackedSeq: number;
  address: string | null;
  connectedAt: string;
  lastSeenAt: string;
  /** this Hub's own Bridge */
  local: boolean;
}

/** What a stream writes to: one NDJSON line per message. */
export interface StreamSink {
  write(line: string): Promise<void>;
  end(): void;
  readonly closed: boolean;
  /** called once when the peer goes away (so a gone Bridge stops counting at once) */
  onClose?(fn: () => void): void;
}

interface BridgeState {
  id: string;
  session: StreamSession | null;
  acked: Set<number>;
  /** the snapshot this Bridge applied: covers every seq ≤ seq except the gaps seen when it was taken */
  snapshot: { seq: number; gaps: Set<number> } | null;
  pendingSnapshots: Map<number, Set<number>>;
  address: string | null;
  connectedAt: string;
  lastAckAt: string | null;
}

interface Waiter {
  seq: number;
  /** Bridge ids: this Hub's connected ones and the live ones of other Hubs */
  targets: string[];
  /** the subset that streams from other Hubs (polled while the wait lasts) */
  remote: string[];
  done: (r: AckResult) => void;
  check: () => void;
}

// ---------- data loading ----------

export function toKeyRecord(row: ApiKeysTable, project: string, env: string): SyncKeyRecord {
  return {
    keyId: row.id,
    project,
    env,
    name: row.name,
    roles: JSON.parse(row.roles_json) as string[],
    secretHash: row.secret_hash,
    prevSecretHash: row.prev_secret_hash,
    prevExpiresAt: row.prev_expires_at,
    status: row.status,
    expiresAt: row.expires_at,
    rateLimitPerMin: row.rate_limit_per_min,
  };
}

/** One key's sync record (any status), or null when it no longer exists. */
export async function loadKeyRecord(ctx: HubContext, keyId: string): Promise<SyncKeyRecord | null> {
  const row = await ctx.db
    .selectFrom('api_keys')
    .innerJoin('projects', 'projects.id', 'api_keys.project_id')
    .innerJoin('envs', 'envs.id', 'api_keys.env_id')
    .selectAll('api_keys')
    .select(['projects.name as project_name', 'envs.name as env_name'])
    .where('api_keys.id', '=', keyId)
    .executeTakeFirst();
  return row ? toKeyRecord(row, row.project_name, row.env_name) : null;
}

/** The env's current release as a ReleaseIR (null when nothing was applied there yet). */
export async function loadCurrentRelease(ctx: HubContext, envId: string): Promise<ReleaseIR | null> {
  return (await currentRelease(ctx, envId)) ?? null;
}

async function findEnvId(ctx: HubContext, project: string, env: string): Promise<string | undefined> {
  const row = await ctx.db
    .selectFrom('envs')
    .innerJoin('projects', 'projects.id', 'envs.project_id')
    .innerJoin('orgs', 'orgs.id', 'projects.org_id')
    .select('envs.id')
    .where('orgs.name', '=', DEFAULT_ORG)
    .where('projects.name', '=', project)
    .where('envs.name', '=', env)
    .executeTakeFirst();
  return row?.id;
}

export async function loadEnvState(ctx: HubContext, project: string, env: string, envId?: string): Promise<SyncEnvState> {
  const id = envId ?? (await findEnvId(ctx, project, env));
  if (!id) return { project, env, release: null, connections: {} };
  const [release, connections] = await Promise.all([loadCurrentRelease(ctx, id), connectionUrls(ctx, id)]);
  return { project, env, release, connections };
}

async function maxSeq(ctx: HubContext): Promise<number> {
  const r = await ctx.db.selectFrom('change_events').select((eb) => eb.fn.max('seq').as('m')).executeTakeFirst();
  return Number(r?.m ?? 0);
}

/** Seqs in (upTo - GAP_LOOKBACK, upTo] with no row: possibly still-uncommitted changes. */
async function gapsBelow(ctx: HubContext, upTo: number): Promise<Set<number>> {
  const from = Math.max(0, upTo - GAP_LOOKBACK);
  const rows = await ctx.db.selectFrom('change_events').select('seq').where('seq', '>', from).where('seq', '<=', upTo).execute();
  const present = new Set(rows.map((r) => Number(r.seq)));
  const gaps = new Set<number>();
  for (let s = from + 1; s <= upTo; s++) if (!present.has(s)) gaps.add(s);
  return gaps;
}

/** Every env's state and every key, as one object (the `/internal/sync/snapshot` body). */
export async function buildSnapshot(ctx: HubContext) {
  const seq = await maxSeq(ctx);
  const envs = await allEnvStates(ctx);
  const keys: SyncKeyRecord[] = [];
  for await (const chunk of keyChunks(ctx)) keys.push(...chunk);
  return { seq, pepper: ctx.crypto.apiKeyPepper.toString('base64'), envs, keys };
}

async function allEnvStates(ctx: HubContext): Promise<SyncEnvState[]> {
  const rows = await ctx.db
    .selectFrom('envs')
    .innerJoin('projects', 'projects.id', 'envs.project_id')
    .innerJoin('orgs', 'orgs.id', 'projects.org_id')
    .select(['envs.id', 'envs.name', 'projects.name as project_name'])
    .where('orgs.name', '=', DEFAULT_ORG)
    .orderBy('projects.name')
    .orderBy('envs.name')
    .execute();
  const out: SyncEnvState[] = [];
  for (const r of rows) out.push(await loadEnvState(ctx, r.project_name, r.name, r.id));
  return out;
}

async function* keyChunks(ctx: HubContext): AsyncGenerator<SyncKeyRecord[]> {
  let after = '';
  for (;;) {
    const rows = await ctx.db
      .selectFrom('api_keys')
      .innerJoin('projects', 'projects.id', 'api_keys.project_id')
      .innerJoin('envs', 'envs.id', 'api_keys.env_id')
      .selectAll('api_keys')
      .select(['projects.name as project_name', 'envs.name as env_name'])
      .where('api_keys.id', '>', after)
      .orderBy('api_keys.id')
      .limit(KEY_CHUNK)
      .execute();
    if (rows.length === 0) return;
    yield rows.map((r) => toKeyRecord(r, r.project_name, r.env_name));
    after = rows[rows.length - 1]!.id;
    if (rows.length < KEY_CHUNK) return;
  }
}

// ---------- the per-Hub sync state ----------

const instances = new WeakMap<HubContext, SyncHub>();

/** The sync state of this Hub process (created on first use). */
export function getSync(ctx: HubContext): SyncHub {
  let s = instances.get(ctx);
  if (!s) {
    s = new SyncHub(ctx);
    instances.set(ctx, s);
  }
  return s;
}

/** After a committed change: wake the streams (notifyChanged does that) and wait for the acks. */
export async function waitForBridges(ctx: HubContext, seq: number, timeoutMs = ctx.config.ackTimeoutMs): Promise<AckResult> {
  return getSync(ctx).waitForAcks(seq, timeoutMs);
}

export class SyncHub {
  readonly hubId = randomBytes(8).toString('hex');
  readonly #ctx: HubContext;
  readonly #bridges = new Map<string, BridgeState>();
  readonly #waiters = new Set<Waiter>();
  readonly #cache = new Map<number, ChangeBody>();
  /** highest seq each Bridge is known to have applied, whichever Hub it acked to */
  readonly #hwm = new Map<string, number>();
  /** acks not yet written to sync_bridges (coalesced per Bridge) */
  readonly #ackWrites = new Map<string, number>();
  #ackWriting: Promise<void> | null = null;
  /** presence writes in flight (awaited on close, before the store goes away) */
  readonly #writes = new Set<Promise<unknown>>();
  #poll: NodeJS.Timeout;
  #presenceTimer: NodeJS.Timeout;
  #ackPoll: NodeJS.Timeout | null = null;
  #lastCleanup = 0;
  #closed = false;
  #pg: { end(): Promise<void> } | null = null;
  #pgRetry: NodeJS.Timeout | null = null;

  constructor(ctx: HubContext) {
    this.#ctx = ctx;
    const onChanged = () => this.wake();
    ctx.events.on('changed', onChanged);
    this.#poll = setInterval(() => this.wake(), POLL_MS);
    this.#poll.unref();
    this.#presenceTimer = setInterval(() => void this.#refreshPresence(), HEARTBEAT_MS);
    this.#presenceTimer.unref();
    ctx.onClose.push(async () => {
      ctx.events.off('changed', onChanged);
      await this.close();
    });
    if (ctx.store.pgUrl) void this.#listen(ctx.store.pgUrl);
  }

  /**
   * Ends every stream (Hub shutdown): Bridges reconnect to another Hub or retry this one. Their
   * presence rows stay: other Hubs keep waiting for them until they come back or go stale.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#poll);
    clearInterval(this.#presenceTimer);
    if (this.#ackPoll) clearInterval(this.#ackPoll);
    if (this.#pgRetry) clearTimeout(this.#pgRetry);
    for (const b of this.#bridges.values()) b.session?.close('hub');
    for (const w of [...this.#waiters]) w.check();
    await this.#ackWriting?.catch(() => {});
    await Promise.allSettled([...this.#writes]); // e.g. a Bridge that just left: other Hubs must not wait for it
    await this.#pg?.end().catch(() => {});
    this.#pg = null;
  }

  wake(): void {
    for (const b of this.#bridges.values()) b.session?.pump();
  }

  /** Bridges with an open stream to this Hub. */
  connected(): Array<{ bridgeId: string; address: string | null; connectedAt: string; cursor: number; lastAckAt: string | null }> {
    const out = [];
    for (const b of this.#bridges.values()) {
      if (b.session && !b.session.closed) {
        out.push({ bridgeId: b.id, address: b.address, connectedAt: b.connectedAt, cursor: b.session.cursor, lastAckAt: b.lastAckAt });
      }
    }
    return out;
  }

  #localIds(): Set<string> {
    const ids = new Set<string>();
    for (const b of this.#bridges.values()) if (b.session && !b.session.closed) ids.add(b.id);
    return ids;
  }

  /** Live Bridges of OTHER Hubs: seen within PRESENCE_STALE_MS and not closed by the Bridge. */
  async #remoteLive(): Promise<Array<Selectable<SyncBridgesTable>>> {
    const cutoff = new Date(Date.now() - PRESENCE_STALE_MS).toISOString();
    const rows = await presenceDb(this.#ctx)
      .selectFrom('sync_bridges')
      .selectAll()
      .where('disconnected_at', 'is', null)
      .where('last_seen_at', '>', cutoff)
      .where('hub_id', '!=', this.hubId)
      .orderBy('bridge_id')
      .execute();
    for (const r of rows) this.#noteHwm(r.bridge_id, Number(r.acked_seq));
    return rows;
  }

  /**
   * Every Bridge that counts for a wait: the live rows of other Hubs, plus this Hub's connected ones
   * (known in memory; read AFTER the rows, so a Bridge that moves here meanwhile is in one or the other).
   */
  async cluster(): Promise<ClusterBridge[]> {
    const rows = await this.#remoteLive();
    const local = this.#localIds();
    const out: ClusterBridge[] = [];
    for (const b of this.#bridges.values()) {
      if (!local.has(b.id)) continue;
      out.push({ bridgeId: b.id, hubId: this.hubId, ackedSeq: this.#hwm.get(b.id) ?? 0, address: b.address, connectedAt: b.connectedAt, lastSeenAt: b.lastAckAt ?? b.connectedAt, local: true });
    }
    for (const r of rows) {
      if (local.has(r.bridge_id)) continue;
      out.push({ bridgeId: r.bridge_id, hubId: r.hub_id, ackedSeq: this.#hwm.get(r.bridge_id) ?? 0, address: r.address, connectedAt: r.connected_at, lastSeenAt: r.last_seen_at, local: false });
    }
    return out;
  }

  /**
   * Opens a stream for a Bridge. `since` = the cursor the Bridge last saw; absent, invalid or not
   * resumable → the stream starts with a full snapshot.
   */
  async openStream(bridgeId: string, since: number | undefined, sink: StreamSink, address: string | null, sessionId: string): Promise<void> {
    if (this.#closed) {
      sink.end();
      return;
    }
    let b = this.#bridges.get(bridgeId);
    if (!b) {
      b = { id: bridgeId, session: null, acked: new Set(), snapshot: null, pendingSnapshots: new Map(), address, connectedAt: nowIso(), lastAckAt: null };
      this.#bridges.set(bridgeId, b);
    }
    b.session?.close('hub'); // a reconnect replaces a half-open stream
    b.address = address;
    b.connectedAt = nowIso();
    const session = new StreamSession(this.#ctx, this, b, sink, b.connectedAt, sessionId);
    b.session = session;
    this.#forgetStale();
    // recorded BEFORE the snapshot or resume point is read: a Hub that commits a change and then
    // does not see this row has committed before that read, so this stream delivers the change
    await this.#presenceConnect(b);
    await session.start(since);
  }

  /** The open stream of this Bridge id, if `sessionId` is its session (acks and usage come only from it). */
  #owningSession(bridgeId: string, sessionId: unknown): { b: BridgeState; session: StreamSession } | null {
    const b = this.#bridges.get(bridgeId);
    const session = b?.session;
    if (!b || !session || session.closed || typeof sessionId !== 'string' || session.id !== sessionId) return null;
    return { b, session };
  }

  /** True when `sessionId` is the session of the open stream of `bridgeId` on this Hub. */
  ownsStream(bridgeId: string, sessionId: unknown): boolean {
    return this.#owningSession(bridgeId, sessionId) !== null;
  }

  /**
   * A Bridge applied these seqs (and/or a snapshot as of `snapshot`). Accepted only from the stream
   * session that owns the Bridge id, and only for seqs that stream was sent: a forged ack can neither
   * make a revoke report a Bridge as caught up nor move its persisted high-water mark.
   */
  ack(bridgeId: string, sessionId: unknown, seqs: number[], snapshot?: number): void {
    const owner = this.#owningSession(bridgeId, sessionId);
    if (!owner) throw conflict(`no open sync stream of Bridge ${bridgeId} has this session: acknowledge on the stream you received the changes from`);
    const { b, session } = owner;
    for (const s of seqs) if (s > session.maxSent) throw badRequest(`seq ${s} was never sent on this stream (highest sent: ${session.maxSent})`);
    if (snapshot !== undefined && snapshot > session.maxSent) throw badRequest(`snapshot ${snapshot} was never sent on this stream`);
    let top = 0;
    for (const s of seqs) {
      b.acked.add(s);
      if (s > top) top = s;
      if (b.acked.size > ACKED_KEEP) b.acked.delete(b.acked.values().next().value!);
    }
    if (snapshot !== undefined) {
      const gaps = b.pendingSnapshots.get(snapshot);
      if (gaps) {
        b.snapshot = { seq: snapshot, gaps };
        b.pendingSnapshots.clear();
        if (snapshot > top) top = snapshot;
      }
    }
    b.lastAckAt = nowIso();
    if (top > 0) {
      this.#noteHwm(bridgeId, top);
      this.#queueAckWrite(bridgeId, top);
    }
    this.#checkWaiters();
  }

  /** @internal: a Bridge resumed from `since`: it has applied every change up to there */
  resumed(b: BridgeState, since: number) {
    if (since <= 0) return;
    this.#noteHwm(b.id, since);
    this.#queueAckWrite(b.id, since);
    this.#checkWaiters();
  }

  /** @internal: remembered until the Bridge acks that snapshot */
  notePendingSnapshot(b: BridgeState, seq: number, gaps: Set<number>) {
    b.pendingSnapshots.set(seq, gaps);
  }

  /** @internal: a stream ended; waiters re-check (the Bridge may come back and ack in time) */
  sessionClosed(b: BridgeState, s: StreamSession, by: 'peer' | 'hub') {
    if (b.session === s) {
      b.session = null;
      // the Bridge went away: it stops counting for new waits, here and on every other Hub
      if (by === 'peer' && !this.#closed) this.#track(this.#presenceDisconnect(b.id, s.connectedAt));
    }
    this.#checkWaiters();
  }

  #track(p: Promise<unknown>) {
    this.#writes.add(p);
    void p.finally(() => this.#writes.delete(p));
  }

  #checkWaiters() {
    for (const w of this.#waiters) w.check();
  }

  #noteHwm(bridgeId: string, seq: number): number {
    const cur = this.#hwm.get(bridgeId) ?? 0;
    if (seq > cur) {
      this.#hwm.set(bridgeId, seq);
      return seq;
    }
    return cur;
  }

  #isAcked(b: BridgeState, seq: number): boolean {
    if (b.acked.has(seq)) return true;
    return b.snapshot !== null && seq <= b.snapshot.seq && !b.snapshot.gaps.has(seq);
  }

  /** Applied by this Bridge: acked here (per seq or by snapshot), or its high-water mark from any Hub. */
  #ackedAnywhere(id: string, seq: number): boolean {
    const b = this.#bridges.get(id);
    if (b && this.#isAcked(b, seq)) return true;
    return (this.#hwm.get(id) ?? 0) >= seq;
  }

  /**
   * Resolves when every Bridge connected now (to this Hub or any other on the store) has applied
   * `seq`, or after `timeoutMs` with the laggards named. Bridges that connect later load a snapshot
   * taken after the commit (or resume below it), so they are not waited for.
   */
  async waitForAcks(seq: number, timeoutMs: number): Promise<AckResult> {
    const started = Date.now();
    let remote: string[] = [];
    if (!this.#closed) {
      try {
        remote = (await this.#remoteLive()).map((r) => r.bridge_id);
      } catch (err) {
        this.#ctx.log.warn({ err: (err as Error).message }, 'sync: reading Bridge presence failed; waiting for this Hub\'s Bridges only');
      }
    }
    // read after the rows: a Bridge that moved here while they were read is counted once, here
    const local = this.#localIds();
    remote = remote.filter((id) => !local.has(id));
    const targets = [...local, ...remote];
    const result = (): AckResult => {
      const lagging = targets.filter((id) => !this.#ackedAnywhere(id, seq));
      return { bridges: targets.length, acked: targets.length - lagging.length, lagging };
    };
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const w: Waiter = {
        seq,
        targets,
        remote,
        done: (r) => {
          if (timer) clearTimeout(timer);
          this.#waiters.delete(w);
          if (this.#ackPoll && ![...this.#waiters].some((x) => x.remote.length)) {
            clearInterval(this.#ackPoll);
            this.#ackPoll = null;
          }
          resolve(r);
        },
        check: () => {
          const r = result();
          if (r.lagging.length === 0 || this.#closed) w.done(r);
        },
      };
      this.#waiters.add(w);
      timer = setTimeout(() => w.done(result()), Math.max(0, timeoutMs - (Date.now() - started)));
      if (remote.length && !this.#ackPoll) {
        this.#ackPoll = setInterval(() => void this.#pollRemoteAcks(), ACK_POLL_MS);
        this.#ackPoll.unref();
      }
      w.check();
    });
  }

  /** Fallback for a lost NOTIFY: reads the acks of the Bridges other Hubs serve that a wait still needs. */
  async #pollRemoteAcks(): Promise<void> {
    const ids = new Set<string>();
    for (const w of this.#waiters) for (const id of w.remote) if (!this.#ackedAnywhere(id, w.seq)) ids.add(id);
    if (ids.size === 0) return;
    try {
      const rows = await presenceDb(this.#ctx).selectFrom('sync_bridges').select(['bridge_id', 'acked_seq']).where('bridge_id', 'in', [...ids].slice(0, 1000)).execute();
      for (const r of rows) this.#noteHwm(r.bridge_id, Number(r.acked_seq));
      this.#checkWaiters();
    } catch {
      /* next tick */
    }
  }

  // ---------- presence (sync_bridges) ----------

  async #presenceConnect(b: BridgeState): Promise<void> {
    const now = b.connectedAt;
    try {
      await presenceDb(this.#ctx)
        .insertInto('sync_bridges')
        .values({ bridge_id: b.id, hub_id: this.hubId, acked_seq: 0, address: b.address, connected_at: now, last_seen_at: now, disconnected_at: null })
        .onConflict((oc) => oc.column('bridge_id').doUpdateSet({ hub_id: this.hubId, address: b.address, connected_at: now, last_seen_at: now, disconnected_at: null }))
        .execute();
    } catch (err) {
      this.#ctx.log.warn({ err: (err as Error).message, bridgeId: b.id }, 'sync: recording Bridge presence failed (other Hubs may not wait for it)');
    }
  }

  /** Only the row of that very session: a reconnect that already replaced it is left alone. */
  async #presenceDisconnect(bridgeId: string, connectedAt: string): Promise<void> {
    try {
      await presenceDb(this.#ctx)
        .updateTable('sync_bridges')
        .set({ disconnected_at: nowIso() })
        .where('bridge_id', '=', bridgeId)
        .where('hub_id', '=', this.hubId)
        .where('connected_at', '=', connectedAt)
        .where('disconnected_at', 'is', null)
        .execute();
    } catch (err) {
      if (!this.#closed) this.#ctx.log.warn({ err: (err as Error).message, bridgeId }, 'sync: recording a Bridge disconnect failed');
    }
  }

  /** Each heartbeat: this Hub's Bridges are still here (and old rows are dropped now and then). */
  async #refreshPresence(): Promise<void> {
    if (this.#closed) return;
    const ids = [...this.#localIds()];
    const pdb = presenceDb(this.#ctx);
    try {
      const now = nowIso();
      for (let i = 0; i < ids.length; i += 500) {
        await pdb
          .updateTable('sync_bridges')
          .set({ last_seen_at: now, disconnected_at: null })
          .where('hub_id', '=', this.hubId)
          .where('bridge_id', 'in', ids.slice(i, i + 500))
          .execute();
      }
      if (Date.now() - this.#lastCleanup > 3600_000) {
        this.#lastCleanup = Date.now();
        await pdb.deleteFrom('sync_bridges').where('last_seen_at', '<', new Date(Date.now() - PRESENCE_KEEP_MS).toISOString()).execute();
        // forget the high-water marks of Bridges that are gone everywhere
        const live = new Set((await this.#remoteLive()).map((r) => r.bridge_id));
        for (const id of [...this.#hwm.keys()]) if (!live.has(id) && !this.#bridges.has(id)) this.#hwm.delete(id);
      }
    } catch (err) {
      if (!this.#closed) this.#ctx.log.warn({ err: (err as Error).message }, 'sync: refreshing Bridge presence failed');
    }
  }

  #queueAckWrite(bridgeId: string, seq: number) {
    if (seq > (this.#ackWrites.get(bridgeId) ?? 0)) this.#ackWrites.set(bridgeId, seq);
    if (!this.#ackWriting) {
      this.#ackWriting = this.#flushAckWrites().finally(() => {
        this.#ackWriting = null;
      });
    }
  }

  /** Writes acks to sync_bridges and, on PostgreSQL, tells the other Hubs in the same statement. */
  async #flushAckWrites(): Promise<void> {
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
              const payload = JSON.stringify({ h: this.hubId, b: id, s: seq });
              await sql`with u as (update sync_bridges set acked_seq = greatest(acked_seq, ${seq}::bigint), last_seen_at = ${now} where bridge_id = ${id} returning 1)
                select pg_notify(${ACK_CHANNEL}, ${payload})`.execute(db);
            } else {
              await presenceDb(this.#ctx)
                .updateTable('sync_bridges')
                .set({ acked_seq: sql<number>`case when acked_seq < ${seq} then ${seq} else acked_seq end`, last_seen_at: now })
                .where('bridge_id', '=', id)
                .execute();
            }
          } catch (err) {
            if (!this.#closed) this.#ctx.log.warn({ err: (err as Error).message, bridgeId: id }, 'sync: recording an ack failed (other Hubs may report this Bridge as lagging)');
          }
        }),
      );
    }
  }

  /** Message body for a change row, cached per seq (built from the entity's current state). */
  async changeBody(row: ChangeRow): Promise<ChangeBody> {
    const hit = this.#cache.get(row.seq);
    if (hit) return hit;
    const ctx = this.#ctx;
    let body: ChangeBody;
    if (row.kind === 'apikey') {
      let keyId = '';
      try {
        keyId = String((JSON.parse(row.payload_json) as { keyId?: unknown }).keyId ?? '');
      } catch {
        /* malformed payload: deliver as null */
      }
      body = { type: 'change', seq: row.seq, kind: 'apikey', project: row.project, env: row.env, keyId, key: keyId ? await loadKeyRecord(ctx, keyId) : null };
    } else if (row.kind === 'release' || row.kind === 'connection') {
      body = { type: 'change', seq: row.seq, kind: row.kind, project: row.project, env: row.env, state: await loadEnvState(ctx, row.project, row.env) };
    } else {
      body = { type: 'change', seq: row.seq, kind: 'other', project: row.project, env: row.env, original: row.kind };
    }
    this.#cache.set(row.seq, body);
    if (this.#cache.size > MESSAGE_CACHE) this.#cache.delete(this.#cache.keys().next().value!);
    return body;
  }

  /** Bridges gone for more than an hour are forgotten. */
  #forgetStale() {
    const cutoff = Date.now() - 3600_000;
    for (const [id, b] of this.#bridges) {
      if (!b.session && Date.parse(b.lastAckAt ?? b.connectedAt) < cutoff) {
        this.#bridges.delete(id);
        this.#hwm.delete(id);
      }
    }
  }

  #onAckNotification(payload: string | undefined) {
    try {
      const m = JSON.parse(payload ?? '') as { h?: unknown; b?: unknown; s?: unknown };
      if (m.h === this.hubId || typeof m.b !== 'string' || typeof m.s !== 'number') return;
      this.#noteHwm(m.b, m.s);
      this.#checkWaiters();
    } catch {
      /* not ours */
    }
  }

  async #listen(url: string): Promise<void> {
    if (this.#closed) return;
    try {
      const pg = (await import('pg')).default;
      const client = new pg.Client({ connectionString: url });
      client.on('error', () => {});
      client.on('end', () => {
        if (this.#pg === client && !this.#closed) {
          this.#pg = null;
          this.#pgRetry = setTimeout(() => void this.#listen(url), 1000);
          this.#pgRetry.unref();
        }
      });
      client.on('notification', (n) => {
        if (n.channel === CHANGES_CHANNEL) this.wake();
        else if (n.channel === ACK_CHANNEL) this.#onAckNotification(n.payload);
      });
      await client.connect();
      await client.query(`LISTEN ${CHANGES_CHANNEL}; LISTEN ${ACK_CHANNEL}`);
      if (this.#closed) {
        await client.end().catch(() => {});
        return;
      }
      this.#pg = client;
    } catch (err) {
      this.#ctx.log.warn({ err: (err as Error).message }, 'sync: LISTEN failed; retrying (changes and acks from other Hubs still arrive by polling)');
      if (!this.#closed) {
        this.#pgRetry = setTimeout(() => void this.#listen(url), 2000);
        this.#pgRetry.unref();
      }
    }
  }
}

class StreamSession {
  cursor = 0;
  closed = false;
  /** the highest seq this stream delivered (or the Bridge resumed from): acks above it are refused */
  maxSent = 0;
  readonly #late = new Map<number, number>();
  #gapSince: number | null = null;
  #pumping = false;
  #again = false;
  #ready = false;
  #heartbeat: NodeJS.Timeout | null = null;
  #retry: NodeJS.Timeout | null = null;

  constructor(
    private readonly ctx: HubContext,
    private readonly hub: SyncHub,
    private readonly bridge: BridgeState,
    private readonly sink: StreamSink,
    readonly connectedAt: string,
    readonly id: string,
  ) {
    sink.onClose?.(() => this.close('peer'));
  }

  async start(since: number | undefined): Promise<void> {
    try {
      const top = await maxSeq(this.ctx);
      const resumable = since !== undefined && Number.isSafeInteger(since) && since >= 0 && since <= top;
      if (resumable) {
        this.cursor = since;
        this.maxSent = since;
        // the Bridge applied everything up to its cursor (maybe acknowledged to a Hub that is gone)
        this.hub.resumed(this.bridge, since);
        await this.#watchGaps(since);
      } else {
        await this.#sendSnapshot();
      }
      this.#ready = true;
      this.#heartbeat = setInterval(() => void this.#send({ type: 'heartbeat', cursor: this.cursor, ts: nowIso() }), HEARTBEAT_MS);
      this.#heartbeat.unref();
      await this.#send({ type: 'heartbeat', cursor: this.cursor, ts: nowIso() });
      this.pump();
    } catch (err) {
      this.ctx.log.warn({ err: (err as Error).message, bridgeId: this.bridge.id }, 'sync: stream failed');
      this.close('hub');
    }
  }

  async #watchGaps(upTo: number) {
    const deadline = Date.now() + LATE_WATCH_MS;
    for (const g of await gapsBelow(this.ctx, upTo)) this.#late.set(g, deadline);
  }

  async #sendSnapshot(): Promise<void> {
    const ctx = this.ctx;
    const seq = await maxSeq(ctx);
    const gaps = await gapsBelow(ctx, seq);
    const envs = await allEnvStates(ctx);
    const keyCount = Number((await ctx.db.selectFrom('api_keys').select((eb) => eb.fn.countAll().as('n')).executeTakeFirst())?.n ?? 0);
    this.hub.notePendingSnapshot(this.bridge, seq, gaps);
    if (seq > this.maxSent) this.maxSent = seq;
    await this.#send({ type: 'snapshot', seq, pepper: ctx.crypto.apiKeyPepper.toString('base64'), envs, keyCount });
    for await (const keys of keyChunks(ctx)) {
      if (this.closed) return;
      await this.#send({ type: 'keys', keys });
    }
    await this.#send({ type: 'snapshot-end', seq });
    this.cursor = seq;
    const deadline = Date.now() + LATE_WATCH_MS;
    for (const g of gaps) this.#late.set(g, deadline);
  }

  async #send(m: SyncMessage): Promise<void> {
    if (this.closed) return;
    await this.sink.write(JSON.stringify(m));
    if (this.sink.closed) this.close('peer');
  }

  /** Delivers every committed change after the cursor (and late gap fillers). Re-entrant safe. */
  pump(): void {
    if (this.closed || !this.#ready) return;
    if (this.#pumping) {
      this.#again = true;
      return;
    }
    this.#pumping = true;
    void this.#drain()
      .catch((err) => {
        this.ctx.log.warn({ err: (err as Error).message, bridgeId: this.bridge.id }, 'sync: reading changes failed');
      })
      .finally(() => {
        this.#pumping = false;
        if (this.#again && !this.closed) {
          this.#again = false;
          this.pump();
        }
      });
  }

  async #drain(): Promise<void> {
    const db = this.ctx.db;
    for (;;) {
      this.#again = false;
      const now = Date.now();
      for (const [s, deadline] of this.#late) if (deadline < now) this.#late.delete(s);
      if (this.#late.size > 0) {
        const late = await db.selectFrom('change_events').selectAll().where('seq', 'in', [...this.#late.keys()].slice(0, 500)).orderBy('seq').execute();
        for (const r of late) {
          this.#late.delete(Number(r.seq));
          await this.#deliver({ ...r, seq: Number(r.seq) }, this.cursor);
        }
      }
      const rows = await db.selectFrom('change_events').selectAll().where('seq', '>', this.cursor).orderBy('seq').limit(PAGE).execute();
      let blocked = false;
      for (const raw of rows) {
        if (this.closed) return;
        const row = { ...raw, seq: Number(raw.seq) };
        if (row.seq !== this.cursor + 1) {
          // with the change-log lock a gap is a rolled-back seq; the short wait covers writers without it
          this.#gapSince ??= Date.now();
          if (Date.now() - this.#gapSince < GAP_WAIT_MS) {
            blocked = true;
            break;
          }
          const deadline = Date.now() + LATE_WATCH_MS;
          for (let s = Math.max(this.cursor + 1, row.seq - GAP_LOOKBACK); s < row.seq; s++) this.#late.set(s, deadline);
        }
        this.#gapSince = null;
        // the cursor moves only once the message is written: a heartbeat in between must not
        // advertise a seq the Bridge has not received (it would resume past it)
        await this.#deliver(row, row.seq);
        this.cursor = row.seq;
      }
      if (blocked) {
        if (!this.#retry) {
          this.#retry = setTimeout(() => {
            this.#retry = null;
            this.pump();
          }, 50);
        }
        return;
      }
      if (rows.length < PAGE && !this.#again) return;
    }
  }

  async #deliver(row: ChangeRow, cursor: number): Promise<void> {
    const body = await this.hub.changeBody(row);
    if (row.seq > this.maxSent) this.maxSent = row.seq;
    await this.#send({ ...body, cursor } as SyncMessage);
  }

  /** `by`: 'peer' when the Bridge went away, 'hub' when this Hub ended or replaced the stream. */
  close(by: 'peer' | 'hub' = 'hub'): void {
    if (this.closed) return;
    this.closed = true;
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    if (this.#retry) clearTimeout(this.#retry);
    try {
      this.sink.end();
    } catch {
      /* already gone */
    }
    this.hub.sessionClosed(this.bridge, this, by);
  }
}

/** A StreamSink over a raw Node response, honouring backpressure. */
export function responseSink(res: NodeJS.WritableStream & { destroyed?: boolean; writableEnded?: boolean; on(ev: 'close', fn: () => void): unknown }): StreamSink {
  let closed = false;
  const listeners: Array<() => void> = [];
  res.on('close', () => {
    closed = true;
    for (const fn of listeners.splice(0)) fn();
  });
  return {
    get closed() {
      return closed || Boolean(res.destroyed) || Boolean(res.writableEnded);
    },
    onClose(fn: () => void) {
      if (closed) fn();
      else listeners.push(fn);
    },
    async write(line: string) {
      if (closed) return;
      if (!res.write(line + '\n')) {
        await Promise.race([once(res as never, 'drain'), once(res as never, 'close')]);
      }
    },
    end() {
      if (!closed) res.end();
    },
  };
}
