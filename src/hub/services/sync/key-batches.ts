import { sql, type RawBuilder } from 'kysely';
import type { SyncKeyRecord } from '../../../protocol/sync.js';
import type { HubContext } from '../../context.js';
import type { ApiKeysTable } from '../../store/schema.js';

/**
 * The keys of a snapshot, read page by page and turned into stream lines. This is the per-key path of
 * a Bridge's start-up (1,000,000 keys = 1,000,000 times everything here), so it avoids per-key work
 * that is not needed:
 *
 * - no join: the key rows carry their env id; project and env names come from one map of every env,
 *   read once per snapshot (re-read when a page names an env created since). With the join, SQLite
 *   looked up two indexes and two tables per key (~20 s per 1M keys here);
 * - on SQLite the pages follow the table's rowid (its storage order: a sequential read) instead of the
 *   key id (random ids, so a random read of the table per key, ~3× slower). The order does not matter
 *   for consistency: a key changed while the snapshot is read has a change event above the snapshot's
 *   seq, delivered after `snapshot-end` with the key's state read then (the snapshot's seq is read
 *   before the first page). Only a `VACUUM` run by hand while a snapshot streams could renumber rowids;
 *   the Hub itself never runs one;
 * - `keyrows` lines (protocol `SyncKeyRow`, for Bridges that ask for them) are built by string
 *   concatenation straight from the rows: no record object per key, roles and envs once per batch.
 */

/** keys per batch (one stream line): ~250 KB as `keyrows` */
export const KEY_BATCH = 2000;

/** The columns a key record needs (not the audit ones). */
export type KeyRow = Pick<
  ApiKeysTable,
  | 'id'
  | 'env_id'
  | 'name'
  | 'roles_json'
  | 'secret_hash'
  | 'prev_secret_hash'
  | 'prev_expires_at'
  | 'status'
  | 'suspended_at'
  | 'expires_at'
  | 'rate_limit_per_min'
  | 'allowed_ips_json'
>;

/**
 * A key as the database writes it for a `keyrows` batch: `head` = `[keyId, secretHash, status]` and
 * `tail` = `[expiresAt, rateLimitPerMin, prevSecretHash, prevExpiresAt]` (null when the key has none of
 * those nor an allowlist) as JSON text, so no string per field is made in JS.
 */
interface WireRow {
  env_id: string;
  roles_json: string;
  head: string;
  tail: string | null;
  allowed_ips_json: string | null;
}

type Paged<T> = T & { pos: string | number };

/** env id → [project name, env name], every org's envs (keys are not filtered by org) */
async function envNames(ctx: HubContext): Promise<Map<string, readonly [string, string]>> {
  const rows = await ctx.db
    .selectFrom('envs')
    .innerJoin('projects', 'projects.id', 'envs.project_id')
    .select(['envs.id', 'envs.name', 'projects.name as project_name'])
    .execute();
  return new Map(rows.map((r) => [r.id, [r.project_name, r.name] as const]));
}

const RECORD_COLS = sql.raw(
  'id, env_id, name, roles_json, secret_hash, prev_secret_hash, prev_expires_at, status, suspended_at, expires_at, rate_limit_per_min, allowed_ips_json',
);
const STATUS = sql.raw(`case when status = 'active' and suspended_at is not null then 'suspended' else status end`);
const NO_TAIL = sql.raw('expires_at is null and rate_limit_per_min is null and prev_secret_hash is null and allowed_ips_json is null');

/** The paging order: SQLite's rowid (storage order), PostgreSQL's primary key. */
function pageQuery<T>(ctx: HubContext, cols: RawBuilder<unknown>, after: string | number | null, limit: number) {
  return ctx.store.dialect === 'sqlite'
    ? sql<Paged<T>>`select rowid as pos, ${cols} from api_keys where rowid > ${after ?? -1} order by rowid limit ${limit}`
    : sql<Paged<T>>`select id as pos, ${cols} from api_keys where id > ${after ?? ''} order by id limit ${limit}`;
}

function wireCols(ctx: HubContext): RawBuilder<unknown> {
  return ctx.store.dialect === 'sqlite'
    ? sql`env_id, roles_json, json_array(id, secret_hash, ${STATUS}) as head,
        case when ${NO_TAIL} then null else json_array(expires_at, rate_limit_per_min, prev_secret_hash, prev_expires_at) end as tail,
        allowed_ips_json`
    : sql`env_id, roles_json, json_build_array(id, secret_hash, ${STATUS})::text as head,
        case when ${NO_TAIL} then null else json_build_array(expires_at, rate_limit_per_min, prev_secret_hash, prev_expires_at)::text end as tail,
        allowed_ips_json`;
}

