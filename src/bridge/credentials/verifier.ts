import { AppError, forbidden, stacklessError, unavailable } from '../../protocol/errors.js';
import { API_KEY_HEADER, ENV_HINT_HEADER, PROJECT_HINT_HEADER } from '../../protocol/call.js';
import { hashSecret, parseKey } from '../../protocol/key-format.js';
import { ipAllowed } from '../../common/ip-allowlist.js';
import type { CredentialRequest, CredentialVerifier, Principal } from '../context.js';
import { NO_SUCH_KEY, SECRET_NONE, type KeyEntry, type KeyTable, type SecretMatch } from './key-table.js';
import { FailureLimiter, KeyRateLimiter, type RateLimiter } from './limits.js';
import type { UsageCounter } from './usage.js';
import { newVerifyCounts } from './verify-counts.js';

/** what `verifyKey` reports besides its answer (one object per verifier, reused: nothing allocated per request) */
export interface VerifyMatch {
  secret: SecretMatch;
  keyId: string | null;
}

export type VerifyFailure = 'format' | 'checksum' | 'unknown' | 'secret' | 'revoked' | 'suspended' | 'expired';

/**
 * The whole key check, pure and synchronous: checksum → Map lookup by key id → HMAC-SHA-256 of the
 * secret under the pepper → constant-time compare with the current hash (or the previous one during a
 * rotation grace period) → revoked/suspended/expired. No I/O; a few microseconds. An unknown key id costs the
 * same HMAC and compare as a known one with a wrong secret: the time taken does not tell whether an
 * id exists. `match`, when given, receives the key id of a well-formed key (its public part; for the
 * counts of a refusal) and which secret matched when the key is accepted (current or previous:
 * per-secret counts during a rotation grace, `UsageCounter.count`).
 */
export function verifyKey(table: KeyTable, presented: unknown, now: number, match?: VerifyMatch): KeyEntry | VerifyFailure {
  const parsed = parseKey(presented);
  if (typeof parsed === 'string') return parsed;
  if (match) match.keyId = parsed.keyId;
  const pepper = table.pepper;
  if (!pepper) return 'unknown';
  const entry = table.get(parsed.keyId);
  const h = hashSecret(pepper, parsed.secret);
  if (!entry) {
    NO_SUCH_KEY.secretMatches(h, now);
    return 'unknown';
  }
  const m = entry.secretMatches(h, now);
  if (m === SECRET_NONE) return 'secret';
  if (entry.stopped !== null) return entry.stopped;
  if (now >= entry.expiresAt) return 'expired';
  if (match) match.secret = m;
  return entry;
}

const MESSAGES: Record<VerifyFailure, string> = {
  format: 'invalid API key: not a Santokit key (expected stk_…)',
  checksum: 'invalid API key: checksum mismatch (mistyped or truncated?)',
  unknown: 'invalid API key',
  secret: 'invalid API key',
  revoked: 'API key revoked',
  suspended: 'API key suspended',
  expired: 'API key expired',
};

/**
 * The 401s, built once: a refusal is answered from its pre-serialized envelope (src/bridge/refusals.ts)
 * and never logged, so a flood of them allocates no error and captures no stack per request.
 */
const REFUSED = Object.fromEntries(Object.entries(MESSAGES).map(([r, m]) => [r, stacklessError('UNAUTHORIZED', m)])) as Record<VerifyFailure, AppError>;
/** 403 for a key used from outside its allowlist; never says which addresses are allowed */
const IP_DENIED = stacklessError('FORBIDDEN', 'client address not allowed for this API key');
const NO_KEY = stacklessError('UNAUTHORIZED', 'credential required: send an API key in X-Santokit-Api-Key');
const BEARER = stacklessError('UNAUTHORIZED', 'end-user tokens are not supported yet: authenticate with an API key in X-Santokit-Api-Key');

/** A 429 with Retry-After in whole seconds (at least 1). */
const limited = (message: string, waitMs: number) =>
  stacklessError('TOO_MANY_REQUESTS', message, { headers: { 'retry-after': String(Math.max(1, Math.ceil(waitMs / 1000))) } });

export interface VerifierState {
  /** true once the first snapshot from the Hub was applied */
  synced(): boolean;
  /** true when the Bridge has not heard from the Hub for longer than max-stale */
  isExpired(project: string, env: string): boolean;
}

export interface VerifierOptions {
  /** default per-key limit (STK_RATE_LIMIT_PER_API_KEY) */
  rateLimitPerApiKey: number;
  /** invalid-key attempts per address per minute before 429 (STK_INVALID_KEY_LIMIT_PER_MIN) */
  invalidKeyLimitPerMin: number;
  /** the per-key limiter: per Bridge (default) or global (STK_RATE_LIMIT_REDIS_URL, global-limits.ts) */
  limiter?: RateLimiter;
}

