import type { ReleaseIR } from './release.js';

/**
 * The Hub → Bridge sync protocol (`/internal/sync/*`, service token required).
 *
 * `GET /internal/sync/stream?bridgeId=<id>[&since=<cursor>]` is NDJSON, one message per line:
 * without `since` (or when the Hub cannot resume from it) it starts with a snapshot
 * (`snapshot`, then `keys` chunks — `keyrows` when the Bridge asks with `keyFormat=rows` — then
 * `snapshot-end`), then `change` messages in sequence order and
 * `heartbeat`s. The Bridge applies each message to its in-memory state and only THEN acknowledges it
 * with `POST /internal/sync/ack`; the Hub's revoke/rotate waits for those acks.
 */
export interface SyncKeyRecord {
  keyId: string;
  project: string;
  env: string;
  name: string;
  roles: string[];
  /** HMAC-SHA-256(pepper, secret), hex */
  secretHash: string;
  /** previous secret during a rotation grace period */
  prevSecretHash: string | null;
  prevExpiresAt: string | null;
  /**
   * `suspended`: refused with 401 until resumed (same secret). A Bridge treats a status it does not
   * know as revoked (fail closed).
   */
  status: 'active' | 'revoked' | 'suspended';
  expiresAt: string | null;
  /** null → the Bridge default (STK_RATE_LIMIT_PER_API_KEY) */
  rateLimitPerMin: number | null;
  /** IPv4/IPv6 addresses and CIDR ranges the key may be used from; null/absent = any address */
  allowedIps?: string[] | null;
}

/**
 * One key of a `keyrows` batch: `[env, roles, keyId, secretHash, status, expiresAt?, rateLimitPerMin?,
 * prevSecretHash?, prevExpiresAt?, allowedIps?]`, where `env` and `roles` index the batch's `envs` and
 * `roles` lists, and missing trailing fields are null (most keys end at `status`). Same meaning as the
 * fields of SyncKeyRecord (no `name`: a Bridge does not use it).
 */
export type SyncKeyRow = [
  env: number,
  roles: number,
  keyId: string,
  secretHash: string,
  status: SyncKeyRecord['status'],
  expiresAt?: string | null,
  rateLimitPerMin?: number | null,
  prevSecretHash?: string | null,
  prevExpiresAt?: string | null,
  allowedIps?: string[] | null,
];

/**
 * The stream query parameter by which a Bridge asks for its snapshot's keys as `keyrows` batches (a
 * Hub before them ignores it and sends `keys`; a Bridge before them does not send it and gets `keys`).
 */
export const SYNC_KEY_ROWS_PARAM = 'keyFormat';
export const SYNC_KEY_ROWS_VALUE = 'rows';

/**
 * The stream query parameter by which a Bridge says what it enforces of a key record beyond the first
 * protocol (comma-separated). A Bridge built before suspend and IP allowlists took any status but
 * `revoked` as active and ignored `allowedIps`: it would accept a suspended key, and an allowlisted key
 * from anywhere (and ack the change). The Hub therefore sends a Bridge that declares neither these
 * capabilities nor `keyrows` (which came after both) such keys as `revoked`: during a rolling upgrade an
 * old Bridge refuses them until it is upgraded (fail closed). A later `active` record restores them there.
 */
export const SYNC_CAPS_PARAM = 'caps';
export const SYNC_CAPS = ['suspend', 'allowlist'] as const;

/** The record an old Bridge (without SYNC_CAPS) gets: what it cannot enforce, it refuses. */
export function failClosedRecord(r: SyncKeyRecord): SyncKeyRecord {
  if (r.status === 'suspended' || (r.allowedIps != null && r.allowedIps.length > 0)) return { ...r, status: 'revoked' };
  return r;
}

export interface SyncEnvState {
  project: string;
  env: string;
  release: ReleaseIR | null;
  /** decrypted DB URLs by connection name */
  connections: Record<string, string>;
}

