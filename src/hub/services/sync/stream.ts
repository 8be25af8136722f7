import { failClosedRecord, type SyncMessage } from '../../../protocol/sync.js';
import type { HubContext } from '../../context.js';
import { gapsBelow, maxSeq, allEnvStates, GAP_LOOKBACK, type ChangeBody, type ChangeRow } from './feed.js';
import { keyRecordBatches, keyRowsLines } from './key-batches.js';
import { nowIso } from '../../store/store.js';

/**
 * One Bridge's stream: a snapshot (or a resume point), then every committed change in seq order,
 * and heartbeats. Order: on PostgreSQL every writer takes one transaction-scoped advisory lock before
 * drawing a seq (`recordChange`), so seqs commit in order and a gap seen by a reader is a rolled-back
 * seq that never appears. A stream therefore waits only briefly at a gap (config.sync.gapWaitMs, for writers
 * that do not take the lock), then moves on and keeps watching the missing seqs for LATE_WATCH_MS.
 */

const LATE_WATCH_MS = 10 * 60_000;
const PAGE = 500;

/** How a Bridge asked for its stream. */
export interface StreamOptions {
  /** the snapshot's keys as `keyrows` batches (the Bridge reads them) instead of `keys` */
  keyRows?: boolean;
  /**
   * an older Bridge (no SYNC_CAPS, no keyrows): suspended and allowlisted keys are sent to it as revoked,
   * in the snapshot and in changes (protocol/sync.ts failClosedRecord)
   */
  failClosed?: boolean;
}

/** What a stream writes to: one NDJSON line per message. */
export interface StreamSink {
  write(line: string): Promise<void>;
  end(): void;
  readonly closed: boolean;
  /** called once when the peer goes away (so a gone Bridge stops counting at once) */
  onClose?(fn: () => void): void;
}

/** What the Hub knows of one Bridge id (its current stream, what it acknowledged). */
export interface BridgeState {
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

/** The side of the SyncHub a stream reports to. */
export interface StreamOwner {
  /** a Bridge resumed from `since`: it has applied every change up to there */
  resumed(b: BridgeState, since: number): void;
  /** remembered until the Bridge acks that snapshot */
  notePendingSnapshot(b: BridgeState, seq: number, gaps: Set<number>): void;
  /** a stream ended; waiters re-check */
  sessionClosed(b: BridgeState, s: StreamSession, by: 'peer' | 'hub'): void;
  changeBody(row: ChangeRow): Promise<ChangeBody>;
  /** Bridges connected to any Hub of the store (sent in each heartbeat) */
  bridgeCount(): number;
}

export class StreamSession {
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
    private readonly hub: StreamOwner,
    private readonly bridge: BridgeState,
    private readonly sink: StreamSink,
    readonly connectedAt: string,
    readonly id: string,
    private readonly opts: StreamOptions = {},
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
      if (this.closed) return;
      this.#ready = true;
      this.#heartbeat = setInterval(() => void this.#send(this.#heartbeatMessage()), this.ctx.config.sync.heartbeatMs);
      this.#heartbeat.unref();
      await this.#send(this.#heartbeatMessage());
      this.pump();
    } catch (err) {
      this.ctx.log.warn({ err: (err as Error).message, bridgeId: this.bridge.id }, 'sync: stream failed');
      this.close('hub');
    }
  }

  #heartbeatMessage(): SyncMessage {
    return { type: 'heartbeat', cursor: this.cursor, ts: nowIso(), bridges: this.hub.bridgeCount() };
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
    const keyCount = Number(
      (
        await ctx.db
          .selectFrom('api_keys')
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirst()
      )?.n ?? 0,
    );
    this.hub.notePendingSnapshot(this.bridge, seq, gaps);
    if (seq > this.maxSent) this.maxSent = seq;
    await this.#send({ type: 'snapshot', seq, pepper: ctx.crypto.apiKeyPepper.toString('base64'), envs, keyCount });
    // pipelined: the next batch is read and serialized while the previous one drains to the Bridge (at
    // most one batch waits in memory besides the one being written, whatever the number of keys)
    const lines = this.#keyLines();
    let next = lines.next();
    try {
      for (;;) {
        const r = await next;
        if (r.done) break;
        if (this.closed) return;
        next = lines.next();
        await this.#sendLine(r.value);
      }
    } finally {
      next.catch(() => {}); // the batch read ahead for a stream that closed meanwhile
      void lines.return(undefined).catch(() => {});
    }
    await this.#send({ type: 'snapshot-end', seq });
    this.cursor = seq;
    const deadline = Date.now() + LATE_WATCH_MS;
    for (const g of gaps) this.#late.set(g, deadline);
  }

  /** The snapshot's key batches as stream lines, in the format the Bridge asked for. */
  async *#keyLines(): AsyncGenerator<string> {
    if (this.opts.keyRows) yield* keyRowsLines(this.ctx);
    else if (this.opts.failClosed) {
      this.ctx.log.warn(
        { bridgeId: this.bridge.id },
        'sync: this Bridge predates suspend and IP allowlists (it does not declare them): suspended and allowlisted keys are sent to it as revoked until it is upgraded',
      );
      for await (const keys of keyRecordBatches(this.ctx)) yield JSON.stringify({ type: 'keys', keys: keys.map(failClosedRecord) } satisfies SyncMessage);
    } else for await (const keys of keyRecordBatches(this.ctx)) yield JSON.stringify({ type: 'keys', keys } satisfies SyncMessage);
  }

  async #send(m: SyncMessage): Promise<void> {
    if (this.closed) return;
    await this.#sendLine(JSON.stringify(m));
  }

  async #sendLine(line: string): Promise<void> {
    if (this.closed) return;
    await this.sink.write(line);
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
        const late = await db
          .selectFrom('change_events')
          .selectAll()
          .where('seq', 'in', [...this.#late.keys()].slice(0, 500))
          .orderBy('seq')
          .execute();
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
          if (Date.now() - this.#gapSince < this.ctx.config.sync.gapWaitMs) {
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
    if (this.opts.failClosed && body.kind === 'apikey' && body.key) {
      await this.#send({ ...body, key: failClosedRecord(body.key), cursor });
      return;
    }
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
export function responseSink(res: NodeJS.WritableStream & { destroyed?: boolean; writableEnded?: boolean }): StreamSink {
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
        // one pair of listeners per blocked write, both removed when either fires (a race of two
        // once() promises left the loser's listener behind: one per batch of a large snapshot, hence
        // MaxListenersExceededWarning)
        await new Promise<void>((resolve) => {
          const done = () => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    },
    end() {
      if (!closed) res.end();
    },
  };
}