/**
 * `ctx.credentials` for the Bridge: reads `X-Santokit-Api-Key`, verifies it in memory, enforces the
 * key's project/env binding against the hint headers (403), its IP allowlist (403), the per-key rate limit (429 +
 * Retry-After), and counts usage. It runs at the Bridge's front door (../front-door.ts, `check`) or in the `/call` route's `onRequest` hook, from the headers
 * alone: a refused request costs no body reading or parsing.
 *
 * Invalid keys are counted per client address: past `STK_INVALID_KEY_LIMIT_PER_MIN` an address's
 * invalid keys get 429 (with Retry-After) instead of 401. A valid key is always verified and served,
 * whatever else its address sent: behind a load balancer or NAT one client's garbage must not lock out
 * the others (the check costs the same microseconds either way).
 */
export class ApiKeyVerifier implements CredentialVerifier {
  readonly limiter: RateLimiter;
  readonly failures: FailureLimiter;
  /** how each check ended (read by /metrics at scrape time) */
  readonly counts = newVerifyCounts();
  /** which secret the last successful `verify` matched (one object reused: nothing allocated per request) */
  readonly #match: VerifyMatch = { secret: SECRET_NONE, keyId: null };
  constructor(
    readonly table: KeyTable,
    readonly usage: UsageCounter,
    readonly state: VerifierState,
    readonly opts: VerifierOptions,
  ) {
    this.failures = new FailureLimiter(opts.invalidKeyLimitPerMin);
    this.limiter = opts.limiter ?? new KeyRateLimiter();
  }

  /** `verifyKey` on this verifier's table (a method so the benchmark's sampling subclass can time it) */
  verify(presented: unknown, now: number): KeyEntry | VerifyFailure {
    this.#match.keyId = null;
    return verifyKey(this.table, presented, now, this.#match);
  }

  authenticate(req: CredentialRequest): Principal {
    const r = this.check(req);
    if (r instanceof AppError) throw r;
    return r;
  }

  /**
   * `authenticate` without throwing: the principal, or the AppError to answer. The front door
   * (../front-door.ts) calls this for every POST /call, so a refusal costs no throw and catch; the key
   * id of a well-formed key (right checksum) is left in `req.keyIdSeen` for the refusal's count.
   */
  check(req: CredentialRequest): Principal | AppError {
    const now = Date.now();
    const presented = req.headers[API_KEY_HEADER];
    if (presented === undefined || presented === '') {
      const auth = req.headers.authorization;
      this.counts.missing++;
      if (typeof auth === 'string' && /^bearer\s/i.test(auth)) return BEARER;
      return NO_KEY;
    }
    const r = this.verify(presented, now);
    if (typeof r === 'string') {
      if (r === 'unknown' && !this.state.synced()) {
        this.counts.unsynced++;
        return unavailable('this Bridge has not loaded API keys from the Hub yet; retry shortly');
      }
      this.counts[r === 'format' || r === 'checksum' ? 'malformed' : r]++;
      // a known key id with a wrong secret, or a revoked, suspended or expired key: counted for that key (`apikey show`)
      const keyId = this.#match.keyId;
      if (keyId !== null) {
        req.keyIdSeen = keyId;
        if (r !== 'unknown') this.usage.outcome(keyId, 'rejected', 401, now);
      }
      // only guesses count towards the flood limit: a revoked, suspended or expired key had the right secret
      if (r !== 'revoked' && r !== 'suspended' && r !== 'expired') {
        const blocked = this.failures.fail(req.ip, now);
        if (blocked > 0) {
          this.counts.flooded++;
          return limited('too many invalid API keys from this address; slow down', blocked);
        }
      }
      return REFUSED[r];
    }
    req.keyIdSeen = r.keyId;
    if (this.state.isExpired(r.project, r.env)) {
      this.usage.outcome(r.keyId, 'rejected', 503, now);
      this.counts.stale++;
      return unavailable('this Bridge has not reached the Hub for longer than the max-stale window; API keys are refused until it reconnects');
    }
    const hp = req.headers[PROJECT_HINT_HEADER];
    const he = req.headers[ENV_HINT_HEADER];
    if ((hp !== undefined && hp !== r.project) || (he !== undefined && he !== r.env)) {
      this.usage.outcome(r.keyId, 'rejected', 403, now);
      this.counts.binding++;
      if (hp !== undefined && hp !== r.project) return forbidden("X-Santokit-Project does not match the API key's project");
      return forbidden("X-Santokit-Env does not match the API key's env");
    }
    // a key without an allowlist pays this null check and nothing more; a refused address does not
    // spend the key's rate limit (failure name: ip_denied)
    if (r.allow !== null && !ipAllowed(r.allow, req.ip)) {
      this.usage.outcome(r.keyId, 'rejected', 403, now);
      this.counts.ip_denied++;
      return IP_DENIED;
    }
    const wait = this.limiter.take(r.keyId, r.rateLimitPerMin ?? this.opts.rateLimitPerApiKey, now);
    if (wait > 0) {
      this.usage.outcome(r.keyId, 'rejected', 429, now);
      this.counts.rate_limited++;
      return limited(`rate limit of ${r.rateLimitPerMin ?? this.opts.rateLimitPerApiKey} requests/min exceeded for this API key`, wait);
    }
    this.counts.ok++;
    this.usage.count(r.keyId, req.ip, now, this.#match.secret, r.prevUntil);
    req.stkKeyId = r.keyId;
    return r.principal;
  }
}
