import type { Actor } from './actor.js';
import type { ClientConfig } from 'pg';
import { ulid } from '../../common/ulid.js';
import { checkDbHost, parseDbUrl, pgConnectionConfig, type ParsedDbUrl } from '../../common/db-url.js';
import type { HostPolicy } from '../../common/net-policy.js';
import { AppError, badRequest, conflict, notFound } from '../../protocol/errors.js';
import { cleanText } from '../../protocol/text.js';
import { nameError } from '../../protocol/names.js';
import type { HubContext } from '../context.js';
import { nowIso } from '../store/store.js';
import { isUniqueViolation } from './auth.js';
import { audit } from './audit.js';
import { notifyChanged, recordChange } from './events.js';
import type { ConnectionSet, ConnectionTest, ConnectionView } from '../../protocol/api/hub.js';
import { findEnv, requireProjectRole } from './rbac.js';
import { waitForBridges } from './sync/index.js';

export { connectionUrls } from './connection-urls.js';

/** SPEC limits.md: connections per project (all envs together). */
export const MAX_CONNECTIONS_PER_PROJECT = 10;
export const CONNECTION_ENGINES = ['postgres'] as const;
/** How long `connections test` waits for the server to accept the connection. */
export const CONNECTION_TEST_TIMEOUT_MS = 5000;
export { ALLOWED_URL_PARAMS, MAX_DB_URL_LENGTH, parseDbUrl, SSL_MODES, type ParsedDbUrl } from '../../common/db-url.js';

/** `postgres://user:****@host:port/db[?sslmode=…]`: what lists and responses may show. */
export function maskDbUrl(raw: string): string {
  const u = new URL(raw);
  const user = u.username ? `${u.username}${u.password ? ':****' : ''}@` : '';
  const port = u.port || '5432';
  const sslmode = u.searchParams.get('sslmode');
  return `${u.protocol}//${user}${u.hostname}:${port}${u.pathname || '/'}${sslmode ? `?sslmode=${encodeURIComponent(sslmode)}` : ''}`;
}

