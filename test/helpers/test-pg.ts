import pg from 'pg';
import { execFile } from 'node:child_process';

/**
 * The throwaway PostgreSQL of `npm test` (scripts/test-pg.sh): test/helpers/global-setup.ts calls
 * ensurePostgres() so that `npm test` alone works on a fresh machine.
 */

/** Undefined when `url` answers `select 1`, else why not. */
export async function probe(url: string, timeoutMs = 5000): Promise<string | undefined> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs });
  try {
    await c.connect();
    await c.query('select 1');
    return undefined;
  } catch (e) {
    return (e as Error).message || String(e);
  } finally {
    await c.end().catch(() => {});
  }
}

/** Client connections to the server other than this one's (another test run, a developer's psql). */
export async function otherClients(url: string): Promise<number> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  try {
    await c.connect();
    const r = await c.query<{ n: number }>("select count(*)::int as n from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()");
    return r.rows[0]!.n;
  } catch {
    return 0; // not reachable: nothing to leave running for
  } finally {
    await c.end().catch(() => {});
  }
}

function script(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile('bash', ['scripts/test-pg.sh', ...args], { env, maxBuffer: 16 << 20 }, (err, stdout) => {
      if (err) reject(new Error(`scripts/test-pg.sh ${args.join(' ')} failed (${err.code ?? err.signal}); its output is above`));
      else resolve(stdout.trim());
    });
    child.stderr?.pipe(process.stderr); // apt-get and pg_ctl progress
  });
}

export interface EnsuredPostgres {
  url: string;
  /** true when this call started the cluster (so the caller stops it) */
  started: boolean;
  stop: () => Promise<void>;
}

/**
 * Uses `url` when it answers. Otherwise, unless the URL was given explicitly (DATABASE_URL set: then
 * it is the caller's database and not ours to start), starts the throwaway cluster on the URL's port
 * with scripts/test-pg.sh, which installs PostgreSQL from Debian when it is missing.
 */
export async function ensurePostgres(opts: { url: string; explicit: boolean; dir?: string; log?: (line: string) => void }): Promise<EnsuredPostgres> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const why = await probe(opts.url);
  const host = new URL(opts.url).host;
  if (!why) return { url: opts.url, started: false, stop: async () => {} };
  if (opts.explicit) {
    throw new Error(`PostgreSQL is not reachable at DATABASE_URL (${host}): ${why}. Start it, or unset DATABASE_URL to let the tests start a throwaway one.`);
  }
  const u = new URL(opts.url);
  const env: NodeJS.ProcessEnv = { ...process.env, STK_TEST_PG_PORT: u.port || '5432', ...(opts.dir ? { STK_TEST_PG_DIR: opts.dir } : {}) };
  log(`test setup: no PostgreSQL at ${host} (${why}); starting a throwaway one with scripts/test-pg.sh (stopped after the run)`);
  const url = await script(['start'], env);
  const still = await probe(url);
  if (still) throw new Error(`scripts/test-pg.sh started PostgreSQL but ${new URL(url).host} does not answer: ${still}`);
  const stop = async () => {
    // on a shared machine someone may have started using it meanwhile: then it stays up
    const others = await otherClients(url);
    if (others > 0) {
      log(
        `test teardown: leaving the throwaway PostgreSQL at ${new URL(url).host} running: ${others} other client connection(s) use it (stop it with: bash scripts/test-pg.sh stop)`,
      );
      return;
    }
    await script(['stop'], env);
  };
  return { url, started: true, stop };
}
