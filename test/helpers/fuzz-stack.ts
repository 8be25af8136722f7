/**
 * A real stack for the hardening tests: a Hub process (SQLite store unless told otherwise), the real
 * `stk` CLI, examples/basic applied with `stk apply` to a fresh PostgreSQL database reached through a
 * URL WITH a password (the test cluster trusts any password; the secrets scan then has something to
 * find), API keys created through the HTTP API, and Bridge processes.
 *
 * Also: a keep-alive HTTP client with bounded concurrency, and the error-envelope check every
 * hardening test applies to every response.
 */
import { Agent, request as httpRequest, type OutgoingHttpHeaders } from 'node:http';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ROOT, startBridge, startHub, TEST_OWNER, waitFor, type HubOptions, type Proc } from './procs.js';
import { loginToken, runStk, tempConfigDir, type RunResult } from './cli.js';
import { createTestDatabase } from './pg.js';
import { rememberSecret } from './secrets.js';
import { HubApi } from './hub-api.js';

export type Hub = Awaited<ReturnType<typeof startHub>>;
export const EXAMPLE_DIR = join(ROOT, 'examples/basic');

/** `postgres://postgres:<random password>@host/db`: trust auth ignores it, the scan looks for it. */
export function withPassword(url: string, password = `pw-${randomBytes(12).toString('hex')}`): string {
  const u = new URL(url);
  u.password = password;
  return rememberSecret('db-url', u.toString());
}

export interface Resp {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

/** A keep-alive client for one origin with at most `concurrency` requests in flight. */
export class HttpClient {
  readonly agent: Agent;
  readonly base: URL;
  constructor(
    baseUrl: string,
    readonly concurrency = 16,
  ) {
    this.base = new URL(baseUrl);
    this.agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  }

  /** One request; `body` is sent as given (a string or Buffer; objects are JSON-encoded). */
  send(method: string, path: string, headers: OutgoingHttpHeaders = {}, body?: string | Buffer | object): Promise<Resp> {
    const payload = body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        {
          host: this.base.hostname,
          port: this.base.port,
          method,
          path,
          agent: this.agent,
          headers: payload === undefined ? headers : { 'content-length': Buffer.byteLength(payload), ...headers },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: any;
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** Runs `n` generated requests with at most `concurrency` in flight; `each` sees every outcome. */
  async run<T>(items: T[], fn: (item: T, i: number) => Promise<void>): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, items.length) }, worker));
  }

  close(): void {
    this.agent.destroy();
  }
}

/** Why an error response is not the envelope `{"error":{"code","message","requestId"}}`, or null. */
export function envelopeProblem(r: Resp): string | null {
  if (r.status < 400) return null;
  const e = r.json?.error;
  if (!e || typeof e !== 'object') return `status ${r.status} without an error envelope: ${r.text.slice(0, 200)}`;
  if (typeof e.code !== 'string' || !e.code) return `status ${r.status}: envelope without code`;
  if (typeof e.message !== 'string' || !e.message) return `status ${r.status}: envelope without message`;
  if (typeof e.requestId !== 'string' || !e.requestId) return `status ${r.status}: envelope without requestId`;
  if (r.headers['x-request-id'] !== e.requestId) return `status ${r.status}: x-request-id header ≠ envelope requestId`;
  return null;
}

/** Counts what a batch of responses did; prints one line with `summary()`. */
export class Tally {
  requests = 0;
  byStatus = new Map<number, number>();
  fiveXX = 0;
  missingRequestId = 0;
  badEnvelope = 0;
  transportErrors = 0;
  problems: string[] = [];

  add(r: Resp, what: string): void {
    this.requests++;
    this.byStatus.set(r.status, (this.byStatus.get(r.status) ?? 0) + 1);
    if (r.status >= 500) this.fiveXX++;
    const p = envelopeProblem(r);
    if (r.status >= 400 && typeof r.json?.error?.requestId !== 'string') this.missingRequestId++;
    if (p) {
      this.badEnvelope++;
      if (this.problems.length < 20) this.problems.push(`${p} ← ${what.slice(0, 300)}`);
    }
  }

  fail(e: unknown, what: string): void {
    this.requests++;
    this.transportErrors++;
    if (this.problems.length < 20) this.problems.push(`transport error ${(e as Error).message} ← ${what.slice(0, 300)}`);
  }

  statuses(): string {
    return [...this.byStatus]
      .sort((a, b) => a[0] - b[0])
      .map(([s, n]) => `${s}×${n}`)
      .join(' ');
  }
}

