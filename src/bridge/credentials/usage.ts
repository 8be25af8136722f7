import type { UsageReport } from '../../protocol/sync.js';

const MAX_SOURCES = 20;
const MAX_KEYS = 200_000;

interface KeyUsage {
  /** minute number (epoch ms / 60000) → requests */
  minutes: Map<number, number>;
  last: number;
  sources: Map<string, number>;
  /** minute → `e<status>` (a call that failed) or `r<status>` (refused before the call) → requests; only once one happens */
  outcomes: Map<number, Map<string, number>> | null;
}

const newUsage = (): KeyUsage => ({ minutes: new Map(), last: 0, sources: new Map(), outcomes: null });

/**
 * Per-key request counts kept in memory between reports to the Hub (no write per request).
 * `drain()` hands over everything counted since the previous drain; `restore()` puts a report back
 * when sending it failed, so counts survive a Hub outage.
 */
export class UsageCounter {
  #keys = new Map<string, KeyUsage>();

  count(keyId: string, address: string | undefined, now: number): void {
    let u = this.#keys.get(keyId);
    if (!u) {
      if (this.#keys.size >= MAX_KEYS) return;
      u = newUsage();
      this.#keys.set(keyId, u);
    }
    const minute = Math.floor(now / 60_000);
    u.minutes.set(minute, (u.minutes.get(minute) ?? 0) + 1);
    if (now > u.last) u.last = now;
    if (address) {
      const n = u.sources.get(address);
      if (n !== undefined) u.sources.set(address, n + 1);
      else if (u.sources.size < MAX_SOURCES) u.sources.set(address, 1);
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
    if (this.#keys.size === 0) return null;
    const keys = this.#keys;
    this.#keys = new Map();
    const report: UsageReport = { bridgeId, keys: [] };
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
      report.keys.push({
        keyId,
        minutes: [...minutes.values()],
        lastUsedAt: u.last ? new Date(u.last).toISOString() : null,
        sources: [...u.sources].map(([address, count]) => ({ address, count })),
      });
    }
    return report;
  }

  /** Merges an unsent report back (minutes older than a day are dropped). */
  restore(report: UsageReport): void {
    const oldest = Math.floor(Date.now() / 60_000) - 1440;
    for (const k of report.keys) {
      let u = this.#keys.get(k.keyId);
      if (!u) {
        if (this.#keys.size >= MAX_KEYS) continue;
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
      u.last = Math.max(u.last, (k.lastUsedAt && Date.parse(k.lastUsedAt)) || 0);
      for (const s of k.sources) {
        const n = u.sources.get(s.address);
        if (n !== undefined) u.sources.set(s.address, n + s.count);
        else if (u.sources.size < MAX_SOURCES) u.sources.set(s.address, s.count);
      }
    }
  }
}
