import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { badRequest } from '../../protocol/errors.js';
import { audit as api, type AuditItem } from '../../protocol/api/hub.js';
import { parseDuration } from '../../common/duration.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';

export const AUDIT_DEFAULT_LIMIT = 100;
export const AUDIT_MAX_LIMIT = 1000;

/** `since`: an ISO-8601 time or a duration back from now (`90s`, `15m`, `1h`, `7d`). */
export function parseSince(raw: string, now = Date.now()): string {
  if (/^\d{4}-\d{2}-\d{2}/.test(raw)) {
    const t = Date.parse(raw);
    if (Number.isNaN(t)) throw badRequest('since must be an ISO-8601 time or a duration like 1h');
    return new Date(t).toISOString();
  }
  let seconds: number;
  try {
    seconds = parseDuration(raw);
  } catch {
    throw badRequest('since must be an ISO-8601 time or a duration like 1h');
  }
  const t = now - seconds * 1000;
  // Date covers ±8.64e15 ms; anything older than the epoch matches everything anyway
  return new Date(Number.isFinite(t) && t > 0 ? t : 0).toISOString();
}

function parseLimit(raw: string | undefined): number {
  if (raw === undefined || raw === '') return AUDIT_DEFAULT_LIMIT;
  if (!/^\d+$/.test(raw)) throw badRequest(`limit must be an integer from 1 to ${AUDIT_MAX_LIMIT}`);
  const n = Number(raw);
  if (n < 1 || n > AUDIT_MAX_LIMIT) throw badRequest(`limit must be an integer from 1 to ${AUDIT_MAX_LIMIT}`);
  return n;
}

/**
 * The audit log, newest first. Org owners/admins read everything; project admins read their
 * project's entries (and must name the project).
 */
export default async function auditRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  route(app, api.list, async ({ query: q }) => {
    const limit = parseLimit(q.limit);
    const since = q.since ? parseSince(q.since) : undefined;
    // the route's auth (org admin, or project admin of ?project=) decided who reads what
    let sel = ctx.db.selectFrom('audit_log').selectAll();
    if (q.project) sel = sel.where('project', '=', q.project);
    if (q.env) sel = sel.where('env', '=', q.env);
    if (q.action) {
      // `apikey.*` (or `apikey.`) matches a whole domain
      const prefix = q.action.endsWith('*') ? q.action.slice(0, -1) : q.action.endsWith('.') ? q.action : null;
      if (prefix !== null) sel = sel.where(sql<boolean>`substr(action, 1, ${prefix.length}) = ${prefix}`);
      else sel = sel.where('action', '=', q.action);
    }
    if (since) sel = sel.where('ts', '>=', since);
    const rows = await sel.orderBy('ts', 'desc').orderBy('id', 'desc').limit(limit).execute();
    const items: AuditItem[] = rows.map((r) => ({
      id: r.id,
      ts: r.ts,
      actor: r.actor_email,
      actorType: r.actor_type,
      action: r.action,
      project: r.project,
      env: r.env,
      requestId: r.request_id,
      ip: r.ip,
      detail: safeJson(r.detail_json),
    }));
    return { items };
  });
}

function safeJson(s: string): Record<string, unknown> {
  try {
    const v = JSON.parse(s) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : { value: v };
  } catch {
    return {};
  }
}
