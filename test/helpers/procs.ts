import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { TEST_ALLOW_HOSTS } from './pg.js';
import { rememberSecret, rememberStore } from './secrets.js';

export const ROOT = resolve(import.meta.dirname, '../..');
export const STK = join(ROOT, 'bin/stk.js');
export const LOG_DIR = join(ROOT, 'test-output/logs');

/** ports this process handed out: two concurrent calls never get the same one */
const handedOut = new Set<number>();

export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((res, rej) => {
      const s = createServer();
      s.unref();
      s.on('error', rej);
      s.listen(0, '127.0.0.1', () => {
        const a = s.address();
        const p = typeof a === 'object' && a ? a.port : 0;
        s.close(() => res(p));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

export async function waitFor(fn: () => Promise<boolean>, timeoutMs = 20_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      if (await fn()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

export interface Proc {
  name: string;
  url: string;
  port: number;
  child: ChildProcess;
  logFile: string;
  env: Record<string, string>;
  /** everything the process printed so far */
  logs(): string;
  stop(): Promise<void>;
  kill9(): Promise<void>;
}

let seq = 0;

function spawnStk(name: string, args: string[], env: Record<string, string>, port: number): Proc {
  mkdirSync(LOG_DIR, { recursive: true });
  const logFile = join(LOG_DIR, `${name}-${process.pid}-${++seq}-${Date.now()}.log`);
  const out = createWriteStream(logFile);
  const child = spawn(process.execPath, [STK, ...args], {
    cwd: env.STK_TEST_CWD ?? ROOT,
    env: { ...process.env, STK_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.pipe(out, { end: false });
  child.stderr!.pipe(out, { end: false });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const proc: Proc = {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    child,
    logFile,
    env,
    logs: () => {
      try {
        return readFileSync(logFile, 'utf8');
      } catch {
        return '';
      }
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
    async kill9() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
  return proc;
}

export interface HubOptions {
  dbUrl?: string;
  env?: Record<string, string>;
  port?: number;
  secretKey?: string;
  serviceToken?: string;
}

export const TEST_OWNER = { email: 'owner@example.com', password: 'owner-password-1' };

/** Starts `stk hub start` on a free port (SQLite in a temp dir unless dbUrl is given) and waits for /readyz. */
export async function startHub(o: HubOptions = {}): Promise<Proc & { secretKey: string; serviceToken: string; dbUrl: string }> {
  const port = o.port ?? (await freePort());
  const secretKey = o.secretKey ?? randomBytes(32).toString('hex');
  const serviceToken = o.serviceToken ?? randomBytes(24).toString('base64url');
  const dbUrl = o.dbUrl ?? `sqlite://${join(tmpdir(), `stk-hub-${randomBytes(6).toString('hex')}.db`)}`;
  const env = {
    STK_HUB_PORT: String(port),
    STK_HUB_DB_URL: dbUrl,
    STK_SECRET_KEY: secretKey,
    STK_SERVICE_TOKEN: serviceToken,
    STK_OWNER_EMAIL: TEST_OWNER.email,
    STK_OWNER_PASSWORD: TEST_OWNER.password,
    // the test PostgreSQL is on loopback: allowed explicitly, as an operator would
    STK_CONNECTION_ALLOW_HOSTS: TEST_ALLOW_HOSTS,
    ...o.env,
  };
  rememberSecret('hub-secret-key', env.STK_SECRET_KEY);
  for (const t of ((env as Record<string, string>).STK_SERVICE_TOKENS ?? env.STK_SERVICE_TOKEN ?? '').split(',')) rememberSecret('service-token', t.trim());
  rememberSecret('password', env.STK_OWNER_PASSWORD);
  rememberSecret('db-url', env.STK_HUB_DB_URL);
  rememberStore(env.STK_HUB_DB_URL);
  const p = spawnStk('hub', ['hub', 'start'], env, port);
  await waitFor(async () => (await fetch(`${p.url}/readyz`)).ok, 30_000, `hub on :${port}`).catch((e) => {
    throw new Error(`${e.message}\n--- hub log ---\n${p.logs().slice(-3000)}`);
  });
  return Object.assign(p, { secretKey, serviceToken, dbUrl });
}

export interface BridgeOptions {
  hubUrl: string;
  serviceToken: string;
  env?: Record<string, string>;
  port?: number;
}

/** Starts `stk bridge start` on a free port and waits for /healthz. */
export async function startBridge(o: BridgeOptions): Promise<Proc> {
  const port = o.port ?? (await freePort());
  const env = {
    STK_BRIDGE_PORT: String(port),
    STK_HUB_URL: o.hubUrl,
    STK_SERVICE_TOKEN: o.serviceToken,
    STK_CONNECTION_ALLOW_HOSTS: TEST_ALLOW_HOSTS,
    ...o.env,
  };
  rememberSecret('service-token', env.STK_SERVICE_TOKEN);
  const p = spawnStk('bridge', ['bridge', 'start'], env, port);
  await waitFor(async () => (await fetch(`${p.url}/healthz`)).ok, 30_000, `bridge on :${port}`).catch((e) => {
    throw new Error(`${e.message}\n--- bridge log ---\n${p.logs().slice(-3000)}`);
  });
  return p;
}

/** Spawns any stk command as a long-running process (e.g. `dev`). */
export function spawnLongRunning(name: string, args: string[], env: Record<string, string>, port = 0): Proc {
  return spawnStk(name, args, env, port);
}
