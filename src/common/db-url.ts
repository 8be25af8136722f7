/**
 * A tenant's PostgreSQL URL, from text to the socket: the one place that decides what the Hub
 * (connection test, apply) and the Bridge (its pools) connect to.
 *
 *  - `parseDbUrl` accepts only `postgres[ql]://user[:password]@host[:port]/db[?sslmode&application_name&connect_timeout]`
 *    where host is a DNS name or an IP literal. Percent-encoded hosts (`%2Ftmp` is a unix socket to
 *    `pg`), query parameters that move the host or read files (`host`, `port`, `sslcert`, …), IPv4
 *    in integer/octal/hex/short spellings and control characters in any part are refused.
 *  - `checkDbHost` applies the address policy (net-policy.ts) to what is written: loopback,
 *    link-local, metadata addresses and names are refused unless the operator allowed them.
 *  - `pgConnectionConfig` resolves a host name, checks every address it resolves to, and returns a
 *    `pg` config that connects to the checked address (TLS still verifies and sends SNI for the name).
 *    `pg` never sees the URL, so nothing in it (nor `PGHOST`, `PGPASSWORD`, `~/.pgpass`) can change
 *    where it connects or which password it sends.
 */
import { lookup } from 'node:dns/promises';
import type { ClientConfig } from 'pg';
import { badRequest } from '../protocol/errors.js';
import { formatIp, HostPolicy, isHostName, parseIPv4, parseIPv6, refusedNameReason, refusedReason, type IpBytes } from './net-policy.js';

export const MAX_DB_URL_LENGTH = 2048;

/**
 * Query parameters a stored URL may carry. Anything else is refused: `host`/`port`/`password` would
 * bypass what the display URL shows, and `sslcert`/`sslkey`/`sslrootcert` make the driver read files
 * from the Hub's (and Bridge's) disk.
 */
export const ALLOWED_URL_PARAMS = ['sslmode', 'application_name', 'connect_timeout'] as const;
export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'no-verify', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

export const URL_RULE = 'dbUrl must be a postgres:// or postgresql:// URL with a user and a host, e.g. postgres://app:PASSWORD@db.example.com:5432/app';
const ALLOW_HINT = "the Hub's operator can allow it with STK_CONNECTION_ALLOW_HOSTS";

