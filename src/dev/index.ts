import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { env as variable, readEnv } from '../common/env-config.js';
import { shellWord, STK_RUN } from '../common/shell-quote.js';
import { startEmbeddedPg, type EmbeddedPg } from './embedded-pg.js';
import { devDataDir, isAlive, type DevState } from './state.js';

/**
 * `stk dev` (= `npm start`): Hub + Bridge + an embedded PostgreSQL in one process, all state under
 * `.santokit/` (or STK_DATA_DIR):
 *   hub.db            the Hub store (SQLite)
 *   secret.key        the Hub master key, service.token the Hub↔Bridge token (generated once, 0600)
 *   dev-owner.txt     the dev owner's password (generated once, 0600)
 *   pgdata/           the embedded PostgreSQL (PGlite) data directory
 *   dev.pid           held while `stk dev` runs, so two of them never share the data
 *   dev.json          the running stack's URLs (read by `stk status`), removed on a clean stop
 * Ports: Hub STK_HUB_PORT (4000), Bridge STK_BRIDGE_PORT (3000), PostgreSQL STK_DEV_PG_PORT (54329).
 * The production variables that would point dev at other state (STK_HUB_DB_URL, STK_SECRET_KEY,
 * STK_SERVICE_TOKEN[S], STK_OWNER_*) are ignored here.
 */

export const DEV_OWNER_EMAIL = 'dev@santokit.local';

export { devDataDir, type DevState } from './state.js';

/** The package's examples/basic, as a path the developer can paste from `cwd` (`examples/basic` in a checkout). */
function examplesDir(cwd: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'examples/basic'))) return relative(cwd, join(dir, 'examples/basic')) || '.';
    dir = dirname(dir);
  }
  return 'examples/basic';
}

// STK_METRICS_*: one port cannot serve both; in the dev stack only the Bridge serves /metrics
const IGNORED_ENV = [
  'STK_HUB_DB_URL',
  'STK_SECRET_KEY',
  'STK_SERVICE_TOKEN',
  'STK_SERVICE_TOKENS',
  'STK_OWNER_EMAIL',
  'STK_OWNER_PASSWORD',
  'STK_HUB_URL',
  'STK_METRICS_PORT',
  'STK_METRICS_HOST',
  'STK_METRICS_TOKEN',
];

/** The ports `stk dev` itself reads (STK_DATA_DIR: devDataDir; the Hub and the Bridge it starts read theirs: hub/config.ts, bridge/config.ts). */
const DEV_ENV = z.object({
  STK_HUB_PORT: variable.port(4000),
  STK_BRIDGE_PORT: variable.port(3000),
  STK_DEV_PG_PORT: variable.port(54329),
});

