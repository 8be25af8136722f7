import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { ReleaseIR } from '../../protocol/release.js';
import type { SyncEnvState, SyncKeyRecord, SyncMessage } from '../../protocol/sync.js';
import type { HubContext } from '../context.js';
import type { ApiKeysTable } from '../store/schema.js';
import { DEFAULT_ORG } from './auth.js';
import { connectionUrls } from './connections.js';
import { currentRelease } from './releases.js';

/**
 * The Hub side of the Bridge sync: snapshots, the change stream, acknowledgements and the
 * "wait until every connected Bridge applied seq N" primitive that makes revoke read-your-writes.
 *
 * Sequence numbers live in the store (`change_events.seq`), so a change committed by ANOTHER Hub
 * process on the same PostgreSQL store reaches this Hub's streams too: through LISTEN/NOTIFY
 * (channel `stk_changes`) when the store is PostgreSQL, and through a slow poll in every case.
 *
 * Gaps: on PostgreSQL a sequence value can become visible after a higher one (two concurrent
 * transactions) or never (rollback). A stream delivers rows in order; at a gap it waits up to
 * GAP_WAIT_MS for the missing row, then moves on and keeps watching the missing seqs for
 * LATE_WATCH_MS, delivering them if they show up. Messages carry the entity's CURRENT state (read
 * when the message is built), so a late or repeated delivery never moves a Bridge backwards.
 */
export const HEARTBEAT_MS = Number(process.env.STK_SYNC_HEARTBEAT_MS ?? 10_000);
const GAP_WAIT_MS = 2000;
const LATE_WATCH_MS = 10 * 60_000;
const POLL_MS = Number(process.env.STK_SYNC_POLL_MS ?? 2000);
const PAGE = 500;
const KEY_CHUNK = 1000;
const GAP_LOOKBACK = 1000;
const ACKED_KEEP = 5000;
const MESSAGE_CACHE = 256;
const NOTIFY_CHANNEL = 'stk_changes';

type ChangeRow = { seq: number; ts: string; project: string; env: string; kind: string; payload_json: string };
type DistOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
type ChangeBody = DistOmit<Extract<SyncMessage, { type: 'change' }>, 'cursor'>;

export interface AckResult {
  /** Bridges connected when the change committed */
  bridges: number;
  acked: number;
  /** ids of the Bridges that did not acknowledge within the bound */
  lagging: string[];
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
  targets: BridgeState[];
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
  #poll: NodeJS.Timeout;
  #closed = false;
  #pg: { end(): Promise<void> } | null = null;
  #pgRetry: NodeJS.Timeout | null = null;

  constructor(ctx: HubContext) {
    this.#ctx = ctx;
    const onChanged = () => {
      this.wake();
      void this.#notifyOthers();
    };
    ctx.events.on('changed', onChanged);
    this.#poll = setInterval(() => this.wake(), POLL_MS);
    this.#poll.unref();
    ctx.onClose.push(async () => {
      ctx.events.off('changed', onChanged);
      await this.close();
    });
    if (ctx.store.pgUrl) void this.#listen(ctx.store.pgUrl);
  }

  /** Ends every stream (Hub shutdown): Bridges reconnect to another Hub or retry this one. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#poll);
    if (this.#pgRetry) clearTimeout(this.#pgRetry);
    for (const b of this.#bridges.values()) b.session?.close();
    for (const w of [...this.#waiters]) w.check();
    await this.#pg?.end().catch(() => {});
    this.#pg = null;
  }

  wake(): void {
    for (const b of this.#bridges.values()) b.session?.pump();
  }

  /** Bridges with an open stream. */
  connected(): Array<{ bridgeId: string; address: string | null; connectedAt: string; cursor: number; lastAckAt: string | null }> {
    const out = [];
    for (const b of this.#bridges.values()) {
      if (b.session && !b.session.closed) {
        out.push({ bridgeId: b.id, address: b.address, connectedAt: b.connectedAt, cursor: b.session.cursor, lastAckAt: b.lastAckAt });
      }
    }
    return out;
  }

