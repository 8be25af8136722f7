/** Parses "90d", "12h", "30m", "45s", "1w" or a plain number of seconds into seconds. */
export function parseDuration(input: string | number): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) throw new Error(`invalid duration ${input}`);
    return input;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$/.exec(input);
  if (!m) throw new Error(`invalid duration "${input.slice(0, 40)}": use e.g. 30s, 15m, 12h, 90d`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const mult = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[unit]!;
  return n * mult;
}