/**
 * Every key row, a page at a time, with its env's project and env names (rows whose env is gone —
 * deleted with its keys meanwhile — are skipped). Holds one page in memory.
 */
async function* pages<T extends { env_id: string }>(
  ctx: HubContext,
  cols: RawBuilder<unknown>,
  size: number,
): AsyncGenerator<Array<{ row: T; names: readonly [string, string] }>> {
  let envs = await envNames(ctx);
  let after: string | number | null = null;
  for (;;) {
    const rows: Array<Paged<T>> = (await pageQuery<T>(ctx, cols, after, size).execute(ctx.db)).rows;
    if (rows.length === 0) return;
    if (rows.some((r) => !envs.has(r.env_id))) envs = await envNames(ctx); // an env created since the map was read
    const out = [];
    for (const row of rows) {
      const names = envs.get(row.env_id);
      if (names) out.push({ row, names });
    }
    yield out;
    after = rows[rows.length - 1]!.pos;
    if (rows.length < size) return;
  }
}

/** Every key as sync records, a batch at a time (the `keys` message, the `/internal/sync/snapshot` body). */
export async function* keyRecordBatches(ctx: HubContext, size = KEY_BATCH): AsyncGenerator<SyncKeyRecord[]> {
  for await (const page of pages<KeyRow>(ctx, RECORD_COLS, size)) yield page.map((k) => toKeyRecord(k.row, k.names[0], k.names[1]));
}

/** Every key as `keyrows` stream lines (without their newline), a batch per line. */
export async function* keyRowsLines(ctx: HubContext, size = KEY_BATCH): AsyncGenerator<string> {
  for await (const page of pages<WireRow>(ctx, wireCols(ctx), size)) yield keyRowsLine(page);
}

/** A key's status on the wire: a suspended key is `active` with `suspended_at` in the store. */
export function wireStatus(row: Pick<KeyRow, 'status' | 'suspended_at'>): SyncKeyRecord['status'] {
  return row.status === 'active' && row.suspended_at ? 'suspended' : row.status;
}

export function toKeyRecord(row: KeyRow, project: string, env: string): SyncKeyRecord {
  return {
    keyId: row.id,
    project,
    env,
    name: row.name,
    roles: JSON.parse(row.roles_json) as string[],
    secretHash: row.secret_hash,
    prevSecretHash: row.prev_secret_hash,
    prevExpiresAt: row.prev_expires_at,
    status: wireStatus(row),
    expiresAt: row.expires_at,
    rateLimitPerMin: row.rate_limit_per_min,
    allowedIps: row.allowed_ips_json ? (JSON.parse(row.allowed_ips_json) as string[]) : null,
  };
}

/** A stored JSON list of strings, as sent (anything else: an empty list — no roles, no address allowed). */
function stringList(json: string): string[] {
  try {
    const v = JSON.parse(json) as unknown;
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  } catch {
    return [];
  }
}

/**
 * One `keyrows` line for a page: `{"type":"keyrows","rows":[[env,roles,keyId,hash,status,…],…],"envs":[…],"roles":[…]}`.
 * A row is its env's and role list's index in the batch followed by the database's JSON of the key.
 */
function keyRowsLine(page: Array<{ row: WireRow; names: readonly [string, string] }>): string {
  const envIndex = new Map<string, number>();
  const envs: Array<readonly [string, string]> = [];
  const roleIndex = new Map<string, number>();
  const roles: string[][] = [];
  let out = '{"type":"keyrows","rows":[';
  for (let i = 0; i < page.length; i++) {
    const { row, names } = page[i]!;
    let e = envIndex.get(row.env_id);
    if (e === undefined) {
      e = envs.push(names) - 1;
      envIndex.set(row.env_id, e);
    }
    let r = roleIndex.get(row.roles_json);
    if (r === undefined) {
      r = roles.push(stringList(row.roles_json)) - 1;
      roleIndex.set(row.roles_json, r);
    }
    // head and tail are JSON arrays written by the database: their items are spliced in
    out += (i === 0 ? '[' : ',[') + e + ',' + r + ',' + row.head.slice(1, -1);
    if (row.tail !== null) {
      out += ',' + row.tail.slice(1, -1);
      if (row.allowed_ips_json !== null) out += ',' + JSON.stringify(stringList(row.allowed_ips_json));
    }
    out += ']';
  }
  return out + '],"envs":' + JSON.stringify(envs) + ',"roles":' + JSON.stringify(roles) + '}';
}