  /**
   * Opens a stream for a Bridge. `since` = the cursor the Bridge last saw; absent, invalid or not
   * resumable → the stream starts with a full snapshot.
   */
  async openStream(bridgeId: string, since: number | undefined, sink: StreamSink, address: string | null): Promise<void> {
    if (this.#closed) {
      sink.end();
      return;
    }
    let b = this.#bridges.get(bridgeId);
    if (!b) {
      b = { id: bridgeId, session: null, acked: new Set(), snapshot: null, pendingSnapshots: new Map(), address, connectedAt: new Date().toISOString(), lastAckAt: null };
      this.#bridges.set(bridgeId, b);
    }
    b.session?.close(); // a reconnect replaces a half-open stream
    b.address = address;
    b.connectedAt = new Date().toISOString();
    const session = new StreamSession(this.#ctx, this, b, sink);
    b.session = session;
    this.#forgetStale();
    await session.start(since);
  }

  /** A Bridge applied these seqs (and/or a snapshot as of `snapshot`). */
  ack(bridgeId: string, seqs: number[], snapshot?: number): boolean {
    const b = this.#bridges.get(bridgeId);
    if (!b) return false;
    for (const s of seqs) {
      b.acked.add(s);
      if (b.acked.size > ACKED_KEEP) b.acked.delete(b.acked.values().next().value!);
    }
    if (snapshot !== undefined) {
      const gaps = b.pendingSnapshots.get(snapshot);
      if (gaps) {
        b.snapshot = { seq: snapshot, gaps };
        b.pendingSnapshots.clear();
      }
    }
    b.lastAckAt = new Date().toISOString();
    for (const w of this.#waiters) w.check();
    return true;
  }

  /** @internal: remembered until the Bridge acks that snapshot */
  notePendingSnapshot(b: BridgeState, seq: number, gaps: Set<number>) {
    b.pendingSnapshots.set(seq, gaps);
  }

  /** @internal: a stream ended; waiters re-check (the Bridge may come back and ack in time) */
  sessionClosed(b: BridgeState, s: StreamSession) {
    if (b.session === s) b.session = null;
    for (const w of this.#waiters) w.check();
  }

  #isAcked(b: BridgeState, seq: number): boolean {
    if (b.acked.has(seq)) return true;
    return b.snapshot !== null && seq <= b.snapshot.seq && !b.snapshot.gaps.has(seq);
  }

  /**
   * Resolves when every Bridge connected now has applied `seq`, or after `timeoutMs` with the
   * laggards named. Bridges that connect later load a snapshot taken after the commit, so they are
   * not waited for.
   */
  waitForAcks(seq: number, timeoutMs: number): Promise<AckResult> {
    const targets = [...this.#bridges.values()].filter((b) => b.session && !b.session.closed);
    const result = (): AckResult => {
      const lagging = targets.filter((b) => !this.#isAcked(b, seq)).map((b) => b.id);
      return { bridges: targets.length, acked: targets.length - lagging.length, lagging };
    };
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const w: Waiter = {
        seq,
        targets,
        done: (r) => {
          if (timer) clearTimeout(timer);
          this.#waiters.delete(w);
          resolve(r);
        },
        check: () => {
          const r = result();
          if (r.lagging.length === 0 || this.#closed) w.done(r);
        },
      };
      this.#waiters.add(w);
      timer = setTimeout(() => w.done(result()), Math.max(0, timeoutMs));
      w.check();
    });
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
      if (!b.session && Date.parse(b.lastAckAt ?? b.connectedAt) < cutoff) this.#bridges.delete(id);
    }
  }

  async #notifyOthers(): Promise<void> {
    if (!this.#ctx.store.pgUrl || this.#closed) return;
    try {
      const { sql } = await import('kysely');
      await sql`select pg_notify(${NOTIFY_CHANNEL}, ${this.hubId})`.execute(this.#ctx.db);
    } catch (err) {
      this.#ctx.log.warn({ err: (err as Error).message }, 'sync: NOTIFY failed (other Hubs will pick the change up by polling)');
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
        if (n.channel === NOTIFY_CHANNEL && n.payload !== this.hubId) this.wake();
      });
      await client.connect();
      await client.query(`LISTEN ${NOTIFY_CHANNEL}`);
      if (this.#closed) {
        await client.end().catch(() => {});
        return;
      }
      this.#pg = client;
    } catch (err) {
      this.#ctx.log.warn({ err: (err as Error).message }, 'sync: LISTEN failed; retrying (changes from other Hubs still arrive by polling)');
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
  ) {
    sink.onClose?.(() => this.close());
  }

  async start(since: number | undefined): Promise<void> {
    try {
      const top = await maxSeq(this.ctx);
      const resumable = since !== undefined && Number.isSafeInteger(since) && since >= 0 && since <= top;
      if (resumable) {
        this.cursor = since;
        await this.#watchGaps(since);
      } else {
        await this.#sendSnapshot();
      }
      this.#ready = true;
      this.#heartbeat = setInterval(() => void this.#send({ type: 'heartbeat', cursor: this.cursor, ts: new Date().toISOString() }), HEARTBEAT_MS);
      this.#heartbeat.unref();
      await this.#send({ type: 'heartbeat', cursor: this.cursor, ts: new Date().toISOString() });
      this.pump();
    } catch (err) {
      this.ctx.log.warn({ err: (err as Error).message, bridgeId: this.bridge.id }, 'sync: stream failed');
      this.close();
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
    if (this.sink.closed) this.close();
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
    await this.#send({ ...body, cursor } as SyncMessage);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    if (this.#retry) clearTimeout(this.#retry);
    try {
      this.sink.end();
    } catch {
      /* already gone */
    }
    this.hub.sessionClosed(this.bridge, this);
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
