import pg from 'pg';
import { existsSync, mkdirSync } from 'node:fs';
import { DATABASE_URL } from './pg.js';

export default async function setup() {
  mkdirSync('test-output/logs', { recursive: true });
  if (!existsSync('dist/cli.js')) throw new Error('dist/cli.js missing: run `npm run build` (npm test does it)');
  const c = new pg.Client({ connectionString: DATABASE_URL, connectionTimeoutMillis: 5000 });
  try {
    await c.connect();
    await c.query('select 1');
  } catch (e) {
    throw new Error(`PostgreSQL is not reachable at DATABASE_URL (${new URL(DATABASE_URL).host}): ${(e as Error).message}. Start one (see README "Tests") or set DATABASE_URL.`);
  } finally {
    await c.end().catch(() => {});
  }
}