const hostPort = (t: ParsedDbUrl) => (t.host.includes(':') ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`);

/**
 * Turns a driver failure into a reason an operator can act on, without the URL or password:
 * network errors are named by code, PostgreSQL errors keep the server's message (which never holds
 * the password), anything else is scrubbed of every form of the secret.
 */
export function describeConnectError(err: unknown, target: ParsedDbUrl, rawUrl?: string): string {
  const e = (err ?? {}) as { code?: unknown; message?: unknown; errors?: unknown };
  const code = typeof e.code === 'string' ? e.code : undefined;
  const at = hostPort(target);
  let reason: string;
  switch (code) {
    case 'ECONNREFUSED':
      reason = `connection refused at ${at}`;
      break;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      reason = `host not found: ${target.host}`;
      break;
    case 'ETIMEDOUT':
      reason = `connection timed out at ${at}`;
      break;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      reason = `host unreachable: ${at}`;
      break;
    case 'ECONNRESET':
    case 'EPIPE':
      reason = `connection reset by ${at}`;
      break;
    default: {
      const msg = typeof e.message === 'string' ? e.message : '';
      const sqlstate = code !== undefined && /^[0-9A-Z]{5}$/.test(code);
      // a system error (it has a syscall) may name local files or sockets: only its code is shown
      const system = typeof (e as { syscall?: unknown }).syscall === 'string' || (code !== undefined && /^E[A-Z0-9_]+$/.test(code) && !code.startsWith('ERR_'));
      // the server's own words, cleaned before anything is appended (an unterminated escape cannot hide it)
      if (sqlstate && msg) reason = `${cleanText(msg, { max: 400 })} (SQLSTATE ${code})`;
      else if (/timeout/i.test(msg)) reason = `connection timed out after ${CONNECTION_TEST_TIMEOUT_MS / 1000}s at ${at}`;
      else if (/terminated unexpectedly|Connection terminated/i.test(msg)) reason = `the server at ${at} closed the connection`;
      else if (Array.isArray(e.errors) && e.errors.length) return describeConnectError(e.errors[0], target, rawUrl);
      else if (system) reason = `could not connect to ${at} (${code ?? 'system error'})`;
      else if (msg)
        reason = msg; // TLS and protocol failures: the driver's own words
      else reason = `could not connect to ${at}`;
    }
  }
  return cleanText(scrubSecrets(reason, target, rawUrl), { max: 500 });
}

/** Removes every representation of the password and the URL from a message. */
export function scrubSecrets(message: string, target: Pick<ParsedDbUrl, 'password'>, rawUrl?: string): string {
  let out = message.slice(0, 500);
  const secrets = new Set<string>();
  if (rawUrl) secrets.add(rawUrl);
  if (target.password) {
    secrets.add(target.password);
    secrets.add(encodeURIComponent(target.password));
  }
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) if (s.length > 0) out = out.split(s).join('****');
  // a URL of any kind in a driver message is dropped entirely
  out = out.replace(/[a-z][a-z0-9+.-]*:\/\/\S+/gi, '<url>');
  return out;
}

function view(r: { name: string; engine: 'postgres'; display_url: string; created_at: string; updated_at: string }): ConnectionView {
  return { name: r.name, engine: r.engine, url: r.display_url, createdAt: r.created_at, updatedAt: r.updated_at };
}

/** Creates or replaces a connection (project admin). The URL is stored encrypted and never returned. */
export async function setConnection(
  ctx: HubContext,
  actor: Actor,
  projectName: string,
  envName: string,
  nameIn: unknown,
  body: { engine?: unknown; dbUrl?: unknown },
): Promise<ConnectionSet> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'admin');
  const env = await findEnv(ctx, project, envName);
  const err = nameError('connection', nameIn);
  if (err) throw badRequest(err);
  const name = nameIn as string;
  if (body.engine !== 'postgres') throw badRequest(`engine must be one of: ${CONNECTION_ENGINES.join(', ')}`);
  checkDbHost(parseDbUrl(body.dbUrl), ctx.config.connectionAllow);
  const dbUrl = body.dbUrl as string;
  const display = maskDbUrl(dbUrl);
  const enc = ctx.crypto.encrypt(dbUrl);
  const now = nowIso();
  let result!: ConnectionView;
  let seq = 0;
  try {
    await ctx.db.transaction().execute(async (trx) => {
      const existing = await trx
        .selectFrom('connections')
        .select(['id', 'created_at'])
        .where('env_id', '=', env.id)
        .where('name', '=', name)
        .executeTakeFirst();
      if (existing) {
        await trx
          .updateTable('connections')
          .set({ engine: 'postgres', db_url_enc: enc, display_url: display, updated_at: now })
          .where('id', '=', existing.id)
          .execute();
        result = view({ name, engine: 'postgres', display_url: display, created_at: existing.created_at, updated_at: now });
      } else {
        const { n } = await trx
          .selectFrom('connections')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('project_id', '=', project.id)
          .executeTakeFirstOrThrow();
        if (Number(n) >= MAX_CONNECTIONS_PER_PROJECT) {
          throw conflict(`connection limit reached: a project holds at most ${MAX_CONNECTIONS_PER_PROJECT} connections across its envs`);
        }
        await trx
          .insertInto('connections')
          .values({
            id: ulid(),
            project_id: project.id,
            env_id: env.id,
            name,
            engine: 'postgres',
            db_url_enc: enc,
            display_url: display,
            created_at: now,
            updated_at: now,
          })
          .execute();
        result = view({ name, engine: 'postgres', display_url: display, created_at: now, updated_at: now });
      }
      await audit(
        ctx,
        actor,
        { action: 'connection.set', project: project.name, env: env.name, detail: { name, engine: 'postgres', created: !existing } },
        trx,
      );
      seq = await recordChange(trx, { project: project.name, env: env.name, kind: 'connection', payload: { name } });
    });
  } catch (e) {
    if (isUniqueViolation(e)) throw conflict(`connection ${name} was changed concurrently; retry`);
    throw e;
  }
  notifyChanged(ctx, seq);
  // Bridges switch to the new URL before this returns (bounded; laggards are named in `ack`)
  const ack = await waitForBridges(ctx, seq, undefined, 'connection');
  return { ...result, ack };
}

/** An env's connections, masked (project admin). */
export async function listConnections(ctx: HubContext, actor: Actor, projectName: string, envName: string): Promise<ConnectionView[]> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'admin');
  const env = await findEnv(ctx, project, envName);
  const rows = await ctx.db
    .selectFrom('connections')
    .select(['name', 'engine', 'display_url', 'created_at', 'updated_at'])
    .where('env_id', '=', env.id)
    .orderBy('name')
    .execute();
  return rows.map(view);
}

/**
 * Connects with the stored URL and runs `SELECT 1` (project admin). A failure is a 400 whose message
 * is the driver's reason with secrets removed.
 */
export async function testConnection(ctx: HubContext, actor: Actor, projectName: string, envName: string, name: string): Promise<ConnectionTest> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'admin');
  const env = await findEnv(ctx, project, envName);
  const row = await ctx.db.selectFrom('connections').select(['db_url_enc']).where('env_id', '=', env.id).where('name', '=', name).executeTakeFirst();
  if (!row) throw notFound(`connection ${JSON.stringify(String(name).slice(0, 80))} not found in ${project.name}/${env.name}`);
  const url = ctx.crypto.decrypt(row.db_url_enc);
  const target = parseDbUrl(url);
  const outcome = await probe(url, target, ctx.config.connectionAllow);
  await audit(ctx, actor, {
    action: 'connection.test',
    project: project.name,
    env: env.name,
    detail: outcome.ok ? { name, ok: true, latencyMs: outcome.latencyMs } : { name, ok: false },
  });
  if (!outcome.ok) throw badRequest(`connection ${name} failed: ${outcome.reason}`);
  return { ok: true, latencyMs: outcome.latencyMs };
}

async function probe(url: string, target: ParsedDbUrl, allow: HostPolicy): Promise<ConnectionTest | { ok: false; reason: string }> {
  const pg = (await import('pg')).default;
  const started = performance.now();
  let config: ClientConfig;
  try {
    // the host is checked as written here and what it resolves to when the client connects
    config = pgConnectionConfig(target, allow);
  } catch (e) {
    return { ok: false, reason: e instanceof AppError ? e.message : describeConnectError(e, target, url) };
  }
  const client = new pg.Client({
    application_name: 'santokit-hub-connection-test',
    ...config,
    connectionTimeoutMillis: CONNECTION_TEST_TIMEOUT_MS,
    query_timeout: CONNECTION_TEST_TIMEOUT_MS,
  });
  client.on('error', () => {}); // a late socket error must not crash the Hub
  try {
    await client.connect();
    await client.query('SELECT 1');
    return { ok: true, latencyMs: Math.max(0, Math.round(performance.now() - started)) };
  } catch (e) {
    // refused by the address check when connecting (the name resolved to a refused address)
    return { ok: false, reason: e instanceof AppError ? e.message : describeConnectError(e, target, url) };
  } finally {
    await client.end().catch(() => {});
  }
}
