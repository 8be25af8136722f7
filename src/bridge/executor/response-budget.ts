/**
 * Bounds on the bytes of `/call` answers, counted while PostgreSQL sends the rows (see the wire
 * walker in ./index.ts), never after the whole answer was built:
 *
 * - one answer may hold at most `STK_RESPONSE_MAX_BYTES` (default 10 MB): past it a read stops at
 *   once (its connection is closed, so the rest of the rows is never received) and the caller gets
 *   `400 RESPONSE_TOO_LARGE` telling it to select fewer columns, narrow the where or page;
 * - all answers being built or sent by this Bridge together may hold at most
 *   `STK_RESPONSE_INFLIGHT_MAX_BYTES` (default 64 MB), and one project/env at most half of it: a read
 *   that would pass either gets `503 SERVICE_UNAVAILABLE` with `Retry-After`.
 *
 * The first FREE_BYTES of every answer are not reserved from the Bridge-wide gauge, so small answers
 * (nearly all of them) never touch it: whatever one tenant pulls, other tenants' small calls go on.
 * A budget's reservation is held until its response has been sent (or the client went away).
 */

/** bytes of an answer that need no reservation from the gauge */
export const FREE_BYTES = 64 * 1024;
/** the gauge is reserved from in steps of this many bytes */
const STEP_BYTES = 1024 * 1024;

/** why a budget refused to grow: none yet, the answer passed STK_RESPONSE_MAX_BYTES, or the Bridge
 * (or this tenant's share of it) holds its limit of answers in memory */
export const Overflow = { None: 0, TooLarge: 1, Busy: 2 } as const;
export type Overflow = (typeof Overflow)[keyof typeof Overflow];

export interface ResponseLimits {
  /** STK_RESPONSE_MAX_BYTES */
  maxBytes: number;
  /** STK_RESPONSE_INFLIGHT_MAX_BYTES */
  inflightMaxBytes: number;
}

/** The Bridge-wide count of reserved answer bytes, and each tenant's part of it. */
export class ResponseGauge {
  inflight = 0;
  readonly tenantMax: number;
  readonly #tenants = new Map<string, number>();

  constructor(readonly limits: ResponseLimits) {
    this.tenantMax = Math.floor(limits.inflightMaxBytes / 2);
  }

  /** A budget for one request's answer (`read`: a select, whose query may be stopped). */
  budget(project: string, env: string, read: boolean): ResponseBudget {
    return new ResponseBudget(this, project, env, read);
  }

  /** Takes `n` bytes for `tenant` if both the Bridge and the tenant have room. */
  take(tenant: string, n: number): boolean {
    const held = this.#tenants.get(tenant) ?? 0;
    if (this.inflight + n > this.limits.inflightMaxBytes || held + n > this.tenantMax) return false;
    this.inflight += n;
    this.#tenants.set(tenant, held + n);
    return true;
  }

  give(tenant: string, n: number): void {
    this.inflight -= n;
    const held = (this.#tenants.get(tenant) ?? n) - n;
    if (held > 0) this.#tenants.set(tenant, held);
    else this.#tenants.delete(tenant);
  }

  /** bytes held by one tenant (tests, metrics) */
  held(project: string, env: string): number {
    return this.#tenants.get(project + '\u0000' + env) ?? 0;
  }
}

/**
 * One request's answer: `used` bytes counted so far (DataRow messages as they arrive, plus expanded
 * relations as they are attached); `limit` is how far it may grow before it has to reserve more.
 */
export class ResponseBudget {
  used = 0;
  limit: number;
  reserved = 0;
  overflow: Overflow = Overflow.None;
  #tenant: string | undefined;

  constructor(
    readonly gauge: ResponseGauge,
    readonly project: string,
    readonly env: string,
    /** a read may be stopped when over; a write's statement always completes (its outcome must be known) */
    readonly read: boolean,
  ) {
    // a write's answer is not reserved from the gauge: it is only bounded (rows past the bound are dropped)
    this.limit = read ? Math.min(FREE_BYTES, gauge.limits.maxBytes) : gauge.limits.maxBytes;
  }

  /** Counts `n` more bytes; false (and `overflow` set) when the answer may not grow that far. */
  add(n: number): boolean {
    this.used += n;
    return this.used <= this.limit || this.grow();
  }

  /** The slow path of `add`: past the free part, reserve from the gauge in steps. */
  grow(): boolean {
    if (this.overflow !== Overflow.None) return false;
    const max = this.gauge.limits.maxBytes;
    if (this.used > max) {
      this.overflow = Overflow.TooLarge;
      return false;
    }
    const want = Math.min(max, this.used + STEP_BYTES) - this.limit;
    this.#tenant ??= this.project + '\u0000' + this.env;
    if (!this.gauge.take(this.#tenant, want)) {
      this.overflow = Overflow.Busy;
      return false;
    }
    this.reserved += want;
    this.limit += want;
    return true;
  }

  /** Returns the reservation to the gauge (idempotent). */
  release(): void {
    if (this.reserved === 0) return;
    this.gauge.give(this.#tenant!, this.reserved);
    this.reserved = 0;
  }
}
