/**
 * The secrets registry: every plaintext secret a test hands to (or receives from) Santokit is
 * remembered here, and after the whole run `scanForSecrets()` (called from the globalSetup teardown)
 * looks for each of them in every log file and every Hub store the run left behind.
 *
 * Records go to `test-output/secrets.jsonl`, one JSON object per line, tagged with the run id so
 * several vitest runs on one machine do not see each other's secrets. Hashes are fine to store;
 * only plaintext counts as a hit.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');
export const OUTPUT_DIR = join(ROOT, 'test-output');
export const SECRETS_FILE = join(OUTPUT_DIR, 'secrets.jsonl');
export const SCAN_LOG_DIR = join(OUTPUT_DIR, 'logs');

export type SecretKind =
  'hub-secret-key' | 'service-token' | 'password' | 'session-token' | 'api-key' | 'db-url' | 'db-password' | 'invite-code' | 'webhook-secret' | 'leak-token';

interface SecretRecord {
  run: string;
  kind: SecretKind;
  value: string;
}

interface StoreRecord {
  run: string;
  store: string;
}

/** The vitest run this process belongs to: set by the globalSetup, inherited by every worker. */
export function runId(): string {
  return process.env.STK_TEST_RUN_ID ?? `pid-${process.ppid}`;
}

/** Too short to search for without false positives (e.g. a 2-character password). */
const MIN_LEN = 8;
const seen = new Set<string>();

function hasPassword(url: string): boolean {
  try {
    return new URL(url).password !== '';
  } catch {
    return false;
  }
}

function append(rec: SecretRecord | StoreRecord) {
  mkdirSync(OUTPUT_DIR, { recursive: true });
  appendFileSync(SECRETS_FILE, JSON.stringify(rec) + '\n');
}

/** Remembers a plaintext secret so the end-of-run scan looks for it. Returns the value for chaining. */
export function rememberSecret<T extends string | undefined | null>(kind: SecretKind, value: T): T {
  if (typeof value !== 'string' || value.length < MIN_LEN) return value;
  // a DB URL without a password (or a SQLite path) is an address, not a secret
  if (kind === 'db-url' && !hasPassword(value)) return value;
  const k = `${kind}\0${value}`;
  if (seen.has(k)) return value;
  seen.add(k);
  append({ run: runId(), kind, value });
  // a DB URL's password is a secret on its own (a log could hold it without the rest of the URL)
  if (kind === 'db-url') {
    try {
      const pw = decodeURIComponent(new URL(value).password);
      if (pw) rememberSecret('db-password', pw);
    } catch {
      /* not a URL: the whole value is still remembered */
    }
  }
  return value;
}

/** Remembers a Hub store (`sqlite://…` file or `postgres://…` database) for the end-of-run scan. */
export function rememberStore(store: string): void {
  const k = `store\0${store}`;
  if (seen.has(k)) return;
  seen.add(k);
  append({ run: runId(), store });
}

function readRecords(run: string): { secrets: SecretRecord[]; stores: string[] } {
  if (!existsSync(SECRETS_FILE)) return { secrets: [], stores: [] };
  const secrets = new Map<string, SecretRecord>();
  const stores = new Set<string>();
  for (const line of readFileSync(SECRETS_FILE, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    let r: Partial<SecretRecord & StoreRecord>;
    try {
      r = JSON.parse(line);
    } catch {
      continue;
    }
    if (r.run !== run) continue;
    if (typeof r.store === 'string') stores.add(r.store);
    else if (typeof r.value === 'string' && typeof r.kind === 'string') secrets.set(r.value, r as SecretRecord);
  }
  return { secrets: [...secrets.values()], stores: [...stores] };
}

export interface ScanTarget {
  name: string;
  data: Buffer;
}

/** SQLite store files (plus -wal/-shm) as raw bytes: strings sit in the pages as UTF-8. */
function sqliteTargets(url: string): ScanTarget[] {
  const file = url.replace(/^sqlite:\/\//, '');
  const out: ScanTarget[] = [];
  for (const f of [file, `${file}-wal`, `${file}-shm`, `${file}-journal`]) {
    if (existsSync(f)) out.push({ name: f, data: readFileSync(f) });
  }
  return out;
}

/** A PostgreSQL Hub store that still exists: every row of every table as JSON text (a logical dump). */
async function postgresTargets(url: string): Promise<ScanTarget[]> {
  const { default: pg } = await import('pg');
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await c.connect();
  } catch {
    return []; // dropped by its test: nothing left to leak
  }
  try {
    const tables = await c.query<{ t: string }>(
      "select quote_ident(schemaname) || '.' || quote_ident(tablename) as t from pg_tables where schemaname not in ('pg_catalog', 'information_schema')",
    );
    const parts: string[] = [];
    for (const { t } of tables.rows) {
      const rows = await c.query<{ j: string }>(`select row_to_json(x)::text as j from ${t} x`);
      for (const r of rows.rows) parts.push(r.j);
    }
    const u = new URL(url);
    u.password = '';
    return [{ name: `dump of ${u.host}${u.pathname}`, data: Buffer.from(parts.join('\n')) }];
  } finally {
    await c.end().catch(() => {});
  }
}

/** Log files of this run: everything in test-output/logs written since the run started. */
function logTargets(sinceMs: number): ScanTarget[] {
  if (!existsSync(SCAN_LOG_DIR)) return [];
  const out: ScanTarget[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && st.mtimeMs >= sinceMs) out.push({ name: p, data: readFileSync(p) });
    }
  };
  walk(SCAN_LOG_DIR);
  return out;
}

export interface ScanResult {
  secrets: number;
  files: number;
  hits: Array<{ kind: SecretKind; file: string; encoding: string }>;
}

/** Looks for every secret (as written, and URL-/JSON-escaped) in every target. */
export function scanTargets(secrets: Array<{ kind: SecretKind; value: string }>, targets: ScanTarget[]): ScanResult {
  const hits: ScanResult['hits'] = [];
  for (const s of secrets) {
    const forms = new Map<string, string>([['plain', s.value]]);
    const url = encodeURIComponent(s.value);
    if (url !== s.value) forms.set('url-encoded', url);
    const json = JSON.stringify(s.value).slice(1, -1);
    if (json !== s.value) forms.set('json-escaped', json);
    for (const t of targets) {
      for (const [encoding, form] of forms) {
        if (t.data.includes(form)) {
          hits.push({ kind: s.kind, file: t.name, encoding });
          break;
        }
      }
    }
  }
  return { secrets: secrets.length, files: targets.length, hits };
}

/** The end-of-run check: every remembered secret of `run` × every log and store of that run. */
export async function scanForSecrets(run: string, sinceMs: number): Promise<ScanResult> {
  const { secrets, stores } = readRecords(run);
  const targets = logTargets(sinceMs);
  for (const s of stores) {
    if (s.startsWith('sqlite://')) targets.push(...sqliteTargets(s));
    else if (/^postgres(ql)?:\/\//.test(s)) targets.push(...(await postgresTargets(s)));
  }
  return scanTargets(secrets, targets);
}