export interface KeyInfo {
  key: string;
  keyId: string;
}

export interface Stack {
  hub: Hub;
  bridges: Proc[];
  project: string;
  env: string;
  owner: string;
  cfg: string;
  dbUrl: string;
  dbName: string;
  stk(args: string[], opts?: { token?: string; cwd?: string; timeoutMs?: number }): Promise<RunResult>;
  api(method: string, path: string, body?: unknown, token?: string | null): Promise<{ status: number; json: any; text: string }>;
  createKey(name: string, roles: string[], env?: string): Promise<KeyInfo>;
  /** Another env of the project on a database of its own (a second tenant), examples/basic applied; the database goes with stop(). */
  addEnv(env: string): Promise<{ dbUrl: string }>;
  startBridge(env?: Record<string, string>): Promise<Proc>;
  stop(): Promise<void>;
}

export interface StackOptions {
  bridges?: number;
  hub?: HubOptions;
  bridgeEnv?: Record<string, string>;
  project?: string;
  env?: string;
  /** apply examples/basic (default true) */
  apply?: boolean;
}

/** Hub + CLI + examples/basic applied + N Bridges, each Bridge ready for the project/env. */
export async function startStack(o: StackOptions = {}): Promise<Stack> {
  const db = await createTestDatabase('hard');
  const dbUrl = withPassword(db.url);
  const hub = await startHub(o.hub);
  const cfg = tempConfigDir();
  const owner = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
  const project = o.project ?? 'shop';
  const env = o.env ?? 'dev';
  const stk: Stack['stk'] = (args, so = {}) =>
    runStk(args, { cwd: so.cwd, timeoutMs: so.timeoutMs, env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: so.token ?? owner } });
  const http = new HubApi(hub.url, owner);
  const api: Stack['api'] = (method, path, body, token = owner) => http.request(method, path, body, token);
  const must = async (args: string[]) => {
    const r = await stk(args);
    if (r.code !== 0) throw new Error(`stk ${args.join(' ')} exited ${r.code}\n${r.output}`);
    return r;
  };
  const envOn = async (name: string, url: string, apply: boolean) => {
    await must(['env', 'create', '--project', project, name]);
    await must(['connections', 'set', '--project', project, '--env', name, '--name', 'main', '--engine', 'postgres', '--db-url', url]);
    if (apply) await must(['apply', '--project', project, '--env', name, '--dir', EXAMPLE_DIR]);
  };
  await must(['project', 'create', project]);
  await envOn(env, dbUrl, o.apply !== false);
  const moreDbs: Array<{ drop(): Promise<void> }> = [];

  const bridges: Proc[] = [];
  const stack: Stack = {
    hub,
    bridges,
    project,
    env,
    owner,
    cfg,
    dbUrl,
    dbName: db.name,
    stk,
    api,
    async createKey(name, roles, keyEnv = env) {
      const r = await api('POST', `/api/projects/${project}/envs/${keyEnv}/apikeys`, { name, roles });
      if (r.status !== 201) throw new Error(`apikey create ${name}: ${r.status} ${r.text}`);
      return { key: rememberSecret('api-key', r.json.apiKey as string), keyId: r.json.keyId as string };
    },
    async addEnv(name) {
      const more = await createTestDatabase(`hard_${name}`);
      moreDbs.push(more);
      const url = withPassword(more.url);
      await envOn(name, url, true);
      return { dbUrl: url };
    },
    async startBridge(extra = {}) {
      const b = await startBridge({
        hubUrl: hub.url,
        serviceToken: hub.serviceToken,
        env: { STK_BRIDGE_ID: `hard-${bridges.length + 1}-${randomBytes(3).toString('hex')}`, STK_LOG_LEVEL: 'warn', ...o.bridgeEnv, ...extra },
      });
      bridges.push(b);
      if (o.apply !== false) {
        await waitFor(
          async () => (await fetch(`${b.url}/readyz?project=${project}&env=${env}`, { headers: { 'x-santokit-service-token': hub.serviceToken } })).ok,
          30_000,
          `bridge ready for ${project}/${env}`,
        );
      }
      return b;
    },
    async stop() {
      await Promise.all(bridges.map((b) => b.stop()));
      await hub.stop();
      await db.drop();
      for (const d of moreDbs) await d.drop();
    },
  };
  for (let i = 0; i < (o.bridges ?? 1); i++) await stack.startBridge();
  return stack;
}