/** One `stk dev` per data dir: PGlite must never be opened twice. */
function lockDataDir(dataDir: string): () => void {
  const p = join(dataDir, 'dev.pid');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(p, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return () => {
        try {
          if (readFileSync(p, 'utf8').trim() === String(process.pid)) rmSync(p);
        } catch {
          /* already gone */
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(readFileSync(p, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new Error(`another stk dev (pid ${pid}) is using ${dataDir}; stop it first (or set STK_DATA_DIR to use another directory)`);
      }
      rmSync(p, { force: true }); // stale: that process is gone
    }
  }
  throw new Error(`could not lock ${p}`);
}

/** The dev owner's password: generated once into dev-owner.txt (0600). `fresh` when just generated. */
function devOwnerPassword(dataDir: string): { password: string; fresh: boolean } {
  const p = join(dataDir, 'dev-owner.txt');
  if (existsSync(p)) {
    const password = readFileSync(p, 'utf8').trim();
    if (password.length >= 8) return { password, fresh: false };
  }
  const password = randomBytes(12).toString('base64url');
  writeFileSync(p, password + '\n', { mode: 0o600 });
  return { password, fresh: true };
}

/**
 * Closes a Fastify server gracefully, then forcibly after `graceMs`. In one process the Bridge's HTTP
 * client pool to the Hub can leave a connected-but-silent socket on the Hub, which Node would otherwise
 * keep until its 60 s headers timeout.
 */
async function stopServer(server: import('node:http').Server, stop: () => Promise<unknown>, graceMs = 2000): Promise<void> {
  const t = setTimeout(() => server.closeAllConnections(), graceMs);
  try {
    await stop();
  } finally {
    clearTimeout(t);
  }
}

function explainListenError(e: unknown, what: string, envName: string, port: number): Error {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'EADDRINUSE') return new Error(`${what} port ${port} is already in use: stop what holds it or set ${envName}`);
  if (err?.code === 'EACCES') return new Error(`${what} may not listen on port ${port}: set ${envName}`);
  return err instanceof Error ? err : new Error(String(e));
}

export async function runDev(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const started = Date.now();
  const dataDir = devDataDir(env);
  const settings = readEnv(DEV_ENV, env, (m) => new Error(m));
  const shownDir = relative(process.cwd(), dataDir) || '.';
  const hubPort = settings.STK_HUB_PORT;
  const bridgePort = settings.STK_BRIDGE_PORT;
  const pgPort = settings.STK_DEV_PG_PORT;
  const host = '127.0.0.1';
  // the stack's JSON logs share this terminal: warnings and errors only, unless asked for more
  const logLevel = env.STK_LOG_LEVEL || 'warn';

  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const unlock = lockDataDir(dataDir);

  const stops: Array<{ what: string; stop: () => Promise<unknown> }> = [];
  const stopAll = async () => {
    for (const s of stops.reverse()) {
      try {
        await s.stop();
      } catch (e) {
        process.stderr.write(`! stopping ${s.what} failed: ${(e as Error).message}\n`);
      }
    }
    stops.length = 0;
    rmSync(join(dataDir, 'dev.json'), { force: true });
    unlock();
  };

  let requestStop!: () => void;
  const stopRequested = new Promise<void>((r) => (requestStop = r));
  let signals = 0;
  const onSignal = () => {
    if (++signals > 1) {
      process.stderr.write('! second interrupt: exiting without a clean shutdown\n');
      process.exit(1);
    }
    requestStop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const warn = (m: string) => process.stderr.write(`! ${m}\n`);
  try {
    // 1. embedded PostgreSQL
    let pg: EmbeddedPg;
    try {
      pg = await startEmbeddedPg({ dataDir: join(dataDir, 'pgdata'), host, port: pgPort }, (m) => warn(`embedded PostgreSQL: ${m}`));
    } catch (e) {
      throw explainListenError(e, 'the embedded PostgreSQL', 'STK_DEV_PG_PORT', pgPort);
    }
    stops.push({ what: 'the embedded PostgreSQL', stop: () => pg.stop() });

    // 2. Hub (dev semantics: SQLite store, key and service token generated under the data dir)
    const { password, fresh } = devOwnerPassword(dataDir);
    // connections may reach the embedded PostgreSQL (a loopback address, refused by default) and
    // whatever the developer allows on top (STK_CONNECTION_ALLOW_HOSTS)
    const pgAddr = new URL(pg.url);
    const allowHosts = [env.STK_CONNECTION_ALLOW_HOSTS, `${pgAddr.hostname}:${pgAddr.port}`].filter(Boolean).join(',');
    const hubEnv: NodeJS.ProcessEnv = {
      ...env,
      STK_LOG_LEVEL: logLevel,
      STK_DEV: '1',
      STK_DATA_DIR: dataDir,
      STK_HUB_PORT: String(hubPort),
      STK_HUB_HOST: host,
      STK_CONNECTION_ALLOW_HOSTS: allowHosts,
    };
    for (const k of IGNORED_ENV) delete hubEnv[k];
    hubEnv.STK_OWNER_EMAIL = DEV_OWNER_EMAIL;
    hubEnv.STK_OWNER_PASSWORD = password;
    const { loadHubConfig } = await import('../hub/config.js');
    const { startHub } = await import('../hub/main.js');
    const hubConfig = loadHubConfig(hubEnv);
    const hub = await startHub(hubConfig).catch((e: unknown) => {
      throw explainListenError(e, 'the Hub', 'STK_HUB_PORT', hubPort);
    });
    stops.push({ what: 'the Hub', stop: () => stopServer(hub.app.server, () => hub.stop()) });
    const hubUrl = `http://${host}:${hub.port}`;
    await ensureDevOwner(hub.ctx, password, fresh);

    // 3. Bridge, in-process, following the Hub with the service token
    const bridgeEnv: NodeJS.ProcessEnv = {
      ...env,
      STK_LOG_LEVEL: logLevel,
      STK_DEV: '1',
      STK_HUB_URL: hubUrl,
      STK_SERVICE_TOKEN: hubConfig.serviceTokens[0],
      STK_BRIDGE_PORT: String(bridgePort),
      STK_BRIDGE_HOST: host,
      STK_CONNECTION_ALLOW_HOSTS: allowHosts,
    };
    const { loadBridgeConfig } = await import('../bridge/config.js');
    const { startBridge } = await import('../bridge/main.js');
    const bridge = await startBridge(loadBridgeConfig(bridgeEnv)).catch((e: unknown) => {
      throw explainListenError(e, 'the Bridge', 'STK_BRIDGE_PORT', bridgePort);
    });
    stops.push({ what: 'the Bridge', stop: () => stopServer(bridge.app.server, () => bridge.stop()) });
    const bridgeUrl = `http://${host}:${bridge.port}`;

    // 4. project demo / env dev / connection main → the embedded PostgreSQL
    const { bootstrapDev, DEV_PROJECT, DEV_ENV, DEV_CONNECTION } = await import('./bootstrap.js');
    const boot = await bootstrapDev({ hubUrl, email: DEV_OWNER_EMAIL, password, dbUrl: pg.url, dataDir });

    const state: DevState = {
      pid: process.pid,
      startedAt: new Date().toISOString(),
      hubUrl,
      bridgeUrl,
      pgUrl: pg.url,
      ownerEmail: DEV_OWNER_EMAIL,
      passwordFile: join(dataDir, 'dev-owner.txt'),
    };
    writeFileSync(join(dataDir, 'dev.json'), JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });

    printBanner({
      seconds: (Date.now() - started) / 1000,
      examples: examplesDir(process.cwd()),
      shownDir,
      hubUrl,
      bridgeUrl,
      pgUrl: pg.url,
      password,
      boot,
      project: DEV_PROJECT,
      env: DEV_ENV,
      connection: DEV_CONNECTION,
    });
  } catch (e) {
    await stopAll();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    throw e;
  }

  await stopRequested;
  process.stderr.write('Stopping the dev stack…\n');
  await stopAll();
  process.stderr.write('Stopped. Data is kept in ' + shownDir + '/\n');
  process.exit(0);
}

/** Makes sure dev@santokit.local exists and (if its password was just regenerated) has that password. */
async function ensureDevOwner(ctx: import('../hub/context.js').HubContext, password: string, fresh: boolean): Promise<void> {
  const { createOwner, hashPassword } = await import('../hub/services/auth.js');
  const op = await ctx.db.selectFrom('operators').select(['id', 'status']).where('email', '=', DEV_OWNER_EMAIL).executeTakeFirst();
  if (!op) {
    // the store already had other operators, so the Hub's first-owner bootstrap did not run
    await createOwner(ctx, DEV_OWNER_EMAIL, password);
    return;
  }
  if (fresh || op.status !== 'active') {
    // dev-owner.txt was deleted: the new password replaces the old one (dev stores only)
    await ctx.db
      .updateTable('operators')
      .set({ password_hash: await hashPassword(password), status: 'active' })
      .where('id', '=', op.id)
      .execute();
  }
}

interface Banner {
  seconds: number;
  examples: string;
  shownDir: string;
  hubUrl: string;
  bridgeUrl: string;
  pgUrl: string;
  password: string;
  boot: import('./bootstrap.js').BootstrapResult;
  project: string;
  env: string;
  connection: string;
}

function printBanner(b: Banner): void {
  const tty = process.stdout.isTTY && process.stdout.hasColors?.() && !process.env.NO_COLOR;
  const bold = (s: string) => (tty ? `\x1b[1m${s}\x1b[22m` : s);
  const dim = (s: string) => (tty ? `\x1b[2m${s}\x1b[22m` : s);
  const d = b.shownDir;
  const setup = b.boot.skipped
    ? `  ${bold('Setup')}       skipped: ${b.boot.skipped}`
    : `  ${bold('Project')}     ${b.project}, env ${b.env}, connection ${b.connection} → the embedded PostgreSQL${b.boot.done.length ? dim(` (${b.boot.done.join('; ')})`) : ''}`;
  const lines = [
    '',
    `${bold('Santokit dev stack is up')} in ${b.seconds.toFixed(1)} s ${dim(`(data in ${d}/)`)}`,
    '',
    `  ${bold('Hub')}         ${b.hubUrl}`,
    `  ${bold('Bridge')}      ${b.bridgeUrl}`,
    `  ${bold('PostgreSQL')}  ${b.pgUrl} ${dim(`(embedded PGlite, data in ${d}/pgdata)`)}`,
    '',
    `  ${bold('Dev owner')}   ${DEV_OWNER_EMAIL}`,
    `  ${bold('Password')}    ${b.password} ${dim(`(also in ${d}/dev-owner.txt)`)}`,
    setup,
    '',
    `${bold('Next')}, in another terminal in this directory:`,
    `  export STK_HUB_URL=${b.hubUrl}`,
    `  ${STK_RUN} login --email ${DEV_OWNER_EMAIL} --password-stdin < ${shellWord(`${d}/dev-owner.txt`)}`,
    `  ${STK_RUN} apply --project ${b.project} --env ${b.env} --dir ${shellWord(b.examples)}`,
    `  KEY=$(${STK_RUN} apikey create --project ${b.project} --env ${b.env} --name ${b.boot.freeKeyName ?? 'local'} --roles admin -q)`,
    `  curl -s ${b.bridgeUrl}/call -H 'content-type: application/json' -H "x-santokit-api-key: $KEY" \\`,
    `       -d '{"path":"db/users/select","params":{"limit":5}}'`,
    '',
    dim('Logs: warnings and errors only (STK_LOG_LEVEL=info for request logs). `npx --no stk status` shows the URLs again.'),
    dim('Ctrl-C stops everything (stk dev exits 0; npm start then reports 130, as npm does for any interrupted script).'),
    '',
  ];
  process.stdout.write(lines.join('\n'));
}
