/**
 * Shared setup for the API-key integration tests: a real Hub process, N real Bridge processes, the
 * real `stk` binary, and examples/basic applied to a fresh PostgreSQL database.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { expect } from 'vitest';
import { ROOT, startBridge, startHub, TEST_OWNER, waitFor, type HubOptions, type Proc } from '../helpers/procs.js';
import { loginToken, runStk, tempConfigDir, type RunResult } from '../helpers/cli.js';
import { createTestDatabase } from '../helpers/pg.js';
import { rememberSecret } from '../helpers/secrets.js';
import { HubApi } from '../helpers/hub-api.js';

export type Hub = Awaited<ReturnType<typeof startHub>>;
export const EXAMPLE_DIR = join(ROOT, 'examples/basic');
export const KEY_LINE_RE = /API Key \(store securely\): (\S+)/;

export interface CallResult {
  status: number;
  body: any;
  headers: Headers;
}

/** POST /call on a Bridge with an API key (and, by default, the matching hint headers). */
export async function call(
  bridge: Proc | string,
  key: string | undefined,
  opts: { path?: string; project?: string; env?: string; headers?: Record<string, string>; params?: unknown } = {},
): Promise<CallResult> {
  const url = (typeof bridge === 'string' ? bridge : bridge.url) + '/call';
  const headers: Record<string, string> = { 'content-type': 'application/json', ...opts.headers };
  if (key !== undefined) headers['x-santokit-api-key'] = key;
  if (opts.project) headers['x-santokit-project'] = opts.project;
  if (opts.env) headers['x-santokit-env'] = opts.env;
  const r = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ path: opts.path ?? 'db/users/select', params: opts.params ?? {} }) });
  const text = await r.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* keep text */
  }
  return { status: r.status, body, headers: r.headers };
}

export interface Stack {
  hub: Hub;
  bridges: Proc[];
  project: string;
  env: string;
  owner: string;
  cfg: string;
  dbUrl: string;
  stk(args: string[], token?: string): Promise<RunResult>;
  api(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; json: any; text: string }>;
  /** creates a key through the CLI and returns it with its id */
  createKey(name: string, roles: string, extra?: string[]): Promise<{ key: string; keyId: string; out: RunResult }>;
  startBridge(env?: Record<string, string>): Promise<Proc>;
  stop(): Promise<void>;
}

export async function startStack(
  o: { bridges: number; hub?: HubOptions; bridgeEnv?: Record<string, string>; project?: string } = { bridges: 2 },
): Promise<Stack> {
  const db = await createTestDatabase('apikeys');
  const hub = await startHub(o.hub);
  const cfg = tempConfigDir();
  const owner = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
  const project = o.project ?? 'shop';
  const env = 'dev';
  const stk = (args: string[], token = owner) => runStk(args, { env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: token } });
  const http = new HubApi(hub.url, owner, (_m, _p, text) => {
    const key = /"apiKey":"([^"]+)"/.exec(text)?.[1];
    if (key) rememberSecret('api-key', key);
  });
  const api = (method: string, path: string, body?: unknown, token: string = owner) => http.request(method, path, body, token);
  const must = async (args: string[]) => {
    const r = await stk(args);
    expect(r.code, `stk ${args.join(' ')}\n${r.output}`).toBe(0);
    return r;
  };
  await must(['project', 'create', project]);
  await must(['env', 'create', '--project', project, env]);
  await must(['connections', 'set', '--project', project, '--env', env, '--name', 'main', '--engine', 'postgres', '--db-url', db.url]);
  await must(['apply', '--project', project, '--env', env, '--dir', EXAMPLE_DIR]);

  const bridges: Proc[] = [];
  const stack: Stack = {
    hub,
    bridges,
    project,
    env,
    owner,
    cfg,
    dbUrl: db.url,
    stk,
    api,
    async createKey(name, roles, extra = []) {
      const out = await stk(['apikey', 'create', '--project', project, '--env', env, '--name', name, '--roles', roles, ...extra]);
      expect(out.code, out.output).toBe(0);
      const key = rememberSecret('api-key', KEY_LINE_RE.exec(out.stdout)?.[1]);
      const keyId = /Key ID: (\S+)/.exec(out.stdout)?.[1];
      expect(key, out.output).toBeTruthy();
      return { key: key!, keyId: keyId!, out };
    },
    async startBridge(env = {}) {
      const b = await startBridge({
        hubUrl: hub.url,
        serviceToken: hub.serviceToken,
        env: { STK_BRIDGE_ID: `bridge-${bridges.length + 1}-${randomBytes(3).toString('hex')}`, STK_USAGE_REPORT_SECONDS: '1', ...o.bridgeEnv, ...env },
      });
      bridges.push(b);
      return b;
    },
    async stop() {
      await Promise.all(bridges.map((b) => b.stop()));
      await stack.hub.stop(); // the Hub may have been replaced by a restart
      await db.drop();
    },
  };
  for (let i = 0; i < o.bridges; i++) await stack.startBridge();
  // every Bridge holds the stream before the tests start
  await waitFor(
    async () => {
      const r = await fetch(hub.url + '/internal/sync/bridges', { headers: { 'x-santokit-service-token': hub.serviceToken } });
      return ((await r.json()) as { items: unknown[] }).items.length === o.bridges;
    },
    20_000,
    'bridges connected to the hub',
  );
  return stack;
}

/** Bridge ids connected to a Hub right now. */
export async function connectedBridges(hub: Hub): Promise<string[]> {
  const r = await fetch(hub.url + '/internal/sync/bridges', { headers: { 'x-santokit-service-token': hub.serviceToken } });
  return ((await r.json()) as { items: Array<{ bridgeId: string }> }).items.map((b) => b.bridgeId);
}
