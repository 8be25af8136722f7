import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { start, runOk, waitHttp, type Proc } from './procs.js';
import { freePort, waitFor } from './util.js';

/** Real Hub and Bridge processes (bin/stk.js) and the real CLI, as an operator would run them. */

export const OWNER = { email: 'bench@example.com', password: 'bench-owner-password-1' };
export const PROJECT = 'bench';

export interface StackPaths {
  root: string;
  stk: string;
  logDir: string;
  scratch: string;
}

export interface Hub {
  name: string;
  proc: Proc;
  url: string;
  secretKey: string;
  serviceToken: string;
  dbFile: string;
  /** runs `stk <args>` logged in as the owner against this Hub; returns stdout */
  cli(args: string[], input?: string): Promise<string>;
  /** an operator session token for direct API calls */
  token(): Promise<string>;
}

export async function startHub(paths: StackPaths, name: string, logLevel = 'warn'): Promise<Hub> {
  const dir = join(paths.scratch, `hub-${name}`);
  mkdirSync(join(dir, 'cli'), { recursive: true });
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const secretKey = randomBytes(32).toString('hex');
  const serviceToken = randomBytes(24).toString('base64url');
  const dbFile = join(dir, 'hub.db');
  const proc = start(`hub-${name}`, process.execPath, [paths.stk, 'hub', 'start'], {
    env: {
      STK_HUB_PORT: String(port),
      STK_HUB_DB_URL: `sqlite://${dbFile}`,
      STK_SECRET_KEY: secretKey,
      STK_SERVICE_TOKEN: serviceToken,
      STK_OWNER_EMAIL: OWNER.email,
      STK_OWNER_PASSWORD: OWNER.password,
      STK_LOG_LEVEL: logLevel,
    },
    logDir: paths.logDir,
  });
  await waitHttp(proc, `${url}/readyz`);
  const cliEnv = { STK_CONFIG_DIR: join(dir, 'cli'), STK_HUB_URL: url, NO_COLOR: '1', STK_NO_INPUT: '1' };
  const cli = (args: string[], input?: string) => runOk(process.execPath, [paths.stk, ...args], { env: cliEnv, input, cwd: paths.root, timeoutMs: 120_000 });
  await cli(['login', '--email', OWNER.email, '--password-stdin'], OWNER.password);
  let tok: string | undefined;
  const token = async () => {
    if (tok) return tok;
    const r = await fetch(`${url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(OWNER) });
    if (!r.ok) throw new Error(`login failed: ${r.status} ${await r.text()}`);
    tok = ((await r.json()) as { token: string }).token;
    return tok;
  };
  return { name, proc, url, secretKey, serviceToken, dbFile, cli, token };
}

/**
 * Server-side duration (Fastify's `responseTime`, ms) of each request whose URL matches `path`, from a
 * Hub started with log level info.
 */
export function hubResponseTimes(hub: Hub, path: RegExp): number[] {
  const urls = new Map<string, string>();
  const out: number[] = [];
  for (const line of hub.proc.logs().split('\n')) {
    if (!line.startsWith('{')) continue;
    let j: { reqId?: string; msg?: string; url?: string; req?: { url?: string }; responseTime?: number };
    try {
      j = JSON.parse(line);
    } catch {
      continue;
    }
    if (!j.reqId) continue;
    if (j.msg === 'incoming request' && j.req?.url) urls.set(j.reqId, j.req.url);
    // one access line per request (src/common/http.ts) carries the url itself
    else if (j.msg === 'request completed' && typeof j.responseTime === 'number' && path.test(j.url ?? urls.get(j.reqId) ?? '')) out.push(j.responseTime);
  }
  return out;
}

/** project (once) + env + connection `main` + `stk apply` of bench/schema. */
export async function setupEnv(hub: Hub, env: string, dbUrl: string, schemaDir: string, createProject: boolean): Promise<void> {
  if (createProject) await hub.cli(['project', 'create', PROJECT]);
  await hub.cli(['env', 'create', '--project', PROJECT, env]);
  await hub.cli(['connections', 'set', '--project', PROJECT, '--env', env, '--name', 'main', '--db-url-stdin'], dbUrl);
  await hub.cli(['apply', '--project', PROJECT, '--env', env, '--dir', schemaDir, '--json']);
}

export interface CreatedKey {
  apiKey: string;
  keyId: string;
}

/** `stk apikey create … --roles reader`, by default with a per-key limit high enough not to throttle the load. */
export async function createKeyCli(hub: Hub, env: string, name: string, rateLimitPerMin = 10_000_000): Promise<CreatedKey> {
  const out = await hub.cli([
    'apikey',
    'create',
    '--project',
    PROJECT,
    '--env',
    env,
    '--name',
    name,
    '--roles',
    'reader',
    '--rate-limit',
    String(rateLimitPerMin),
    '--json',
  ]);
  const k = JSON.parse(out) as CreatedKey;
  if (!k.apiKey || !k.keyId) throw new Error(`unexpected apikey create output: ${out.slice(0, 200)}`);
  return k;
}

/** The same through the HTTP API (for bulk setup; the measured revokes go through the CLI). */
export async function createKeyApi(hub: Hub, env: string, name: string): Promise<CreatedKey> {
  const r = await fetch(`${hub.url}/api/projects/${PROJECT}/envs/${env}/apikeys`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${await hub.token()}` },
    body: JSON.stringify({ name, roles: ['reader'], rateLimitPerMin: 10_000_000 }),
  });
  if (r.status !== 201) throw new Error(`apikey create ${name}: ${r.status} ${await r.text()}`);
  return (await r.json()) as CreatedKey;
}

export interface Bridge {
  name: string;
  proc: Proc;
  url: string;
}

export async function startBridge(
  paths: StackPaths,
  hub: Hub,
  name: string,
  readyEnvs: string[],
  extraEnv: Record<string, string> = {},
  /** node flags (e.g. --cpu-prof, which NODE_OPTIONS does not take) */
  nodeArgs: string[] = [],
): Promise<Bridge> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = start(`bridge-${name}`, process.execPath, [...nodeArgs, paths.stk, 'bridge', 'start'], {
    env: {
      STK_BRIDGE_PORT: String(port),
      STK_HUB_URL: hub.url,
      STK_SERVICE_TOKEN: hub.serviceToken,
      STK_BRIDGE_ID: `bench-${name}`,
      STK_LOG_LEVEL: 'warn',
      ...extraEnv,
    },
    logDir: paths.logDir,
  });
  await waitHttp(proc, `${url}/healthz`);
  // a project's readiness names tenants: it needs the service token
  for (const env of readyEnvs) await waitHttp(proc, `${url}/readyz?project=${PROJECT}&env=${env}`, 90_000, { 'x-santokit-service-token': hub.serviceToken });
  return { name, proc, url };
}

/** One `/call` that must answer 200 with a row: proves the key, the release and the DB work. */
export async function smokeCall(url: string, apiKey: string): Promise<void> {
  await waitFor(
    async () => {
      const r = await fetch(`${url}/call`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-santokit-api-key': apiKey },
        body: JSON.stringify({ path: 'db/users/select', params: { limit: 1 } }),
      });
      const text = await r.text();
      if (r.status !== 200) throw new Error(`${r.status} ${text.slice(0, 300)}`);
      const body = JSON.parse(text) as { data?: unknown[] };
      if (!Array.isArray(body.data) || body.data.length !== 1) throw new Error(`unexpected body ${text.slice(0, 300)}`);
      return true;
    },
    30_000,
    `a successful /call on ${url}`,
  );
}
