import type { UsageReport } from '../../protocol/sync.js';
import { SECRET_PREVIOUS, type SecretMatch } from './key-table.js';

const MAX_SOURCES = 20;
const MAX_KEYS = 200_000;
/** client addresses of a previous secret's requests kept per key between reports (the busiest, Space-Saving) */
export const MAX_GRACE_SOURCES = 10;

/** Requests of a key counted per secret while its entry had a rotation grace period ending at `until`. */
interface GraceUsage {
  until: number;
  current: number;
  previous: number;
  curLast: number;
  prevLast: number;
  /** the previous secret's client addresses, at most MAX_GRACE_SOURCES; null until one is seen */
  sources: Map<string, number> | null;
}

interface KeyUsage {
  /** minute number (epoch ms / 60000) → requests */
  minutes: Map<number, number>;
  /** the last request counted without a grace period on its entry (`plainLastUsedAt`); see `grace` for the others */
  last: number;
  sources: Map<string, number>;
  /** minute → `e<status>` (a call that failed) or `r<status>` (refused before the call) → requests; only once one happens */
  outcomes: Map<number, Map<string, number>> | null;
  /** only for a key used while its entry had a rotation grace period */
  grace: GraceUsage | null;
}

const newUsage = (): KeyUsage => ({ minutes: new Map(), last: 0, sources: new Map(), outcomes: null, grace: null });

/**
 * Adds `n` requests from `address` to a bounded top-k (Space-Saving): past k addresses, a new one takes
 * the place of the least counted and inherits its count, so every address whose true count exceeds
 * total/k is kept, the counts stay upper bounds, and memory stays k entries whatever the traffic.
 */
export function topAdd(m: Map<string, number>, address: string, n: number, k: number): void {
  const c = m.get(address);
  if (c !== undefined) {
    m.set(address, c + n);
    return;
  }
  if (m.size < k) {
    m.set(address, n);
    return;
  }
  let minAddress = '';
  let min = Infinity;
  for (const [a, x] of m) {
    if (x < min) {
      min = x;
      minAddress = a;
    }
  }
  m.delete(minAddress);
  m.set(address, min + n);
}

const iso = (ms: number) => (ms ? new Date(ms).toISOString() : null);
const ms = (s: string | null | undefined) => (s && Date.parse(s)) || 0;

/**
 * Per-key request counts kept in memory between reports to the Hub (no write per request).
 * `drain()` hands over everything counted since the previous drain; `restore()` puts a report back
 * when sending it failed, so counts survive a Hub outage.
 */
export class UsageCounter {
  #keys = new Map<string, KeyUsage>();
  /** the last request that could not be counted since the last drain (0: none): reported as `lostLastAt` */
  #lostLast = 0;

  /** Requests up to `at` could not be counted (or reported): the next report says so. */
  lost(at: number): void {
    if (at > this.#lostLast) this.#lostLast = at;
  }

  /**
   * One authenticated request. `secret` says which secret it used (`KeyEntry.secretMatches`): a key
   * without a grace period (0 or 1) costs what it always did; during a grace period (2: the current
   * secret, 3: the previous one, `until` = the entry's grace deadline) the request is also counted per
   * secret, with the previous secret's client addresses.
   */
  count(keyId: string, address: string | undefined, now: number, secret: SecretMatch = 0, until = 0): void {
    let u = this.#keys.get(keyId);
    if (!u) {
      if (this.#keys.size >= MAX_KEYS) {
        if (now > this.#lostLast) this.#lostLast = now;
        return;
      }
      u = newUsage();
      this.#keys.set(keyId, u);
    }
    const minute = Math.floor(now / 60_000);
    u.minutes.set(minute, (u.minutes.get(minute) ?? 0) + 1);
    if (secret < 2) {
      if (now > u.last) u.last = now;
    } else this.#graceHit(u, secret === SECRET_PREVIOUS, until, address, now, 1);
    if (address) {
      const n = u.sources.get(address);
      if (n !== undefined) u.sources.set(address, n + 1);
      else if (u.sources.size < MAX_SOURCES) u.sources.set(address, 1);
    }
  }

  #graceOf(u: KeyUsage, until: number): GraceUsage {
    let g = u.grace;
    if (g === null || g.until !== until) {
      // counted under an earlier grace period (the key was rotated again meanwhile): reported as plain
      // requests, which the Hub treats as possibly made with the now previous secret (conservative)
      if (g !== null) u.last = Math.max(u.last, g.curLast, g.prevLast);
      g = u.grace = { until, current: 0, previous: 0, curLast: 0, prevLast: 0, sources: null };
    }
    return g;
  }

  #graceHit(u: KeyUsage, previous: boolean, until: number, address: string | undefined, now: number, n: number): void {
    const g = this.#graceOf(u, until);
    if (previous) {
      g.previous += n;
      if (now > g.prevLast) g.prevLast = now;
      if (address) topAdd((g.sources ??= new Map<string, number>()), address, n, MAX_GRACE_SOURCES);
    } else {
      g.current += n;
      if (now > g.curLast) g.curLast = now;
    }
  }

