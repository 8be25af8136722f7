import pg from 'pg';
import { existsSync, mkdirSync } from 'node:fs';
import { DATABASE_URL } from './pg.js';
import { scanForSecrets } from './secrets.js';

export default async function setup() {
  mkdirSync('test-output/logs', { recursive: true });
  // the secrets registry (test/helpers/secrets.ts) tags records with this id; workers inherit it
  const startedAt = Date.now();
  const run = (process.env.STK_TEST_RUN_ID ??= `run-${startedAt}-${process.pid}`);
  if (!existsSync('dist/cli.js')) throw new Error('dist/cli.js missing: run `npm run build` (npm test does it)');
  const c = new pg.Client({ connectionString: DATABASE_URL, connectionTimeoutMillis: 5000 });
  try {
    await c.connect();
    await c.query('select 1');
  } catch (e) {
    throw new Error(`PostgreSQL is not reachable at DATABASE_URL (${new URL(DATABASE_URL).host}): ${(e as Error).message}. Start one (see docs/development.md "Tests") or set DATABASE_URL.`);
  } finally {
    await c.end().catch(() => {});
  }

  // after every test file: no remembered plaintext secret in any log or Hub store the run left
  return async function teardown() {
    const r = await scanForSecrets(run, startedAt - 1000);
    process.stdout.write(`\nsecrets: ${r.secrets} secrets × ${r.files} files scanned, ${r.hits.length} hits\n`);
    if (r.hits.length) {
      for (const h of r.hits.slice(0, 50)) process.stdout.write(`  secret leak: a ${h.kind} (${h.encoding}) in ${h.file}\n`);
      throw new Error(`secrets: ${r.hits.length} plaintext secret(s) found in logs or Hub stores`);
    }
  };
}
