import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { UsageError } from './errors.js';

export const DEFAULT_HUB_URL = 'http://localhost:4000';

export interface Credentials {
  hubUrl: string;
  token: string;
  email: string;
  expiresAt: string;
}

export interface RepoContext {
  hubUrl?: string;
  project?: string;
  env?: string;
}

export function configDir(): string {
  return process.env.STK_CONFIG_DIR ?? join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'santokit');
}

const credentialsPath = () => join(configDir(), 'credentials.json');

export function readCredentials(): Credentials | undefined {
  try {
    return JSON.parse(readFileSync(credentialsPath(), 'utf8')) as Credentials;
  } catch {
    return undefined;
  }
}

/** Stored with mode 0600 in a 0700 directory. */
export function writeCredentials(c: Credentials): void {
  const p = credentialsPath();
  mkdirSync(dirname(p), { recursive: true, mode: 0o700 });
  writeFileSync(p, JSON.stringify(c, null, 2) + '\n', { mode: 0o600 });
  chmodSync(p, 0o600);
}

export function clearCredentials(): void {
  rmSync(credentialsPath(), { force: true });
}

/** `.stk/context.json`, looked up from the current directory upwards. */
export function findContextFile(start = process.cwd()): string | undefined {
  let dir = resolve(start);
  for (;;) {
    const p = join(dir, '.stk', 'context.json');
    if (existsSync(p)) return p;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

export function readContext(): RepoContext {
  const p = findContextFile();
  if (!p) return {};
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as RepoContext;
  } catch {
    return {};
  }
}

export function writeContext(ctx: RepoContext): string {
  const p = join(process.cwd(), '.stk', 'context.json');
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, JSON.stringify(ctx, null, 2) + '\n');
  return p;
}

export function clearContext(): string | undefined {
  const p = findContextFile();
  if (p) rmSync(p, { force: true });
  return p;
}

/** Hub URL: --hub flag > STK_HUB_URL > stored login > context file > default. */
export function resolveHubUrl(flag?: string): string {
  const url = flag ?? process.env.STK_HUB_URL ?? readCredentials()?.hubUrl ?? readContext().hubUrl ?? DEFAULT_HUB_URL;
  return url.split(',')[0]!.trim().replace(/\/+$/, '');
}

/** Session token: STK_AUTH_TOKEN > stored login (only when it was made for the same Hub). */
export function resolveToken(hubUrl: string): string | undefined {
  if (process.env.STK_AUTH_TOKEN) return process.env.STK_AUTH_TOKEN;
  const c = readCredentials();
  if (c && c.hubUrl.replace(/\/+$/, '') === hubUrl) return c.token;
  return undefined;
}

/** --project/--env flag > STK_PROJECT/STK_ENV > .stk/context.json; missing → usage error. */
export function resolveProject(flag?: string): string {
  const p = flag ?? process.env.STK_PROJECT ?? readContext().project;
  if (!p) throw new UsageError("no project: pass --project, set STK_PROJECT, or run 'stk context set --project <p>'");
  return p;
}

export function resolveEnv(flag?: string): string {
  const e = flag ?? process.env.STK_ENV ?? readContext().env;
  if (!e) throw new UsageError("no env: pass --env, set STK_ENV, or run 'stk context set --env <e>'");
  return e;
}