export interface ParsedDbUrl {
  /** lower-case host name (trailing dot removed) or IP address without brackets */
  host: string;
  hostKind: 'name' | 'ip';
  port: number;
  user: string;
  database: string;
  /** decoded password ('' when none) */
  password: string;
  sslmode?: SslMode;
  applicationName?: string;
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

/** Validates a PostgreSQL URL. Error messages never quote the input: it usually holds a password. */
export function parseDbUrl(raw: unknown): ParsedDbUrl {
  if (typeof raw !== 'string' || raw.length === 0) throw badRequest(`dbUrl is required: ${URL_RULE}`);
  if (raw.length > MAX_DB_URL_LENGTH) throw badRequest(`dbUrl is longer than ${MAX_DB_URL_LENGTH} characters`);
  if (/\s/.test(raw) || CONTROL.test(raw)) throw badRequest(`dbUrl must not contain whitespace or control characters: ${URL_RULE}`);
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw badRequest(`dbUrl is not a valid URL: ${URL_RULE}`);
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') throw badRequest(`unsupported dbUrl scheme: ${URL_RULE}`);
  if (!u.hostname) throw badRequest(`dbUrl has no host: ${URL_RULE}`);
  const { host, hostKind } = parseHost(u.hostname);
  let sslmode: SslMode | undefined;
  let applicationName: string | undefined;
  const seen = new Set<string>();
  for (const [k, v] of u.searchParams) {
    if (!(ALLOWED_URL_PARAMS as readonly string[]).includes(k)) {
      throw badRequest(`unsupported dbUrl query parameter ${JSON.stringify(k.slice(0, 40))}: allowed are ${ALLOWED_URL_PARAMS.join(', ')}`);
    }
    if (seen.has(k)) throw badRequest(`dbUrl query parameter ${k} is given twice`);
    seen.add(k);
    if (CONTROL.test(v)) throw badRequest(`dbUrl query parameter ${k} must not contain control characters`);
    if (k === 'sslmode') {
      if (!(SSL_MODES as readonly string[]).includes(v)) throw badRequest(`dbUrl sslmode must be one of ${SSL_MODES.join(', ')}`);
      sslmode = v as SslMode;
    }
    if (k === 'connect_timeout' && !/^\d{1,4}$/.test(v)) throw badRequest('dbUrl connect_timeout must be a number of seconds');
    if (k === 'application_name') {
      if (v.length > 63) throw badRequest('dbUrl application_name must be at most 63 characters');
      applicationName = v;
    }
  }
  const port = u.port ? Number(u.port) : 5432;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw badRequest(`dbUrl port must be between 1 and 65535: ${URL_RULE}`);
  let user: string;
  let password: string;
  let database: string;
  try {
    user = decodeURIComponent(u.username);
    password = decodeURIComponent(u.password);
    database = decodeURIComponent(u.pathname.replace(/^\//, ''));
  } catch {
    throw badRequest(`dbUrl has an invalid percent-encoding: ${URL_RULE}`);
  }
  // NUL separates the fields of PostgreSQL's startup packet: a %00 in the user or database would add
  // parameters of its own (options, replication…)
  if (CONTROL.test(user) || CONTROL.test(database) || password.includes('\u0000')) throw badRequest('dbUrl user, password and database must not contain control characters');
  if (!user) throw badRequest(`dbUrl has no user: ${URL_RULE}`);
  if (database.includes('/')) throw badRequest(`dbUrl path must be a single database name: ${URL_RULE}`);
  return { host, hostKind, port, user, database: database || user, password, sslmode, applicationName };
}

function parseHost(hostname: string): { host: string; hostKind: 'name' | 'ip' } {
  const notAHost = () =>
    badRequest(`dbUrl host must be a host name (letters, digits, '-', '.') or an IP address; unix sockets, paths and percent-encoded hosts are not accepted: ${URL_RULE}`);
  if (hostname.startsWith('[')) {
    const v6 = hostname.slice(1, -1);
    if (!hostname.endsWith(']') || !parseIPv6(v6)) throw notAHost();
    return { host: v6.toLowerCase(), hostKind: 'ip' };
  }
  if (parseIPv4(hostname)) return { host: hostname, hostKind: 'ip' };
  if (/^[0-9a-fx.]+$/i.test(hostname) && !isHostName(hostname)) {
    throw badRequest('dbUrl host looks like an IPv4 address in a non-standard form (integer, octal, hex or shortened): write it as four decimal numbers a.b.c.d');
  }
  if (!isHostName(hostname)) throw notAHost();
  return { host: hostname.toLowerCase().replace(/\.$/, ''), hostKind: 'name' };
}

const hostPort = (t: Pick<ParsedDbUrl, 'host' | 'port'>) => (t.host.includes(':') ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`);

/**
 * The address policy applied to the host as written (no DNS): throws 400 for a refused IP literal or
 * name unless `policy` allows it. Run when a connection is saved and before every connect.
 */
export function checkDbHost(t: ParsedDbUrl, policy: HostPolicy): void {
  if (t.hostKind === 'ip') {
    const bytes = (parseIPv4(t.host) ?? parseIPv6(t.host))!;
    const why = refusedReason(bytes);
    if (why && !policy.allowsAddress(bytes, t.port)) throw badRequest(`dbUrl host ${hostPort(t)} is not allowed: it is ${why}; ${ALLOW_HINT}`);
    return;
  }
  const why = refusedNameReason(t.host);
  if (why && !policy.allowsName(t.host, t.port)) throw badRequest(`dbUrl host ${hostPort(t)} is not allowed: it is ${why}; ${ALLOW_HINT}`);
}

export type Lookup = (host: string) => Promise<Array<{ address: string; family: number }>>;
const systemLookup: Lookup = (host) => lookup(host, { all: true, verbatim: true });

/** An error carrying a network `code`, as the driver's own connect errors do. */
function netError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/**
 * The address to connect to: the literal itself, or the first address a host name resolves to, after
 * every address it resolves to passed the policy (a name resolving to anything refused is refused as
 * a whole: whichever of its addresses a driver would pick must be fine). Throws a 400 AppError when
 * refused; lookup failures throw an Error with `code` ENOTFOUND / EAI_AGAIN like the driver's.
 */
export async function resolveDbAddress(t: ParsedDbUrl, policy: HostPolicy, timeoutMs: number, resolve: Lookup = systemLookup): Promise<string> {
  checkDbHost(t, policy);
  if (t.hostKind === 'ip') return t.host;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(netError('EAI_AGAIN', `host name lookup timed out after ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
  });
  let found: Array<{ address: string; family: number }>;
  try {
    found = await Promise.race([resolve(t.host), timeout]);
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    throw netError(code === 'EAI_AGAIN' ? 'EAI_AGAIN' : 'ENOTFOUND', `host not found: ${t.host}`);
  } finally {
    clearTimeout(timer);
  }
  if (found.length === 0) throw netError('ENOTFOUND', `host not found: ${t.host}`);
  const byName = policy.allowsName(t.host, t.port);
  let first: string | undefined;
  for (const { address } of found) {
    const bytes: IpBytes | null = parseIPv4(address) ?? parseIPv6(address);
    if (!bytes) throw badRequest(`dbUrl host ${hostPort(t)} resolves to something that is not an IP address`);
    const why = refusedReason(bytes);
    if (why && !byName && !policy.allowsAddress(bytes, t.port)) throw badRequest(`dbUrl host ${hostPort(t)} is not allowed: it resolves to ${why}; ${ALLOW_HINT}`);
    first ??= formatIp(bytes);
  }
  return first!;
}

/** `pg` TLS settings for an sslmode, with libpq's meanings (pg cannot fall back to plaintext). */
function sslConfig(t: ParsedDbUrl): ClientConfig['ssl'] {
  const servername = t.hostKind === 'name' ? { servername: t.host } : {};
  switch (t.sslmode) {
    case undefined:
      return undefined; // pg's default (PGSSLMODE of the process, else no TLS)
    case 'disable':
      return false;
    case 'allow':
    case 'prefer':
    case 'require':
    case 'no-verify':
      return { ...servername, rejectUnauthorized: false };
    case 'verify-ca':
      return { ...servername, checkServerIdentity: () => undefined };
    case 'verify-full':
      return { ...servername };
  }
}

/**
 * The `pg` connection settings for a checked target: host is the resolved, checked address; user,
 * database and password are exactly the URL's (a password function keeps pg from reading
 * PGPASSWORD or ~/.pgpass). Add timeouts and the like on top.
 */
export async function pgConnectionConfig(t: ParsedDbUrl, policy: HostPolicy, lookupTimeoutMs: number, resolve?: Lookup): Promise<ClientConfig> {
  const address = await resolveDbAddress(t, policy, lookupTimeoutMs, resolve);
  const password = t.password;
  const config: ClientConfig = { host: address, port: t.port, user: t.user, database: t.database, password: () => password };
  const ssl = sslConfig(t);
  if (ssl !== undefined) config.ssl = ssl;
  if (t.applicationName) config.application_name = t.applicationName;
  return config;
}

export { HostPolicy };
