/**
 * Per-key token buckets and per-address invalid-key counters. Both are plain Maps touched once per
 * request (the second only for invalid keys) with no timers: state refills lazily from the elapsed time.
 */

/** What the verifier asks once per authenticated request: the per-Bridge bucket below, or the global limiter (global-limits.ts). */
export interface RateLimiter {
  /** 0 = allowed; otherwise the milliseconds until the next request would be allowed. Synchronous: no I/O. */
  take(keyId: string, limitPerMin: number, now: number): number;
  /** the key changed (limit, revoked, deleted): its state starts over */
  forget(keyId: string): void;
}

interface Bucket {
  tokens: number;
  last: number;
  limit: number;
}

/**
 * A token bucket per key: capacity = the per-minute limit, refilled continuously at limit/60 s. A key
 * can burst its whole minute's budget, then gets one request per (60 s / limit).
 */
export class KeyRateLimiter implements RateLimiter {
  readonly #buckets = new Map<string, Bucket>();

  /** 0 = allowed; otherwise the milliseconds until the next request would be allowed. */
  take(keyId: string, limitPerMin: number, now: number): number {
    let b = this.#buckets.get(keyId);
    if (!b || b.limit !== limitPerMin) {
      b = { tokens: limitPerMin, last: now, limit: limitPerMin };
      this.#buckets.set(keyId, b);
    }
    const rate = limitPerMin / 60_000; // tokens per ms
    if (now > b.last) {
      b.tokens = Math.min(limitPerMin, b.tokens + (now - b.last) * rate);
      b.last = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - b.tokens) / rate);
  }

  forget(keyId: string): void {
    this.#buckets.delete(keyId);
  }

  get size(): number {
    return this.#buckets.size;
  }
}

interface Window {
  start: number;
  count: number;
}

/**
 * Invalid-key attempts per client address in fixed one-minute windows. Once an address is past the
 * limit, its invalid keys get 429 instead of 401 until its window ends; valid keys are never looked up
 * here. At most `maxTracked` addresses are tracked (a distributed flood drops the oldest).
 */
export class FailureLimiter {
  readonly #windows = new Map<string, Window>();
  constructor(
    readonly limitPerMin: number,
    readonly windowMs = 60_000,
    readonly maxTracked = 100_000,
  ) {}

  /**
   * Counts one invalid key from `address`: 0 while the address is within its limit (answer 401),
   * otherwise the ms until its window ends (answer 429).
   */
  fail(address: string, now: number): number {
    let w = this.#windows.get(address);
    if (!w || now - w.start >= this.windowMs) {
      if (!w && this.#windows.size >= this.maxTracked) this.#prune(now);
      w = { start: now, count: 0 };
      this.#windows.set(address, w);
    }
    w.count++;
    return this.limitPerMin > 0 && w.count > this.limitPerMin ? w.start + this.windowMs - now : 0;
  }

  get size(): number {
    return this.#windows.size;
  }

  #prune(now: number) {
    for (const [a, w] of this.#windows) if (now - w.start >= this.windowMs) this.#windows.delete(a);
    // still full (a distributed flood): drop the oldest half rather than grow without bound
    if (this.#windows.size >= this.maxTracked) {
      let n = this.#windows.size / 2;
      for (const a of this.#windows.keys()) {
        if (n-- <= 0) break;
        this.#windows.delete(a);
      }
    }
  }
}
