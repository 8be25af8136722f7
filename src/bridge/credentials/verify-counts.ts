/**
 * How the Bridge's key checks ended, counted by the verifier in plain number fields (one increment
 * per request, no allocation) and read by `/metrics` at scrape time (stk_bridge_key_verifications_total,
 * stk_bridge_rate_limited_total). Every result is declared up front, so each series exists from the
 * start (a rate over a series that appears late misses its first increase).
 */
export const VERIFY_RESULTS = [
  'ok',
  /** no X-Santokit-Api-Key */
  'missing',
  /** not a Santokit key, or its checksum does not match */
  'malformed',
  'unknown',
  'secret',
  'revoked',
  'expired',
  'suspended',
  'ip_denied',
  /** the key's per-key rate limit (429) */
  'rate_limited',
  /** X-Santokit-Project/Env do not match the key's binding (403) */
  'binding',
  /** the Bridge is past max-stale (503) */
  'stale',
  /** an unknown key id before the first sync (503) */
  'unsynced',
] as const;

export type VerifyResult = (typeof VERIFY_RESULTS)[number];

export type VerifyCounts = Record<VerifyResult, number> & {
  /** invalid keys answered 429 because their address passed STK_INVALID_KEY_LIMIT_PER_MIN */
  flooded: number;
};

export function newVerifyCounts(): VerifyCounts {
  const c = { flooded: 0 } as VerifyCounts;
  for (const r of VERIFY_RESULTS) c[r] = 0;
  return c;
}
