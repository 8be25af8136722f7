import type { FastifyBaseLogger } from 'fastify';
import type { Metrics } from '../common/metrics.js';
import type { AppError } from '../protocol/errors.js';
import type { BridgeConfig } from './config.js';
import type { KeyTable } from './credentials/key-table.js';
import type { ResponseGauge } from './executor/response-budget.js';
import type { Refusals } from './refusals.js';
import type { ReleaseCache } from './release-cache/index.js';
import type { HubSync } from './sync/hub-sync.js';

/**
 * Who is calling. For API keys `sub` is the key id; the key's project+env binding is authoritative.
 */
export interface Principal {
  kind: 'apikey' | 'enduser' | 'dev';
  sub: string;
  roles: string[];
  project: string;
  env: string;
}

/** What a verifier reads of a request: its headers and the client's address. */
export interface CredentialRequest {
  headers: Record<string, string | string[] | undefined>;
  ip: string;
  /** set by the API-key verifier to the authenticated key id: a later failure of the call is counted for that key (app.ts) */
  stkKeyId?: string | null;
  /** set by the API-key verifier to the key id of a well-formed presented key, refused or not (never its secret) */
  keyIdSeen?: string | null;
}

/** Verifies the request's credential in memory (no Hub hop). Throws AppError 401/403/429/503. */
export interface CredentialVerifier {
  authenticate(req: CredentialRequest): Principal;
  /** the same check returning its error instead of throwing it (the API-key verifier has it; doubles may not) */
  check?(req: CredentialRequest): Principal | AppError;
}

/** What the Bridge's routes share; built once, in app.ts. */
export interface BridgeContext {
  readonly config: BridgeConfig;
  readonly log: FastifyBaseLogger;
  /** checks each `/call`'s credential (the API-key verifier; tests may put a double here) */
  credentials: CredentialVerifier;
  /** answers and counts the 401/429s decided from headers; one log line per interval sums them up */
  readonly refusals: Refusals;
  /** the API keys as the Hub last sent them */
  readonly keys: KeyTable;
  /** each env's compiled release and database pools */
  readonly releases: ReleaseCache;
  /** follows the Hub; started by `startBridge` (main.ts), never by `buildBridge`, so tests reach no Hub */
  readonly sync: HubSync;
  /** no Hub heard from for longer than max-stale: every `/call` is refused (503) and /readyz says 503 */
  isStale: () => boolean;
  /** the bytes of `/call` answers held in memory, bounded per answer and in total */
  readonly responses: ResponseGauge;
  /** `/metrics` families (null with metrics off: STK_METRICS_PORT unset); served by `startBridge` */
  metrics: Metrics | null;
  /** cleanup run on close, in order (the sync first, then pools) */
  readonly onClose: Array<() => Promise<void> | void>;
}
