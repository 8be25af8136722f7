import { randomBytes } from 'node:crypto';
import { badRequest, conflict } from '../../../protocol/errors.js';
import type { AckResult } from '../../../protocol/api/define.js';
import type { HubContext } from '../../context.js';
import { nowIso } from '../../store/store.js';
import { Presence, type PresenceRow } from './presence.js';
import { CHANGES_CHANNEL } from '../events.js';
import { ACK_CHANNEL } from './presence.js';
import { ChangeMessages, type ChangeBody, type ChangeRow } from './feed.js';
import { StreamSession, type BridgeState, type StreamOptions, type StreamOwner, type StreamSink } from './stream.js';

/**
 * Acknowledgements, and the "wait until every Bridge applied seq N" primitive that makes revoke (and
 * apply, promote, rollback, connection changes) read-your-writes, across every Hub on the store.
 *
 * Cluster-wide acks: every Hub records the Bridges streaming from it in the shared `sync_bridges`
 * table (on connect, on every ack, refreshed each heartbeat, on disconnect) with the highest seq each
 * one applied. A waiting Hub waits for every Bridge connected to ANY Hub: its own (in memory) plus the
 * rows of other Hubs seen within the presence window (config.sync.presenceStaleMs) and not closed by the Bridge. It learns about acks
 * received by other Hubs through NOTIFY on `stk_acks` and, as a fallback, by polling those rows
 * every ACK_POLL_MS while it waits. A Hub that stops or crashes leaves its rows in place: its Bridges
 * keep being waited for until they reconnect to a Hub (and ack there) or their rows go stale, because
 * until then they serve what they had. On SQLite there is one Hub and the same code runs unchanged.
 */

const ACK_POLL_MS = 200;
const ACKED_KEEP = 5000;

export type { AckResult };

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

/** Follows one wait Bridge by Bridge (the traces' per-Bridge ack spans). */
export interface AckObserver {
  /** the Bridges this wait is for */
  begin(targets: readonly string[]): void;
  /** this Bridge has applied the change */
  acked(bridgeId: string): void;
  /** the wait ended (every Bridge acked, or the timeout with the laggards named) */
  end(r: AckResult): void;
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

export class SyncHub implements StreamOwner {
  readonly hubId = randomBytes(8).toString('hex');
  readonly #ctx: HubContext;
  readonly #bridges = new Map<string, BridgeState>();
  readonly #waiters = new Set<Waiter>();
  readonly #messages: ChangeMessages;
  /** highest seq each Bridge is known to have applied, whichever Hub it acked to */
  readonly #hwm = new Map<string, number>();
  readonly #presence: Presence;
  #poll: NodeJS.Timeout;
  #presenceTimer: NodeJS.Timeout;
  #ackPoll: NodeJS.Timeout | null = null;
  #closed = false;
  #pg: { end(): Promise<void> } | null = null;
  #pgRetry: NodeJS.Timeout | null = null;
  /** live Bridges of other Hubs, as of the last heartbeat (for bridgeCount) */
  #remoteCount = 0;

  constructor(ctx: HubContext) {
    this.#ctx = ctx;
    this.#messages = new ChangeMessages(ctx);
    this.#presence = new Presence(ctx, this.hubId);
    const onChanged = () => this.wake();
    ctx.events.on('changed', onChanged);
    this.#poll = setInterval(() => this.wake(), ctx.config.sync.pollMs);
    this.#poll.unref();
    this.#presenceTimer = setInterval(() => void this.#heartbeat(), ctx.config.sync.heartbeatMs);
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
    await this.#presence.close();
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
      out.push({
        bridgeId: b.id,
        hubId: this.hubId,
        ackedSeq: this.#hwm.get(b.id) ?? 0,
        address: b.address,
        connectedAt: b.connectedAt,
        lastSeenAt: b.lastAckAt ?? b.connectedAt,
        local: true,
      });
    }
    for (const r of rows) {
      if (local.has(r.bridge_id)) continue;
      out.push({
        bridgeId: r.bridge_id,
        hubId: r.hub_id,
        ackedSeq: this.#hwm.get(r.bridge_id) ?? 0,
        address: r.address,
        connectedAt: r.connected_at,
        lastSeenAt: r.last_seen_at,
        local: false,
      });
    }
    return out;
  }

