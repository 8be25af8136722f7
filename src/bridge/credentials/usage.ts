import type { UsageReport } from '../../protocol/sync.js';

const MAX_SOURCES = 20;
const MAX_KEYS = 200_000;

interface KeyUsage {
  /** minute number (epoch ms / 60000) → requests */
  minutes: Map<number, number>;
  last: number;
  sources: Map<string, number>;
}

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
      u = { minutes: new Map(), last: 0, sources: new Map() };
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

  get pending(): number {
    return this.#keys.size;
  }

  drain(bridgeId: string): UsageReport | null {
    if (this.#keys.size === 0) return null;
    const keys = this.#keys;
    this.#keys = new Map();
    const report: UsageReport = { bridgeId, keys: [] };
    for (const [keyId, u] of keys) {
      report.keys.push({
        keyId,
        minutes: [...u.minutes].map(([m, count]) => ({ minute: new Date(m * 60_000).toISOString(), count })),
        lastUsedAt: new Date(u.last).toISOString(),
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
        u = { minutes: new Map(), last: 0, sources: new Map() };
        this.#keys.set(k.keyId, u);
      }
      for (const m of k.minutes) {
        const minute = Math.floor(Date.parse(m.minute) / 60_000);
        if (minute >= oldest) u.minutes.set(minute, (u.minutes.get(minute) ?? 0) + m.count);
      }
      u.last = Math.max(u.last, Date.parse(k.lastUsedAt) || 0);
      for (const s of k.sources) {
        const n = u.sources.get(s.address);
        if (n !== undefined) u.sources.set(s.address, n + s.count);
        else if (u.sources.size < MAX_SOURCES) u.sources.set(s.address, s.count);
      }
    }
  }
}