export type SyncMessage =
  | { type: 'snapshot'; seq: number; pepper: string; envs: SyncEnvState[]; keyCount: number }
  | { type: 'keys'; keys: SyncKeyRecord[] }
  /** the same as `keys`, compact: `[project, env]` and role lists once per batch (see SyncKeyRow) */
  | { type: 'keyrows'; rows: SyncKeyRow[]; envs: Array<[string, string]>; roles: string[][] }
  | { type: 'snapshot-end'; seq: number }
  | { type: 'change'; seq: number; cursor: number; kind: 'apikey'; project: string; env: string; keyId: string; key: SyncKeyRecord | null }
  | { type: 'change'; seq: number; cursor: number; kind: 'release' | 'connection'; project: string; env: string; state: SyncEnvState }
  | { type: 'change'; seq: number; cursor: number; kind: 'other'; project: string; env: string; original: string }
  /**
   * `bridges`: how many Bridges are connected to the Hubs of this store (the sync presence), so a Bridge
   * can take its share of a key's rate limit (limit / N) when the shared rate-limit store is down.
   * Absent from Hubs before it was added.
   */
  | { type: 'heartbeat'; cursor: number; ts: string; bridges?: number };

/**
 * The stream's session id, sent by the Hub in this response header when a stream opens. Acks and
 * usage reports carry it: the Hub accepts them only from the stream that currently owns the Bridge id.
 */
export const SYNC_SESSION_HEADER = 'x-santokit-sync-session';

/** `POST /internal/sync/ack` */
export interface SyncAck {
  bridgeId: string;
  /** the session of the stream these seqs arrived on (SYNC_SESSION_HEADER) */
  session: string;
  /** change seqs applied */
  seqs?: number[];
  /** a snapshot (as of this seq) was fully applied */
  snapshot?: number;
}

/** `POST /internal/sync/usage`: per-key counts since the previous report. */
export interface UsageReport {
  bridgeId: string;
  /** the session of this Bridge's open stream to the Hub it reports to (SYNC_SESSION_HEADER) */
  session?: string;
  /**
   * this Bridge counts requests per secret during rotation grace periods (`plainLastUsedAt`, `grace`).
   * Absent from older Bridges: the Hub then takes any request of a key in a grace period as possibly
   * made with its previous secret (`--grace auto` never ends on their account).
   */
  perSecret?: boolean;
  /**
   * more parts of this report follow (a report is sent in parts of bounded size: HubSync.flushUsage);
   * the Hub records the Bridge's report time only with the last part
   */
  more?: boolean;
  /** the Bridge's clock when it sent the report: the Hub reads the report's times against its own clock */
  sentAt?: string;
  /**
   * the last request this Bridge could not count since its previous report (its counter full, a report
   * refused): the Hub takes it as a possible use of every previous secret then in a grace period
   */
  lostLastAt?: string;
  keys: Array<{
    keyId: string;
    /**
     * per minute (ISO timestamp truncated to the minute): `count` requests the key authenticated (they
     * reached the call), `errors` of those by HTTP status when the call failed (2xx = count − errors),
     * `rejected` requests refused by status before reaching it (401 wrong/revoked/expired secret of this
     * key id, 403 binding hint, 429 rate limit, 503 stale)
     */
    minutes: Array<{ minute: string; count: number; errors?: Record<string, number>; rejected?: Record<string, number> }>;
    /** null when every request of this key in the report was rejected */
    lastUsedAt: string | null;
    /** client addresses seen since the previous report, with request counts (bounded) */
    sources: Array<{ address: string; count: number }>;
    /**
     * the last request counted while this Bridge's entry of the key had no grace period (null: none):
     * after a rotation, one the Bridge had not applied yet (so made with the now previous secret)
     */
    plainLastUsedAt?: string | null;
    /** requests per secret while the entry had a grace period ending at `prevUntil` (that rotation's deadline) */
    grace?: {
      prevUntil: string;
      current: number;
      previous: number;
      currentLastUsedAt: string | null;
      previousLastUsedAt: string | null;
      /** the previous secret's busiest client addresses (at most 10 per report, counts are upper bounds) */
      previousSources: Array<{ address: string; count: number }>;
    };
  }>;
}

export const SYNC_STREAM_CONTENT_TYPE = 'application/x-ndjson';
