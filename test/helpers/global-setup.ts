import { existsSync, mkdirSync } from 'node:fs';
import { DATABASE_URL } from './pg.js';
import { scanForSecrets } from './secrets.js';
import { ensurePostgres } from './test-pg.js';
import { ensureRedis } from './test-redis.js';

export default async function setup() {
  mkdirSync('test-output/logs', { recursive: true });
  // the secrets registry (test/helpers/secrets.ts) tags records with this id; workers inherit it
  const startedAt = Date.now();
  const run = (process.env.STK_TEST_RUN_ID ??= `run-${startedAt}-${process.pid}`);
  if (!existsSync('dist/cli.js')) throw new Error('dist/cli.js missing: run `npm run build` (npm test does it)');
  // DATABASE_URL unset and nothing on the default port: start the throwaway PostgreSQL (and stop it after)
  const pg = await ensurePostgres({ url: DATABASE_URL, explicit: Boolean(process.env.DATABASE_URL) });
  process.env.DATABASE_URL = pg.url; // test workers inherit it
  // the global rate limits' store (only the tests that need it read STK_TEST_REDIS_URL)
  const redis = await ensureRedis();
  process.env.STK_TEST_REDIS_URL = redis.url;

  // after every test file: no remembered plaintext secret in any log or Hub store the run left
  return async function teardown() {
    try {
      await scanAndReport(run, startedAt);
    } finally {
      if (redis.started) await redis.stop();
      if (pg.started) await pg.stop();
    }
  };
}

async function scanAndReport(run: string, startedAt: number): Promise<void> {
  const r = await scanForSecrets(run, startedAt - 1000);
  process.stdout.write(`\nsecrets: ${r.secrets} secrets × ${r.files} files scanned, ${r.hits.length} hits\n`);
  if (r.hits.length) {
    for (const h of r.hits.slice(0, 50)) process.stdout.write(`  secret leak: a ${h.kind} (${h.encoding}) in ${h.file}\n`);
    throw new Error(`secrets: ${r.hits.length} plaintext secret(s) found in logs or Hub stores`);
  }
}
