import { KeyRateLimiter, type RateLimiter } from './limits.js';
import type { WindowStore, WindowSyncItem } from './redis-window.js';

/**
 * Global per-key rate limits: one limit per key across every Bridge, kept in a Redis-compatible store
 * (STK_RATE_LIMIT_REDIS_URL) without a store round trip on the request path.
 *
 * The window: a sliding window of `subWindows` sub-windows (60 s = 12 × 5 s in production). A key's
 * count is the sum of its last `subWindows` sub-windows, kept in the store (redis-window.ts). Counts are
 * additive, so Bridges can charge them in batches (a GCRA's state is one timestamp, which cannot be
 * batched: every request would need its own compare-and-set in the store).
 *
 * The request path (`take`, synchronous) decides from local state only:
 * 1. a **lease**: requests this Bridge reserved in the store at its last sync (atomically, never past the
 *    limit), usable during the sub-window they were charged to (and the next one: the next round moves
 *    the charge there) → admitted, exactly;
 * 2. else **credit**: after each sync a Bridge may admit floor((free − guard) / N) more requests before
 *    its next sync, charged to the store at that sync (free = limit − the window's global count, guard =
 *    what the other Bridges added since this Bridge's previous sync, N = Bridges in the cluster as the
 *    Hub reports them). Far from the limit this is where bursts go; near it, credit is 0;
 * 3. else → refused (429), and the key is synced right away (off the request path): near the limit a
 *    Bridge coordinates about once per request it receives, asynchronously, through small leases.
 *
 * Every `syncMs` (100 ms) the keys used since the last round are synced in one pipeline: what was
 * admitted on credit is charged, an unused lease of a past sub-window is given back, the window's count
 * is read and a lease for the next ~2 intervals of this Bridge's traffic is reserved (at most
 * ceil(free / N)). Over-admission comes from credit only: at most the requests the other Bridges
 * admitted within one sync interval (plus the round trip) that this Bridge had not seen, minus the
 * guard — see docs/api-keys.md for the model and the measured bound.
 *
 * Store unreachable (error, timeout, connection closed) → every Bridge falls back to a local token
 * bucket of limit / N per key, says so once, and probes the store every second; when it answers, limits
 * are global again (said once too), and what each key was admitted locally within the last window is
 * charged to the store first (so the outage's requests still count in the window that follows). Only
 * keys the verifier authenticated reach `take`: a made-up key id never creates store state. State is bounded: at most `maxKeys` keys (the rest get the local share),
 * `maxBatch` per round, one round in flight, each bounded by the store's timeout.
 */

export interface GlobalLimiterOptions {
  /** the window the per-minute limit applies to (60 000; shorter only for tests: the budget scales) */
  windowMs: number;
  /** sub-windows per window */
  subWindows: number;
  /** how often used keys are synced */
  syncMs: number;
  /** Bridges in the cluster (from the Hub's heartbeat); ≥ 1 */
  bridges: () => number;
  log: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
  maxKeys?: number;
  maxBatch?: number;
  /** the clock of the sync rounds (tests drive it; `take` gets the request's time) */
  now?: () => number;
}

class KeyState {
  lease = 0;
  leaseSub = 0;
  /** leased requests of the previous sub-window used in the next one: moved to it at the next round */
  moved = 0;
  /** admitted on credit, not yet sent */
  debt = 0;
  debtSub = 0;
  /** admitted on credit since the last answer (against `credit`) */
  spent = 0;
  credit: number;
  /** the window's global count at the previous answer (-1: none yet) */
  prevTotal = -1;
  /** requests seen since the last round (admitted or not) */
  arrivals = 0;
  /** requests per ms on this Bridge (moving average) */
  rate = 0;
  lastRound = 0;
  lastSeen: number;
  queued = false;
  /** refused a request at this time: synced every round for a window after (0 = never) */
  refusedAt = 0;
  /**
   * charged with what it was admitted while the store was down: its first answer gives no credit (the
   * other Bridges may not have charged theirs yet; from the second answer on the guard sees them)
   */
  recovered = false;
  constructor(
    readonly keyId: string,
    public budget: number,
    credit: number,
    now: number,
  ) {
    this.credit = credit;
    this.lastSeen = now;
  }
}

