import pg from 'pg';
import { randomBytes } from 'node:crypto';

/**
 * The PostgreSQL the tests use. Without DATABASE_URL: the throwaway cluster of scripts/test-pg.sh on
 * STK_TEST_PG_PORT (55432), which test/helpers/global-setup.ts starts when nothing answers there.
 */
export const DATABASE_URL = process.env.DATABASE_URL ?? `postgres://postgres@127.0.0.1:${process.env.STK_TEST_PG_PORT || '55432'}/postgres`;

/**
 * STK_CONNECTION_ALLOW_HOSTS for every Hub and Bridge the tests start: the test PostgreSQL usually
 * listens on loopback, which connections may only reach when the operator allows it.
 */
export const TEST_ALLOW_HOSTS = new URL(DATABASE_URL).hostname;

export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = '/' + db;
  return u.toString();
}

/** Creates a fresh, uniquely named database and returns its URL and a drop function. */
export async function createTestDatabase(prefix = 't'): Promise<{ url: string; name: string; drop: () => Promise<void> }> {
  const name = `stk_${prefix.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: DATABASE_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  return {
    url: withDatabase(DATABASE_URL, name),
    name,
    drop: async () => {
      const c = new pg.Client({ connectionString: DATABASE_URL });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** Runs one query on a database URL with a short-lived client. */
export async function query<T extends pg.QueryResultRow = Record<string, unknown>>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(text, values)).rows;
  } finally {
    await c.end();
  }
}