  /** A request with this key that failed in the call (`error`, it was counted) or was refused before it (`rejected`). */
  outcome(keyId: string, kind: 'error' | 'rejected', status: number, now: number): void {
    let u = this.#keys.get(keyId);
    if (!u) {
      if (this.#keys.size >= MAX_KEYS) return;
      u = newUsage();
      this.#keys.set(keyId, u);
    }
    this.#addOutcome(u, Math.floor(now / 60_000), `${kind === 'error' ? 'e' : 'r'}${status}`, 1);
  }

  #addOutcome(u: KeyUsage, minute: number, tag: string, n: number): void {
    const byMinute = (u.outcomes ??= new Map<number, Map<string, number>>());
    let m = byMinute.get(minute);
    if (!m) byMinute.set(minute, (m = new Map<string, number>()));
    m.set(tag, (m.get(tag) ?? 0) + n);
  }

  get pending(): number {
    return this.#keys.size;
  }

  drain(bridgeId: string): UsageReport | null {
    if (this.#keys.size === 0 && this.#lostLast === 0) return null;
    const keys = this.#keys;
    this.#keys = new Map();
    const report: UsageReport = { bridgeId, perSecret: true, keys: [] };
    if (this.#lostLast) report.lostLastAt = new Date(this.#lostLast).toISOString();
    this.#lostLast = 0;
    for (const [keyId, u] of keys) {
      const minutes = new Map<number, UsageReport['keys'][number]['minutes'][number]>();
      const at = (m: number) => {
        let e = minutes.get(m);
        if (!e) minutes.set(m, (e = { minute: new Date(m * 60_000).toISOString(), count: 0 }));
        return e;
      };
      for (const [m, count] of u.minutes) at(m).count = count;
      for (const [m, tags] of u.outcomes ?? []) {
        const e = at(m);
        for (const [tag, n] of tags) {
          const bucket = tag[0] === 'e' ? (e.errors ??= {}) : (e.rejected ??= {});
          bucket[tag.slice(1)] = n;
        }
      }
      const g = u.grace;
      report.keys.push({
        keyId,
        minutes: [...minutes.values()],
        lastUsedAt: iso(g ? Math.max(u.last, g.curLast, g.prevLast) : u.last),
        sources: [...u.sources].map(([address, count]) => ({ address, count })),
        plainLastUsedAt: iso(u.last),
        ...(g && {
          grace: {
            prevUntil: new Date(g.until).toISOString(),
            current: g.current,
            previous: g.previous,
            currentLastUsedAt: iso(g.curLast),
            previousLastUsedAt: iso(g.prevLast),
            previousSources: [...(g.sources ?? [])].map(([address, count]) => ({ address, count })),
          },
        }),
      });
    }
    return report;
  }

  /** Merges an unsent report back (minutes older than a day are dropped). */
  restore(report: UsageReport): void {
    const oldest = Math.floor(Date.now() / 60_000) - 1440;
    this.lost(ms(report.lostLastAt));
    for (const k of report.keys) {
      let u = this.#keys.get(k.keyId);
      if (!u) {
        if (this.#keys.size >= MAX_KEYS) {
          this.lost(Math.max(ms(k.lastUsedAt), Date.now() - 1));
          continue;
        }
        u = newUsage();
        this.#keys.set(k.keyId, u);
      }
      for (const m of k.minutes) {
        const minute = Math.floor(Date.parse(m.minute) / 60_000);
        if (minute < oldest) continue;
        if (m.count) u.minutes.set(minute, (u.minutes.get(minute) ?? 0) + m.count);
        for (const [status, n] of Object.entries(m.errors ?? {})) this.#addOutcome(u, minute, `e${status}`, n);
        for (const [status, n] of Object.entries(m.rejected ?? {})) this.#addOutcome(u, minute, `r${status}`, n);
      }
      // a report of this Bridge carries plainLastUsedAt (lastUsedAt includes the grace requests)
      u.last = Math.max(u.last, ms(report.perSecret ? k.plainLastUsedAt : k.lastUsedAt));
      const rg = k.grace;
      if (rg) {
        const until = ms(rg.prevUntil);
        if (u.grace && u.grace.until !== until) {
          // counted since under a newer grace period: the older one's requests become plain (as in #graceOf)
          u.last = Math.max(u.last, ms(rg.currentLastUsedAt), ms(rg.previousLastUsedAt));
        } else {
          const g = this.#graceOf(u, until);
          g.current += rg.current;
          g.previous += rg.previous;
          g.curLast = Math.max(g.curLast, ms(rg.currentLastUsedAt));
          g.prevLast = Math.max(g.prevLast, ms(rg.previousLastUsedAt));
          for (const s of rg.previousSources) topAdd((g.sources ??= new Map<string, number>()), s.address, s.count, MAX_GRACE_SOURCES);
        }
      }
      for (const s of k.sources) {
        const n = u.sources.get(s.address);
        if (n !== undefined) u.sources.set(s.address, n + s.count);
        else if (u.sources.size < MAX_SOURCES) u.sources.set(s.address, s.count);
      }
    }
  }
}
