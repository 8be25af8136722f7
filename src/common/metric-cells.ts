/**
 * The counting side of `/metrics`, cheap enough for the Bridge's hot path: a counter cell is a plain
 * number field, a histogram cell a Float64Array of bucket counts. Nothing here hashes label objects or
 * allocates per observation (prom-client's own `observe` does both, even on a child bound with
 * `labels()`). The cells are turned into Prometheus families at scrape time only (./metrics.ts).
 *
 * This module imports nothing, so a process with metrics off loads no metrics library.
 */

/** Upper bounds (seconds) of request and query latency histograms: 0.5 ms … 10 s. */
export const LATENCY_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Upper bounds (seconds) of the Hub's "every Bridge applied this change" waits. */
export const ACK_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10];

/** status class label by `status / 100` */
const CLASSES = ['other', '1xx', '2xx', '3xx', '4xx', '5xx'];
export const statusClass = (status: number): string => CLASSES[(status / 100) | 0] ?? 'other';

/** the route label of a request no route matched (404/405): never its URL */
export const UNMATCHED = 'unmatched';

/** One label set's counter. */
export class CounterCell {
  n = 0;
  constructor(readonly labels: Readonly<Record<string, string>>) {}
}

/** One label set's histogram: non-cumulative counts per bucket (the last is +Inf), sum and count. */
export class HistogramCell {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(
    readonly labels: Readonly<Record<string, string>>,
    readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
}

/**
 * Cells by label values, created on first use. The caller bounds the label values (an enum, a route
 * pattern, an error code of the catalogue): never a key id, an address or raw request text.
 */
export class CellMap<C extends CounterCell | HistogramCell> {
  readonly #cells = new Map<string, C>();
  constructor(
    readonly labelNames: readonly string[],
    readonly make: (labels: Record<string, string>) => C,
  ) {}

  /** The cell of these label values (in `labelNames` order). */
  get(...values: string[]): C {
    const k = values.length === 1 ? values[0]! : values.join('\u0000');
    let c = this.#cells.get(k);
    if (c === undefined) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((n, i) => (labels[n] = values[i] ?? ''));
      c = this.make(labels);
      this.#cells.set(k, c);
    }
    return c;
  }

  values(): IterableIterator<C> {
    return this.#cells.values();
  }
}

export const counterMap = (labelNames: readonly string[]) => new CellMap<CounterCell>(labelNames, (l) => new CounterCell(l));
export const histogramMap = (labelNames: readonly string[], bounds: readonly number[]) =>
  new CellMap<HistogramCell>(labelNames, (l) => new HistogramCell(l, bounds));
