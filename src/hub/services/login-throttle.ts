/**
 * Login throttling, in memory (per Hub process), with no timers: state ages lazily from timestamps.
 *
 * - Per client address: at most `perAddress` failures in a sliding window (default 10 per 5 min).
 * - Per account (the typed email, keyed by its hash so nothing typed is kept in clear): at most
 *   `perAccount` failures in the window from addresses this account has not logged in from; reaching
 *   it locks the account against such addresses for the window, doubling with each lock in a row up
 *   to `maxLockMs` (5, 10, 20, 40, 60, 60 … min). A success resets it. Addresses the account logged in
 *   from before (the last few) keep only their per-address budget, so a flood from elsewhere does not
 *   lock the owner out.
 * - An attempt counts as a failure from the moment it starts until its password checks out, so
 *   concurrent attempts see each other and no more than the limits ever reach the password hash.
 * - Both maps hold at most `maxTracked` entries: idle ones are pruned first, then the oldest half
 *   (locked accounts last), so a distributed flood cannot grow them without bound.
 */
export interface LoginThrottleOptions {
  windowMs: number;
  perAddress: number;
  perAccount: number;
  maxLockMs: number;
  maxTracked: number;
  /** addresses remembered per account after a successful login */
  familiarPerAccount: number;
}

export const LOGIN_THROTTLE_DEFAULTS: LoginThrottleOptions = {
  windowMs: 5 * 60_000,
  perAddress: 10,
  perAccount: 10,
  maxLockMs: 60 * 60_000,
  maxTracked: 50_000,
  familiarPerAccount: 8,
};

interface AddressEntry {
  /** start times of failures (and of attempts still in flight) inside the window, oldest first */
  times: number[];
}

interface AccountEntry {
  times: number[];
  lockedUntil: number;
  /** locks in a row; decays after a quiet `maxLockMs` */
  strikes: number;
  lastFailure: number;
}

export interface LoginTicket {
  address: string;
  account: string;
  at: number;
  /** counted against the account too (the address is not one it logged in from) */
  counted: boolean;
  /** this attempt started a lock of the account (for the audit log) */
  locked: { strikes: number; lockMs: number } | null;
}

export type LoginRefusal = { retryAfterMs: number; scope: 'address' | 'account' };

export class LoginThrottle {
  readonly o: LoginThrottleOptions;
  readonly #addresses = new Map<string, AddressEntry>();
  readonly #accounts = new Map<string, AccountEntry>();
  /** account → addresses it logged in from (most recent last); only written on success */
  readonly #familiar = new Map<string, string[]>();

  constructor(o: Partial<LoginThrottleOptions> = {}) {
    this.o = { ...LOGIN_THROTTLE_DEFAULTS, ...o };
  }

  /**
   * Called before the password check. Either refuses (429 material) or reserves the attempt as a
   * failure and returns a ticket; pass it to `succeeded` when the password checks out.
   */
  begin(address: string, account: string, now: number): LoginTicket | LoginRefusal {
    const { windowMs, perAddress, perAccount } = this.o;
    const addr = this.#addresses.get(address);
    if (addr) {
      trim(addr.times, now - windowMs);
      if (addr.times.length >= perAddress) return { retryAfterMs: addr.times[0]! + windowMs - now, scope: 'address' };
    }
    const familiar = this.#familiar.get(account)?.includes(address) ?? false;
    let acct = this.#accounts.get(account);
    if (acct && !familiar) {
      trim(acct.times, now - windowMs);
      if (acct.lockedUntil > now) return { retryAfterMs: acct.lockedUntil - now, scope: 'account' };
      if (acct.strikes > 0 && now - acct.lastFailure > this.o.maxLockMs) acct.strikes = 0;
    }
    // reserve
    if (addr) addr.times.push(now);
    else this.#put(this.#addresses, address, { times: [now] }, now);
    let locked: LoginTicket['locked'] = null;
    if (!familiar) {
      if (!acct) {
        acct = { times: [], lockedUntil: 0, strikes: 0, lastFailure: now };
        this.#put(this.#accounts, account, acct, now);
      }
      acct.times.push(now);
      acct.lastFailure = now;
      if (acct.times.length >= perAccount) {
        acct.strikes++;
        const lockMs = Math.min(windowMs * 2 ** (acct.strikes - 1), this.o.maxLockMs);
        acct.lockedUntil = now + lockMs;
        acct.times.length = 0;
        locked = { strikes: acct.strikes, lockMs };
      }
    }
    return { address, account, at: now, counted: !familiar, locked };
  }

