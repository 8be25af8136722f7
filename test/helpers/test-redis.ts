import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Redis for the tests of the global per-key rate limits (STK_RATE_LIMIT_REDIS_URL).
 * - `ensureRedis()`: test/helpers/global-setup.ts uses the Redis at STK_TEST_REDIS_URL when set, else
 *   starts the throwaway one of scripts/test-redis.sh (Debian's redis-server, installed when missing)
 *   and exports its URL as STK_TEST_REDIS_URL. Only tests that need Redis read it.
 * - `spawnRedis()`: a private redis-server child on a free port, for a test that kills and restarts it.
 */

export const REDIS_BIN = process.env.STK_TEST_REDIS_SERVER ?? 'redis-server';

/** Undefined when `url` answers PING, else why not (plain RESP over a socket: no client library needed). */
export function probeRedis(url: string, timeoutMs = 2000): Promise<string | undefined> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = connect({ host: u.hostname, port: Number(u.port || 6379) });
    const t = setTimeout(() => done('timeout'), timeoutMs);
    let buf = '';
    const done = (why: string | undefined) => {
      clearTimeout(t);
      s.destroy();
      resolve(why);
    };
    s.on('error', (e) => done(e.message));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG') ? undefined : buf.trim());
    });
  });
}

function script(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile('bash', ['scripts/test-redis.sh', ...args], { env }, (err, stdout) => {
      if (err) reject(new Error(`scripts/test-redis.sh ${args.join(' ')} failed (${err.code ?? err.signal}); its output is above`));
      else resolve(stdout.trim());
    });
    child.stderr?.pipe(process.stderr);
  });
}

/** Client connections other than the one asking (another test run on the same machine). */
async function otherClients(url: string): Promise<number> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = connect({ host: u.hostname, port: Number(u.port || 6379) });
    let buf = '';
    const t = setTimeout(() => finish(0), 2000);
    const finish = (n: number) => {
      clearTimeout(t);
      s.destroy();
      resolve(n);
    };
    s.on('error', () => finish(0));
    s.on('connect', () => s.write('INFO clients\r\n'));
    s.on('data', (d) => {
      buf += d.toString();
      const m = /connected_clients:(\d+)/.exec(buf);
      if (m) finish(Number(m[1]) - 1);
    });
  });
}

export interface EnsuredRedis {
  url: string;
  started: boolean;
  stop: () => Promise<void>;
}

export async function ensureRedis(log: (line: string) => void = (l) => process.stderr.write(l + '\n')): Promise<EnsuredRedis> {
  const given = process.env.STK_TEST_REDIS_URL;
  if (given) {
    const why = await probeRedis(given);
    if (why)
      throw new Error(`Redis is not reachable at STK_TEST_REDIS_URL (${new URL(given).host}): ${why}. Start it, or unset it to let the tests start one.`);
    return { url: given, started: false, stop: async () => {} };
  }
  const port = process.env.STK_TEST_REDIS_PORT || '56379';
  const url = `redis://127.0.0.1:${port}`;
  if (!(await probeRedis(url))) return { url, started: false, stop: async () => {} };
  log(`test setup: starting a throwaway Redis on :${port} with scripts/test-redis.sh (stopped after the run)`);
  const started = await script(['start'], { ...process.env, STK_TEST_REDIS_PORT: port });
  const stop = async () => {
    const others = await otherClients(started);
    if (others > 0) {
      log(`test teardown: leaving the throwaway Redis on :${port} running: ${others} other client(s) use it (stop it with: bash scripts/test-redis.sh stop)`);
      return;
    }
    await script(['stop'], { ...process.env, STK_TEST_REDIS_PORT: port });
  };
  return { url: started, started: true, stop };
}

export interface RedisProc {
  url: string;
  port: number;
  child: ChildProcess;
  /** SIGKILL, and wait for the exit */
  kill(): Promise<void>;
  /** a new redis-server on the same port (empty: no persistence) */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** A private redis-server on `port` (from freePort()), no persistence, answering before this returns. */
export async function spawnRedis(port: number, extraArgs: string[] = []): Promise<RedisProc> {
  const dir = mkdtempSync(join(tmpdir(), 'stk-redis-'));
  const url = `redis://127.0.0.1:${port}`;
  let child!: ChildProcess;
  const start = async () => {
    child = spawn(REDIS_BIN, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extraArgs], {
      stdio: 'ignore',
    });
    const end = Date.now() + 10_000;
    // with --requirepass PING answers -NOAUTH: it is up all the same
    for (let why = await probeRedis(url, 500); why && !why.startsWith('-NOAUTH'); why = await probeRedis(url, 500)) {
      if (child.exitCode !== null)
        throw new Error(`redis-server exited with ${child.exitCode} (is ${REDIS_BIN} installed? bash scripts/test-redis.sh start installs it)`);
      if (Date.now() > end) throw new Error(`redis-server did not answer on :${port}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const kill = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  };
  await start();
  return {
    url,
    port,
    get child() {
      return child;
    },
    kill,
    restart: async () => {
      await kill();
      await start();
    },
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