/** Requests of one key admitted while the store was down, one slot per sub-window of the last window. */
class DownCount {
  readonly #slots: Uint32Array;
  #last: number;
  limitPerMin = 0;
  constructor(subWindows: number, sub: number) {
    this.#slots = new Uint32Array(subWindows);
    this.#last = sub;
  }
  add(sub: number, n = 1): void {
    this.#advance(sub);
    if (sub <= this.#last - this.#slots.length) return; // older than the window kept
    this.#slots[sub % this.#slots.length]! += n;
  }
  /** admitted in the window that ends with sub-window `sub` */
  within(sub: number): number {
    this.#advance(sub);
    let n = 0;
    for (const c of this.#slots) n += c;
    return n;
  }
  /** empties the slots of the sub-windows that passed since the last one counted */
  #advance(sub: number): void {
    if (sub <= this.#last) return;
    const len = this.#slots.length;
    if (sub - this.#last >= len) this.#slots.fill(0);
    else for (let s = this.#last + 1; s <= sub; s++) this.#slots[s % len] = 0;
    this.#last = sub;
  }
}

const PROBE_MS = 1000;

export class GlobalRateLimiter implements RateLimiter {
  readonly #o: Required<GlobalLimiterOptions>;
  readonly #store: WindowStore;
  readonly #subMs: number;
  #local = new KeyRateLimiter();
  readonly #states = new Map<string, KeyState>();
  #queue: KeyState[] = [];
  /**
   * Keys that refused a request within the last window: synced every round even without new requests,
   * so budget freed when a sub-window ends reaches this Bridge as a lease before its next request (else
   * at a few requests per second per Bridge, each Bridge would refuse one request per freed batch).
   */
  readonly #hot = new Set<KeyState>();
  /**
   * While the store is down: what each key was admitted locally, per sub-window of the last window. When
   * the store answers again it is charged there (else the window would start from what the store saw
   * before the outage, and a key could get its local share and its whole limit again within one window).
   */
  readonly #admittedDown = new Map<string, DownCount>();
  #global = false;
  #everUp = false;
  #saidDown = false;
  #inflight = false;
  #again = false;
  #urgent: NodeJS.Immediate | NodeJS.Timeout | null = null;
  #lastRoundAt = 0;
  #lastSub = 0;
  #lastProbe = 0;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;

  constructor(store: WindowStore, o: GlobalLimiterOptions) {
    this.#store = store;
    this.#o = { maxKeys: 100_000, maxBatch: 5000, now: Date.now, ...o };
    this.#subMs = Math.max(1, Math.floor(o.windowMs / o.subWindows));
    store.onDown(() => this.#fallBack('connection closed'));
  }

  /** true while limits are global (the store answers) */
  get global(): boolean {
    return this.#global;
  }

  /** keys with global state on this Bridge */
  get size(): number {
    return this.#states.size;
  }

  /** Runs a sync round now (or the probe, while the store is down) and waits for it; tests and benchmarks. */
  async flush(): Promise<void> {
    while (this.#inflight) await new Promise((r) => setTimeout(r, 1));
    if (!this.#global) this.#lastProbe = 0;
    await this.#tick();
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.#tick(), this.#o.syncMs);
    this.#timer.unref();
    void this.#tick();
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#urgent) clearTimeout(this.#urgent as NodeJS.Timeout);
    this.#urgent = null;
    await this.#store.close();
  }

  #bridges(): number {
    const n = this.#o.bridges();
    return Number.isFinite(n) && n >= 1 ? Math.floor(n) : 1;
  }

  /** a per-minute limit as requests per window */
  #budgetOf(limitPerMin: number): number {
    return Math.max(1, Math.round((limitPerMin * this.#o.windowMs) / 60_000));
  }

  /** a key's budget per window as its per-minute limit (the outage counts keep the limit) */
  #limitOf(st: KeyState): number {
    return (st.budget * 60_000) / this.#o.windowMs;
  }

  /** what a key with no answer from the store yet may admit: 1/20 of this Bridge's share */
  #coldCredit(budget: number): number {
    return Math.ceil(budget / (20 * this.#bridges()));
  }

  take(keyId: string, limitPerMin: number, now: number): number {
    if (!this.#global) {
      const wait = this.#local.take(keyId, Math.max(1, limitPerMin / this.#bridges()), now);
      if (wait === 0) this.#carry(keyId, limitPerMin, Math.floor(now / this.#subMs), 1);
      return wait;
    }
    const budget = this.#budgetOf(limitPerMin);
    let st = this.#states.get(keyId);
    if (!st) {
      // bounded: past maxKeys a key gets its local share, as if the store were down
      if (this.#states.size >= this.#o.maxKeys) return this.#local.take(keyId, Math.max(1, limitPerMin / this.#bridges()), now);
      // nothing known yet: a small credit (1/20 of this Bridge's share) until the first answer, ~1 round trip away
      st = new KeyState(keyId, budget, this.#coldCredit(budget), now);
      this.#states.set(keyId, st);
      this.#soon();
    } else if (st.budget !== budget) {
      st.budget = budget;
    }
    st.arrivals++;
    st.lastSeen = now;
    if (!st.queued) {
      st.queued = true;
      this.#queue.push(st);
    }
    const sub = Math.floor(now / this.#subMs);
    if (st.lease > 0) {
      if (st.leaseSub === sub) {
        st.lease--;
        if (st.lease === 0) this.#soon();
        return 0;
      }
      if (st.leaseSub === sub - 1) {
        // a lease of the sub-window that just ended: used now, so at the next round it is given back
        // there and charged here (a request is counted in the sub-window it was admitted in)
        st.lease--;
        st.moved++;
        st.debt++;
        st.debtSub = sub;
        this.#soon();
        return 0;
      }
    }
    if (st.spent < st.credit) {
      st.spent++;
      st.debt++;
      st.debtSub = sub; // charged to the newest sub-window it spans: later, never earlier (conservative)
      return 0;
    }
    if (st.refusedAt === 0) this.#hot.add(st);
    st.refusedAt = now;
    this.#soon();
    return (sub + 1) * this.#subMs - now;
  }

  forget(keyId: string): void {
    const st = this.#states.get(keyId);
    if (st) this.#hot.delete(st);
    this.#states.delete(keyId);
    this.#local.forget(keyId);
    // what it was admitted while the store was down stays: those requests happened whatever changed
  }

  /**
   * `n` requests of `sub` the store has not counted (admitted while it was down, or debt it never
   * confirmed), to charge once it answers (bounded: maxKeys keys, one slot per sub-window)
   */
  #carry(keyId: string, limitPerMin: number, sub: number, n: number): void {
    let d = this.#admittedDown.get(keyId);
    if (!d) {
      if (this.#admittedDown.size >= this.#o.maxKeys) return;
      d = new DownCount(this.#o.subWindows, sub);
      this.#admittedDown.set(keyId, d);
    }
    d.add(sub, n);
    d.limitPerMin = limitPerMin;
  }

  /**
   * The store answers again: what each key was admitted locally within the last window becomes debt of
   * its first round, charged to the current sub-window (it then counts until a window from now, a little
   * longer than the requests themselves would: the safe side).
   */
  #chargeDownAdmissions(now: number): void {
    const sub = Math.floor(now / this.#subMs);
    for (const [keyId, d] of this.#admittedDown) {
      const admitted = d.within(sub);
      if (admitted === 0) continue;
      const budget = this.#budgetOf(d.limitPerMin);
      // the cold credit of a key seen for the first time (take), until the first round answers
      const st = new KeyState(keyId, budget, this.#coldCredit(budget), now);
      st.debt = admitted;
      st.debtSub = sub;
      st.queued = true;
      st.recovered = true;
      this.#states.set(keyId, st);
      this.#queue.push(st);
    }
    this.#admittedDown.clear();
  }

  /** A sync round as soon as allowed (at most one every syncMs/10, one in flight). */
  #soon(): void {
    if (this.#urgent || this.#closed || !this.#timer) return; // not started: rounds only through flush()
    if (this.#inflight) {
      this.#again = true;
      return;
    }
    const gap = Math.max(2, this.#o.syncMs / 10) - (this.#o.now() - this.#lastRoundAt);
    const run = () => {
      this.#urgent = null;
      void this.#tick();
    };
    this.#urgent = gap > 0 ? setTimeout(run, gap) : setImmediate(run);
  }

  async #tick(): Promise<void> {
    if (this.#closed) return;
    if (this.#inflight) {
      this.#again = true;
      return;
    }
    const now = this.#o.now();
    if (!this.#global) {
      if (now - this.#lastProbe >= PROBE_MS) await this.#probe(now);
      return;
    }
    this.#inflight = true;
    this.#lastRoundAt = now;
    try {
      await this.#round(now);
    } finally {
      this.#inflight = false;
      if (this.#again) {
        this.#again = false;
        this.#soon();
      }
    }
  }

  async #probe(now: number): Promise<void> {
    this.#lastProbe = now;
    this.#inflight = true;
    try {
      await this.#store.ping();
      if (this.#closed) return;
      this.#states.clear();
      this.#hot.clear();
      this.#queue = [];
      this.#global = true;
      this.#local = new KeyRateLimiter();
      this.#chargeDownAdmissions(this.#o.now());
      if (this.#everUp || this.#saidDown) this.#o.log.info({}, 'rate limits: the Redis store answers again; per-key limits are global again');
      else this.#o.log.info({ bridges: this.#bridges() }, 'rate limits: global per-key limits through the Redis store');
      this.#everUp = true;
      this.#saidDown = false;
    } catch (err) {
      if (!this.#saidDown) {
        this.#saidDown = true;
        this.#o.log.warn(
          { reason: reasonOf(err), bridges: this.#bridges() },
          'rate limits: the Redis store does not answer; each Bridge enforces limit/N of every key on its own until it does',
        );
      }
    } finally {
      this.#inflight = false;
    }
  }

  #fallBack(reason: string): void {
    if (!this.#global || this.#closed) return;
    this.#global = false;
    // what was admitted and not yet confirmed by the store (debt of the rounds to come, or of the round
    // that just failed) is charged once the store answers again, with what is admitted meanwhile
    for (const st of this.#states.values()) {
      if (st.debt > 0) this.#carry(st.keyId, this.#limitOf(st), st.debtSub, st.debt);
    }
    this.#states.clear();
    this.#hot.clear();
    this.#queue = [];
    this.#lastProbe = this.#o.now();
    if (!this.#saidDown) {
      this.#saidDown = true;
      this.#o.log.warn(
        { reason, bridges: this.#bridges() },
        'rate limits: the Redis store does not answer; each Bridge enforces limit/N of every key on its own until it does',
      );
    }
  }

  async #round(now: number): Promise<void> {
    const sub = Math.floor(now / this.#subMs);
    if (sub !== this.#lastSub) {
      this.#lastSub = sub;
      this.#sweep(now, sub);
    }
    for (const st of this.#hot) {
      if (now - st.refusedAt > this.#o.windowMs || this.#states.get(st.keyId) !== st) {
        st.refusedAt = 0;
        this.#hot.delete(st);
      } else if (!st.queued) {
        st.queued = true;
        this.#queue.push(st);
      }
    }
    if (this.#queue.length === 0) return;
    const batch = this.#queue.length <= this.#o.maxBatch ? this.#queue : this.#queue.slice(0, this.#o.maxBatch);
    this.#queue = batch === this.#queue ? [] : this.#queue.slice(this.#o.maxBatch);
    const n = this.#bridges();
    const items: WindowSyncItem[] = [];
    const sent: number[] = [];
    for (const st of batch) {
      st.queued = false;
      const dt = st.lastRound ? Math.max(1, now - st.lastRound) : this.#o.syncMs;
      st.rate = st.lastRound ? 0.5 * st.rate + (0.5 * st.arrivals) / dt : st.arrivals / dt;
      st.arrivals = 0;
      st.lastRound = now;
      let ret = 0;
      let retSub = 0;
      if ((st.lease > 0 || st.moved > 0) && st.leaseSub !== sub) {
        ret = st.lease + st.moved;
        retSub = st.leaseSub;
        st.lease = 0;
        st.moved = 0;
      }
      // enough for about two intervals of this Bridge's traffic for the key
      const target = Math.min(st.budget, Math.ceil(st.rate * this.#o.syncMs * 2) + 1);
      items.push({ keyId: st.keyId, budget: st.budget, sub, debt: st.debt, debtSub: st.debtSub, ret, retSub, want: Math.max(0, target - st.lease) });
      sent.push(st.debt);
      st.debt = 0;
    }
    let results;
    try {
      results = await this.#store.sync(items, n);
    } catch (err) {
      // not confirmed: the debt stays this Bridge's to charge (twice at worst, if the store took it and
      // the answer was lost: the safe side)
      for (let i = 0; i < batch.length; i++) {
        const st = batch[i]!;
        if (sent[i]! === 0) continue;
        if (this.#states.get(st.keyId) === st) {
          st.debt += sent[i]!;
          st.debtSub = Math.max(st.debtSub, items[i]!.debtSub);
        } else if (!this.#global) {
          // the connection closed meanwhile (the state is gone): carried like an outage's admissions
          this.#carry(st.keyId, this.#limitOf(st), items[i]!.debtSub, sent[i]!);
        }
      }
      if (this.#global) this.#fallBack(reasonOf(err));
      return;
    }
    if (!this.#global) return; // fell back meanwhile (connection closed): this state is gone
    for (let i = 0; i < batch.length; i++) {
      const st = batch[i]!;
      const r = results[i]!;
      const it = items[i]!;
      if (this.#states.get(st.keyId) !== st) continue; // forgotten meanwhile
      if (r.grant > 0) {
        st.lease += r.grant;
        st.leaseSub = sub;
      }
      // what the other Bridges added to the window since this Bridge's previous answer: about what it may not have seen
      const mine = sent[i]! + r.grant - it.ret;
      const guard = st.prevTotal >= 0 ? Math.max(0, r.total - st.prevTotal - mine) : 0;
      st.prevTotal = r.total;
      const free = st.budget - r.total - guard;
      st.credit = free > 0 && !st.recovered ? Math.floor(free / n) : 0;
      st.recovered = false;
      st.spent = st.debt; // admitted on credit while the answer was on its way
    }
  }

  /** Once per sub-window: idle keys are dropped; leases of a past sub-window are given back at the next round. */
  #sweep(now: number, sub: number): void {
    for (const [keyId, st] of this.#states) {
      if (now - st.lastSeen > this.#o.windowMs) {
        this.#states.delete(keyId);
      } else if ((((st.lease > 0 || st.moved > 0) && st.leaseSub !== sub) || st.debt > 0) && !st.queued) {
        st.queued = true;
        this.#queue.push(st);
      }
    }
  }
}

/** Why the store failed, without anything from its URL (the error code or a fixed text). */
function reasonOf(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  if (typeof code === 'string' && /^[A-Z_]+$/.test(code)) return code;
  const m = (err as Error)?.message ?? '';
  if (m.startsWith('no answer from the rate-limit store')) return 'timeout';
  // an error answered by the server (it never holds the URL)
  if ((err as Error)?.name === 'ReplyError') return m.slice(0, 120);
  if (/NOSCRIPT|WRONGPASS|NOAUTH|NOPERM|LOADING|READONLY|MISCONF|OOM/.test(m)) return /[A-Z]{4,}/.exec(m)![0];
  return 'error';
}