  /**
   * The password checked out: the reservation is no failure and the address becomes familiar to the
   * account. From an unfamiliar address (the account was not locked, or the attempt was refused) the
   * account's failures and strikes reset too; a success from a familiar address leaves the state a
   * flood from elsewhere built up as it is.
   */
  succeeded(t: LoginTicket, now: number): void {
    const addr = this.#addresses.get(t.address);
    if (addr) {
      const i = addr.times.indexOf(t.at);
      if (i >= 0) addr.times.splice(i, 1);
      if (addr.times.length === 0) this.#addresses.delete(t.address);
    }
    if (t.counted) this.#accounts.delete(t.account);
    const known = (this.#familiar.get(t.account) ?? []).filter((a) => a !== t.address);
    known.push(t.address);
    if (known.length > this.o.familiarPerAccount) known.shift();
    this.#familiar.delete(t.account);
    this.#put(this.#familiar, t.account, known, now);
  }

  /** Entries held (for tests and metrics). */
  get size(): { addresses: number; accounts: number; familiar: number } {
    return { addresses: this.#addresses.size, accounts: this.#accounts.size, familiar: this.#familiar.size };
  }

  #put<V>(map: Map<string, V>, key: string, value: V, now: number): void {
    if (map.size >= this.o.maxTracked) this.#prune(map as Map<string, unknown>, now);
    map.set(key, value);
  }

  #prune(map: Map<string, unknown>, now: number): void {
    const cutoff = now - this.o.windowMs;
    for (const [k, v] of map) {
      const e = v as Partial<AccountEntry>;
      if (
        !Array.isArray(v) &&
        (e.times ?? []).every((t) => t <= cutoff) &&
        (e.lockedUntil ?? 0) <= now &&
        !(e.strikes && now - e.lastFailure! <= this.o.maxLockMs)
      )
        map.delete(k);
    }
    // still full (a distributed flood): drop the oldest half, locked accounts last
    if (map.size >= this.o.maxTracked) {
      let n = Math.ceil(map.size / 2);
      for (const pass of [0, 1]) {
        for (const [k, v] of map) {
          if (n <= 0) return;
          if (pass === 0 && ((v as Partial<AccountEntry>).lockedUntil ?? 0) > now) continue;
          map.delete(k);
          n--;
        }
      }
    }
  }
}

/** Drops timestamps at or before `cutoff` from the front of an ascending list. */
function trim(times: number[], cutoff: number): void {
  let i = 0;
  while (i < times.length && times[i]! <= cutoff) i++;
  if (i) times.splice(0, i);
}

export const isRefusal = (r: LoginTicket | LoginRefusal): r is LoginRefusal => 'retryAfterMs' in r;

/** failed-login and account-lock rows written to the audit log per minute per Hub (the rest are counted) */
export const LOGIN_FAILURE_AUDIT_PER_MINUTE = 60;

/**
 * At most `perMinute` audit rows of one kind per minute (fixed windows); what is left out is counted
 * and reported in the next row that is written, so the log stays bounded and still says how much
 * happened.
 */
export class AuditBudget {
  #windowStart = 0;
  #used = 0;
  #suppressed = 0;
  constructor(readonly perMinute: number) {}

  /** null: leave this row out (counted); otherwise write it, with `suppressed` rows left out before it. */
  take(now: number): { suppressed: number } | null {
    if (now - this.#windowStart >= 60_000) {
      this.#windowStart = now;
      this.#used = 0;
    }
    if (this.#used >= this.perMinute) {
      this.#suppressed++;
      return null;
    }
    this.#used++;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    return { suppressed };
  }
}
