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
 *  - `pgConnectionConfig` builds the `pg` config from the checked parts, with a socket whose host
 *    name lookup checks every address the name resolves to when connecting, so the connection goes to
 *    a checked address (TLS still verifies and sends SNI for the name). `pg` never sees the URL, so
 *    nothing in it (nor `PGHOST`, `PGPASSWORD`, `~/.pgpass`) can change where it connects or which
 *    password it sends.
 */
import { lookup } from 'node:dns/promises';
import { Socket } from 'node:net';
import type { ClientConfig } from 'pg';
import { badRequest } from '../protocol/errors.js';
import {
  HostPolicy,
  isHostName,
  parseIPv4,
  parseIPv6,
  refusedNameReason,
  refusedReason,
  resolveChecked,
  type Lookup,
  type ResolvedAddress,
} from './net-policy.js';

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

// C0, DEL and C1 control characters
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;

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
  if (CONTROL.test(user) || CONTROL.test(database) || password.includes('\u0000'))
    throw badRequest('dbUrl user, password and database must not contain control characters');
  if (!user) throw badRequest(`dbUrl has no user: ${URL_RULE}`);
  if (database.includes('/')) throw badRequest(`dbUrl path must be a single database name: ${URL_RULE}`);
  return { host, hostKind, port, user, database: database || user, password, sslmode, applicationName };
}

function parseHost(hostname: string): { host: string; hostKind: 'name' | 'ip' } {
  const notAHost = () =>
    badRequest(
      `dbUrl host must be a host name (letters, digits, '-', '.') or an IP address; unix sockets, paths and percent-encoded hosts are not accepted: ${URL_RULE}`,
    );
  if (hostname.startsWith('[')) {
    const v6 = hostname.slice(1, -1);
    if (!hostname.endsWith(']') || !parseIPv6(v6)) throw notAHost();
    return { host: v6.toLowerCase(), hostKind: 'ip' };
  }
  if (parseIPv4(hostname)) return { host: hostname, hostKind: 'ip' };
  if (/^[0-9a-fx.]+$/i.test(hostname) && !isHostName(hostname)) {
    throw badRequest(
      'dbUrl host looks like an IPv4 address in a non-standard form (integer, octal, hex or shortened): write it as four decimal numbers a.b.c.d',
    );
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

export type { Lookup };
const systemLookup: Lookup = (host) => lookup(host, { all: true, verbatim: true });

/** The addresses of `host` that a connection may use: all of them, or a 400 when any is refused. */
async function checkedAddresses(host: string, port: number, policy: HostPolicy, resolve: Lookup): Promise<ResolvedAddress[]> {
  const { found, refused } = await resolveChecked(host, port, policy, resolve);
  if (refused) throw badRequest(`dbUrl host ${hostPort({ host, port })} is not allowed: it resolves to ${refused}; ${ALLOW_HINT}`);
  return found;
}

/**
 * The socket `pg` connects with: its host name lookup is the checked one above, so the connection goes
 * to an address that passed the policy, resolved at the moment of connecting (a name re-pointed at a
 * refused address after it was saved — DNS rebinding — is refused then). IP literals skip lookups,
 * so they are checked here too. It connects by host and port only: never to a path.
 */
class CheckedSocket extends Socket {
  constructor(
    private readonly policy: HostPolicy,
    private readonly resolve: Lookup,
  ) {
    super();
  }

  override connect(...args: unknown[]): this {
    const [port, host] = args as [number, string];
    if (typeof port !== 'number' || typeof host !== 'string') {
      process.nextTick(() => this.destroy(new Error('connection target must be a host and a port')));
      return this;
    }
    const literal = parseIPv4(host) ?? parseIPv6(host);
    if (literal) {
      const why = refusedReason(literal);
      if (why && !this.policy.allowsAddress(literal, port)) {
        process.nextTick(() => this.destroy(badRequest(`dbUrl host ${hostPort({ host, port })} is not allowed: it is ${why}; ${ALLOW_HINT}`)));
        return this;
      }
      return super.connect({ port, host });
    }
    const lookupChecked = (name: string, opts: { all?: boolean }, cb: (err: Error | null, a?: unknown, f?: number) => void) => {
      checkedAddresses(name, port, this.policy, this.resolve).then(
        (list) => (opts.all ? cb(null, list) : cb(null, list[0]!.address, list[0]!.family)),
        (err: Error) => cb(err),
      );
    };
    return super.connect({ port, host, lookup: lookupChecked as never });
  }
}

/** `pg` TLS settings for an sslmode, with libpq's meanings (pg cannot fall back to plaintext). */
function sslConfig(t: ParsedDbUrl): ClientConfig['ssl'] {
  switch (t.sslmode) {
    case undefined:
      return undefined; // pg's default (PGSSLMODE of the process, else no TLS)
    case 'disable':
      return false;
    case 'allow':
    case 'prefer':
    case 'require':
    case 'no-verify':
      return { rejectUnauthorized: false };
    case 'verify-ca':
      return { checkServerIdentity: () => undefined };
    case 'verify-full':
      return {};
  }
}

/**
 * The `pg` connection settings for a target: the host as written (checked now), the socket that checks
 * what it resolves to when connecting; user, database and password exactly the URL's (a password
 * function keeps pg from reading PGPASSWORD or ~/.pgpass). Add timeouts and the like on top.
 * Throws a 400 AppError when the host is refused as written.
 */
export function pgConnectionConfig(t: ParsedDbUrl, policy: HostPolicy, resolve: Lookup = systemLookup): ClientConfig {
  checkDbHost(t, policy);
  const password = t.password;
  const config: ClientConfig = {
    host: t.host,
    port: t.port,
    user: t.user,
    database: t.database,
    password: () => password,
    stream: () => new CheckedSocket(policy, resolve),
  };
  const ssl = sslConfig(t);
  if (ssl !== undefined) config.ssl = ssl;
  if (t.applicationName) config.application_name = t.applicationName;
  return config;
}

export { HostPolicy };