  /**
   * Opens a stream for a Bridge. `since` = the cursor the Bridge last saw; absent, invalid or not
   * resumable → the stream starts with a full snapshot.
   */
  async openStream(
    bridgeId: string,
    since: number | undefined,
    sink: StreamSink,
    address: string | null,
    sessionId: string,
    opts: StreamOptions = {},
  ): Promise<void> {
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
    const session = new StreamSession(this.#ctx, this, b, sink, b.connectedAt, sessionId, opts);
    b.session = session;
    this.#forgetStale();
    // recorded BEFORE the snapshot or resume point is read: a Hub that commits a change and then
    // does not see this row has committed before that read, so this stream delivers the change
    await this.#presence.connect(b.id, b.address, b.connectedAt);
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
      this.#presence.queueAck(bridgeId, top);
    }
    this.#checkWaiters();
  }

  /** @internal: a Bridge resumed from `since`: it has applied every change up to there */
  resumed(b: BridgeState, since: number) {
    if (since <= 0) return;
    this.#noteHwm(b.id, since);
    this.#presence.queueAck(b.id, since);
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
      if (by === 'peer' && !this.#closed) this.#presence.disconnect(b.id, s.connectedAt);
    }
    this.#checkWaiters();
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
  async waitForAcks(seq: number, timeoutMs: number, observer?: AckObserver): Promise<AckResult> {
    const started = Date.now();
    let remote: string[] = [];
    if (!this.#closed) {
      try {
        remote = (await this.#remoteLive()).map((r) => r.bridge_id);
      } catch (err) {
        this.#ctx.log.warn({ err: (err as Error).message }, "sync: reading Bridge presence failed; waiting for this Hub's Bridges only");
      }
    }
    // read after the rows: a Bridge that moved here while they were read is counted once, here
    const local = this.#localIds();
    remote = remote.filter((id) => !local.has(id));
    const targets = [...local, ...remote];
    observer?.begin(targets);
    const reported = observer ? new Set<string>() : null;
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
          observer?.end(r);
          resolve(r);
        },
        check: () => {
          if (observer && reported) {
            for (const id of targets) {
              if (!reported.has(id) && this.#ackedAnywhere(id, seq)) {
                reported.add(id);
                observer.acked(id);
              }
            }
          }
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
      const rows = await this.#presence.ackedSeqs([...ids].slice(0, 1000));
      for (const r of rows) this.#noteHwm(r.bridge_id, Number(r.acked_seq));
      this.#checkWaiters();
    } catch {
      /* next tick */
    }
  }

  /** Live Bridges of OTHER Hubs (their rows), noting the acks they carry. */
  async #remoteLive(): Promise<PresenceRow[]> {
    const rows = await this.#presence.liveOfOtherHubs();
    for (const r of rows) this.#noteHwm(r.bridge_id, Number(r.acked_seq));
    return rows;
  }

  /**
   * Bridges connected to any Hub of the store: this Hub's (in memory) plus the live rows of the others
   * as of the last heartbeat. Sent in every heartbeat: a Bridge takes limit / N of a key's rate limit
   * when the shared rate-limit store is down.
   */
  bridgeCount(): number {
    return this.#localIds().size + this.#remoteCount;
  }

  /** Each heartbeat: this Hub's Bridges are still here (and how many the others have); now and then, forget Bridges gone everywhere. */
  async #heartbeat(): Promise<void> {
    if (this.#closed) return;
    const cleaned = await this.#presence.refresh([...this.#localIds()]);
    if (this.#closed) return;
    try {
      const rows = await this.#remoteLive();
      this.#remoteCount = rows.length;
      if (!cleaned) return;
      const live = new Set(rows.map((r) => r.bridge_id));
      for (const id of [...this.#hwm.keys()]) if (!live.has(id) && !this.#bridges.has(id)) this.#hwm.delete(id);
    } catch (err) {
      this.#ctx.log.warn({ err: (err as Error).message }, 'sync: reading Bridge presence failed');
    }
  }

  /** Message body for a change row (cached per seq for every stream of this Hub). */
  changeBody(row: ChangeRow): Promise<ChangeBody> {
    return this.#messages.body(row);
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
