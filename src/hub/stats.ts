/**
 * What the Hub counts for `/metrics` (src/hub/metrics.ts reads it at scrape time): plain numbers and
 * histogram cells, kept whether metrics are on or not (a login or a change is rare enough).
 */
import { ACK_BUCKETS, histogramMap } from '../common/metric-cells.js';
import type { AckResult } from '../protocol/api/define.js';

export const LOGIN_RESULTS = ['ok', 'invalid', 'throttled', 'malformed'] as const;
export type LoginResult = (typeof LOGIN_RESULTS)[number];

/** what a change waited for: the sync record kinds the Bridges apply */
export type ChangeKind = 'apikey' | 'release' | 'connection';

export class HubStats {
  readonly logins = Object.fromEntries(LOGIN_RESULTS.map((r) => [r, 0])) as Record<LoginResult, number>;
  /** commit → every Bridge applied it: seconds, by change kind and outcome (acked, lagging, no_bridges) */
  readonly acks = histogramMap(['change', 'outcome'], ACK_BUCKETS);
  /** Bridges that had not applied the most recent change when its wait ended */
  lastLagging = 0;
  /** lagging Bridges summed over every wait */
  laggingTotal = 0;

  constructor() {
    // every series exists from the start
    for (const c of ['apikey', 'release', 'connection']) for (const o of ['acked', 'lagging', 'no_bridges']) this.acks.get(c, o);
  }

  ack(change: ChangeKind, r: AckResult, seconds: number): void {
    const outcome = r.bridges === 0 ? 'no_bridges' : r.lagging.length ? 'lagging' : 'acked';
    this.acks.get(change, outcome).observe(seconds);
    this.lastLagging = r.lagging.length;
    this.laggingTotal += r.lagging.length;
  }
}
