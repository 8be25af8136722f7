import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Idempotent first-run setup of `stk dev` through the Hub's public HTTP API, as an operator would do it:
 * project `demo`, env `dev`, connection `main` → the embedded PostgreSQL. What was done is remembered in
 * `.santokit/dev-state.json` so a restart does not rewrite (and re-audit) an unchanged connection.
 */

export const DEV_PROJECT = 'demo';
export const DEV_ENV = 'dev';
export const DEV_CONNECTION = 'main';

export interface BootstrapResult {
  /** human-readable lines of what changed; empty when everything was already in place */
  done: string[];
  /** a key name not yet taken in demo/dev, for the printed next steps (`local`, then `local-2`, …) */
  freeKeyName?: string;
  /** set when a step could not run (e.g. an API missing from this build) */
  skipped?: string;
}

interface DevState {
  connectionUrl?: string;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly serverMessage: string,
    message: string,
  ) {
    super(message);
  }
}

async function call<T>(hubUrl: string, method: string, path: string, token: string | null, body?: unknown): Promise<T> {
  const res = await fetch(hubUrl + path, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown = undefined;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    /* not JSON */
  }
  if (!res.ok) {
    const e = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
    const msg = e?.message ?? res.statusText;
    throw new HttpError(res.status, e?.code ?? `HTTP_${res.status}`, msg, `${method} ${path}: ${msg} (${res.status} ${e?.code ?? ''})`.replace(/ \)$/, ')'));
  }
  return json as T;
}

const isMissingRoute = (e: unknown) => e instanceof HttpError && e.status === 404 && e.serverMessage.startsWith('no route ');
const alreadyExists = (e: unknown) => e instanceof HttpError && e.status === 409 && /already exists/.test(e.serverMessage);

export async function bootstrapDev(o: { hubUrl: string; email: string; password: string; dbUrl: string; dataDir: string }): Promise<BootstrapResult> {
  const statePath = join(o.dataDir, 'dev-state.json');
  let state: DevState = {};
  if (existsSync(statePath)) {
    try {
      state = JSON.parse(readFileSync(statePath, 'utf8')) as DevState;
    } catch {
      state = {};
    }
  }
  const done: string[] = [];
  const { token } = await call<{ token: string }>(o.hubUrl, 'POST', '/api/auth/login', null, { email: o.email, password: o.password });
  try {
    try {
      await call(o.hubUrl, 'POST', '/api/projects', token, { name: DEV_PROJECT });
      done.push(`created project ${DEV_PROJECT}`);
    } catch (e) {
      if (!alreadyExists(e)) throw e;
    }
    try {
      await call(o.hubUrl, 'POST', `/api/projects/${DEV_PROJECT}/envs`, token, { name: DEV_ENV });
      done.push(`created env ${DEV_PROJECT}/${DEV_ENV}`);
    } catch (e) {
      if (!alreadyExists(e)) throw e;
    }
    const conns = await call<{ items: Array<{ name: string }> }>(o.hubUrl, 'GET', `/api/projects/${DEV_PROJECT}/envs/${DEV_ENV}/connections`, token);
    const exists = conns.items.some((c) => c.name === DEV_CONNECTION);
    if (!exists || state.connectionUrl !== o.dbUrl) {
      await call(o.hubUrl, 'PUT', `/api/projects/${DEV_PROJECT}/envs/${DEV_ENV}/connections/${DEV_CONNECTION}`, token, { engine: 'postgres', dbUrl: o.dbUrl });
      done.push(`${exists ? 'updated' : 'set'} connection ${DEV_CONNECTION} → the embedded PostgreSQL`);
      state.connectionUrl = o.dbUrl;
      writeFileSync(statePath, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
    }
    // names stay taken for good (revoked keys too): the printed `apikey create` must use a free one
    const keys = await call<{ items: Array<{ name: string }> }>(o.hubUrl, 'GET', `/api/projects/${DEV_PROJECT}/envs/${DEV_ENV}/apikeys`, token);
    const taken = new Set(keys.items.map((k) => k.name));
    let freeKeyName = 'local';
    for (let i = 2; taken.has(freeKeyName); i++) freeKeyName = `local-${i}`;
    return { done, freeKeyName };
  } catch (e) {
    if (isMissingRoute(e)) return { done, skipped: `the Hub in this build lacks an API the bootstrap needs (${(e as Error).message})` };
    throw e;
  } finally {
    await call(o.hubUrl, 'POST', '/api/auth/logout', token).catch(() => undefined);
  }
}
