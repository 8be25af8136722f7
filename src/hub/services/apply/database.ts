import type { Client, ClientConfig } from 'pg';
import { parseDbUrl, pgConnectionConfig } from '../../../common/db-url.js';
import type { HostPolicy } from '../../../common/net-policy.js';
import { AppError } from '../../../protocol/errors.js';
import type { Queryable } from './introspect.js';

/**
 * Short-lived connections to an env's database for apply, promote and rollback checks.
 * One client per connection name, closed after use; nothing here ever prints a URL.
 */
export const CONNECT_TIMEOUT_MS = 10_000;
/** how long DDL waits for a table lock held by running queries before giving up */
export const LOCK_TIMEOUT = '15s';
/** `pg_advisory_xact_lock` key: two applies on one database never interleave */
const APPLY_LOCK: [number, number] = [0x53544b, 1];

export interface DbConnection extends Queryable {
  name: string;
  client: Client;
}

/**
 * Connects to a stored connection's database: the URL is checked again (syntax and address policy)
 * and the host resolved and checked, then the client connects to exactly the checked address.
 */
export async function connect(name: string, url: string, allow: HostPolicy): Promise<DbConnection> {
  const pg = (await import('pg')).default;
  let where: ClientConfig;
  try {
    where = pgConnectionConfig(parseDbUrl(url), allow);
  } catch (e) {
    throw connectionError(name, e);
  }
  const client = new pg.Client({ application_name: 'santokit-hub', ...where, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  client.on('error', () => {}); // a dropped connection surfaces on the next query
  try {
    await client.connect();
  } catch (e) {
    await client.end().catch(() => {});
    throw connectionError(name, e);
  }
  return {
    name,
    client,
    query: async <R>(text: string, values?: unknown[]) => {
      const r = await client.query(text, values as unknown[]);
      return { rows: r.rows as R[] };
    },
  };
}

/** BEGIN + UTC + lock timeout + the apply advisory lock. */
export async function beginApply(db: DbConnection): Promise<void> {
  try {
    await db.client.query('BEGIN');
    await db.client.query(`SET LOCAL TIME ZONE 'UTC'`);
    await db.client.query(`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'`);
    await db.client.query('SELECT pg_advisory_xact_lock($1, $2)', APPLY_LOCK);
  } catch (e) {
    throw statementError(db.name, 'start the apply transaction', e);
  }
}

export async function close(db: DbConnection | undefined, rollback = false): Promise<void> {
  if (!db) return;
  if (rollback) await db.client.query('ROLLBACK').catch(() => {});
  await db.client.end().catch(() => {});
}

const NETWORK_CODES: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  ETIMEDOUT: 'connection timed out',
  ECONNRESET: 'connection reset',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
};

/** Why connecting failed, without the URL, host, user or password. */
export function connectionError(name: string, e: unknown): AppError {
  // refused by the URL check or the address policy: that message names the host, never the URL
  if (e instanceof AppError) return new AppError(e.code, `cannot connect to the database of connection ${JSON.stringify(name)}: ${e.message}`);
  const err = e as { code?: string; message?: string };
  const code = err.code ?? '';
  if (NETWORK_CODES[code])
    return new AppError('SERVICE_UNAVAILABLE', `cannot reach the database of connection ${JSON.stringify(name)}: ${NETWORK_CODES[code]}`);
  if (/timeout/i.test(err.message ?? ''))
    return new AppError('SERVICE_UNAVAILABLE', `cannot reach the database of connection ${JSON.stringify(name)}: connection timed out`);
  const why =
    code === '28P01' || code === '28000'
      ? 'authentication failed'
      : code === '3D000'
        ? 'the database does not exist'
        : code === '57P03'
          ? 'the database is starting up'
          : code === '53300'
            ? 'too many connections'
            : code
              ? `database error ${code}`
              : 'connection failed';
  return new AppError(
    code === '57P03' || code === '53300' ? 'SERVICE_UNAVAILABLE' : 'BAD_REQUEST',
    `cannot connect to the database of connection ${JSON.stringify(name)}: ${why}`,
  );
}

/**
 * A failed statement, explained by SQLSTATE. Messages PostgreSQL builds from row data (duplicate
 * keys, unconvertible values) are replaced by a generic reason so no data value leaks.
 */
export function statementError(connection: string, what: string, e: unknown): AppError {
  const err = e as { code?: string; message?: string };
  const code = err.code ?? '';
  if (!/^[0-9A-Z]{5}$/.test(code)) return connectionError(connection, e);
  const at = `${connection}: ${what} failed`;
  if (code === '23505') return new AppError('CONFLICT', `${at}: existing rows have duplicate values`);
  if (code === '23502') return new AppError('CONFLICT', `${at}: existing rows hold NULL values`);
  if (code === '23503') return new AppError('CONFLICT', `${at}: existing rows violate the foreign key`);
  if (code === '23514') return new AppError('CONFLICT', `${at}: existing rows violate a check constraint`);
  if (code.startsWith('22')) return new AppError('CONFLICT', `${at}: existing data cannot be converted (SQLSTATE ${code})`);
  if (code === '55P03') return new AppError('CONFLICT', `${at}: a table is locked by running queries (lock timeout ${LOCK_TIMEOUT}); retry later`);
  if (code === '57014') return new AppError('CONFLICT', `${at}: the statement was cancelled (timeout)`);
  if (code === '40P01') return new AppError('CONFLICT', `${at}: deadlock with another session; retry`);
  if (code === '2BP01' || code.startsWith('42')) return new AppError('BAD_REQUEST', `${at}: ${(err.message ?? '').slice(0, 300)}`);
  if (code.startsWith('08') || code.startsWith('57P')) return new AppError('SERVICE_UNAVAILABLE', `${at}: the database connection was lost`);
  return new AppError('BAD_REQUEST', `${at}: database error (SQLSTATE ${code})`);
}
