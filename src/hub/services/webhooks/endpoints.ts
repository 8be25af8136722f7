/** `stk webhooks add|list|remove|test|deliveries`: a project's webhook endpoints (project admin). */
import { ulid } from '../../../common/ulid.js';
import { badField, badRequest, conflict, notFound } from '../../../protocol/errors.js';
import { WEBHOOK_EVENTS, WEBHOOK_TEST_EVENT, isWebhookEvent } from '../../../protocol/webhooks.js';
import type { CreatedWebhook, WebhookDelivery, WebhookView } from '../../../protocol/api/hub.js';
import type { HubContext } from '../../context.js';
import { nowIso } from '../../store/store.js';
import type { Actor } from '../actor.js';
import { audit } from '../audit.js';
import { requireProjectRole, type ProjectRef } from '../rbac.js';
import { enqueueEvent, whDb, type WebhookDeliveriesTable, type WebhookEndpointsTable } from './queue.js';
import { newWebhookSecret, parseWebhookUrl } from './sender.js';

/** Endpoints per project. */
export const MAX_WEBHOOKS_PER_PROJECT = 10;

function parseEvents(raw: unknown): string[] {
  const list = typeof raw === 'string' ? raw.split(',').map((s) => s.trim()) : raw;
  if (!Array.isArray(list) || list.length === 0 || list.some((e) => typeof e !== 'string'))
    throw badField('events', `events is required: a list of event types, from ${WEBHOOK_EVENTS.join(', ')}`);
  const events = [...new Set(list as string[])].filter(Boolean);
  const unknown = events.filter((e) => !isWebhookEvent(e));
  if (unknown.length)
    throw badField('events', `unknown event type ${JSON.stringify(unknown[0]!.slice(0, 60))}: the event types are ${WEBHOOK_EVENTS.join(', ')}`);
  if (events.length === 0) throw badField('events', `events is required: a list of event types, from ${WEBHOOK_EVENTS.join(', ')}`);
  return events;
}

/** The host of a URL, for the audit log (a URL may carry a token: never logged whole). */
const hostOf = (url: string) => new URL(url).host;

function view(row: WebhookEndpointsTable, pending: number): WebhookView {
  return {
    webhookId: row.id,
    url: row.url,
    events: JSON.parse(row.events_json) as string[],
    status: row.status,
    disabledReason: row.disabled_reason,
    pending,
    dropped: Number(row.dropped),
    createdAt: row.created_at,
  };
}

async function pendingCounts(ctx: HubContext, endpointIds: string[]): Promise<Map<string, number>> {
  if (endpointIds.length === 0) return new Map();
  const rows = await whDb(ctx.db)
    .selectFrom('webhook_deliveries')
    .select(['endpoint_id', (eb) => eb.fn.countAll<number | string>().as('n')])
    .where('endpoint_id', 'in', endpointIds)
    .where('status', '=', 'pending')
    .groupBy('endpoint_id')
    .execute();
  return new Map(rows.map((r) => [r.endpoint_id, Number(r.n)]));
}

async function findEndpoint(ctx: HubContext, project: ProjectRef, id: string): Promise<WebhookEndpointsTable> {
  const row = await whDb(ctx.db).selectFrom('webhook_endpoints').selectAll().where('project_id', '=', project.id).where('id', '=', id).executeTakeFirst();
  if (!row) throw notFound(`webhook ${JSON.stringify(String(id).slice(0, 80))} not found in project ${project.name}`);
  return row;
}

export async function addWebhook(ctx: HubContext, actor: Actor, projectName: string, body: { url?: unknown; events?: unknown }): Promise<CreatedWebhook> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'admin');
  let url: string;
  try {
    url = parseWebhookUrl(body.url, ctx.config.webhooks.allow);
  } catch (e) {
    throw badField('url', (e as Error).message);
  }
  const events = parseEvents(body.events);
  const secret = newWebhookSecret();
  const id = `wh_${ulid()}`;
  const now = nowIso();
  const row: WebhookEndpointsTable = {
    id,
    project_id: project.id,
    url,
    events_json: JSON.stringify(events),
    secret_enc: ctx.crypto.sealWebhookSecret(secret),
    status: 'active',
    disabled_reason: null,
    dropped: 0,
    created_by: actor.operator?.id ?? null,
    created_at: now,
  };
  await ctx.db.transaction().execute(async (trx) => {
    const n = await whDb(trx)
      .selectFrom('webhook_endpoints')
      .select((eb) => eb.fn.countAll<number | string>().as('n'))
      .where('project_id', '=', project.id)
      .executeTakeFirstOrThrow();
    if (Number(n.n) >= MAX_WEBHOOKS_PER_PROJECT)
      throw conflict(`project ${project.name} has ${MAX_WEBHOOKS_PER_PROJECT} webhooks already (the limit): remove one first`);
    await whDb(trx).insertInto('webhook_endpoints').values(row).execute();
    await audit(ctx, actor, { action: 'webhook.add', project: project.name, detail: { webhookId: id, host: hostOf(url), events } }, trx);
  });
  return { ...view(row, 0), secret };
}

export async function listWebhooks(ctx: HubContext, actor: Actor, projectName: string): Promise<WebhookView[]> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'admin');
  const rows = await whDb(ctx.db)
    .selectFrom('webhook_endpoints')
    .selectAll()
    .where('project_id', '=', project.id)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  const pending = await pendingCounts(
    ctx,
    rows.map((r) => r.id),
  );
  return rows.map((r) => view(r, pending.get(r.id) ?? 0));
}

export async function removeWebhook(ctx: HubContext, actor: Actor, projectName: string, id: string): Promise<{ ok: true }> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'admin');
  const row = await findEndpoint(ctx, project, id);
  await ctx.db.transaction().execute(async (trx) => {
    await whDb(trx).deleteFrom('webhook_deliveries').where('endpoint_id', '=', row.id).execute();
    await whDb(trx).deleteFrom('webhook_endpoints').where('id', '=', row.id).execute();
    await audit(ctx, actor, { action: 'webhook.remove', project: project.name, detail: { webhookId: row.id, host: hostOf(row.url) } }, trx);
  });
  return { ok: true };
}

export async function testWebhook(ctx: HubContext, actor: Actor, projectName: string, id: string): Promise<{ deliveryId: string }> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'admin');
  const row = await findEndpoint(ctx, project, id);
  if (row.status !== 'active') throw conflict(`webhook ${row.id} is disabled (${row.disabled_reason ?? 'no reason recorded'}): add it again to re-enable`);
  const op = actor.operator;
  const ids = await ctx.db.transaction().execute(async (trx) => {
    const queued = await enqueueEvent(ctx, trx, {
      projectId: project.id,
      type: WEBHOOK_TEST_EVENT,
      only: row.id,
      data: { project: project.name, webhookId: row.id, actor: { type: op ? 'operator' : 'system', id: op?.id ?? null, email: op?.email ?? null } },
    });
    if (queued.length) await audit(ctx, actor, { action: 'webhook.test', project: project.name, detail: { webhookId: row.id, deliveryId: queued[0] } }, trx);
    return queued;
  });
  if (ids.length === 0) throw conflict(`the webhook queue of project ${project.name} is full (STK_WEBHOOK_QUEUE_MAX pending deliveries): try again later`);
  return { deliveryId: ids[0]! };
}

function deliveryView(r: WebhookDeliveriesTable): WebhookDelivery {
  return {
    deliveryId: r.id,
    webhookId: r.endpoint_id,
    type: r.event_type,
    status: r.status,
    attempts: Number(r.attempts),
    createdAt: r.created_at,
    lastAttemptAt: r.last_attempt_at,
    nextAttemptAt: r.status === 'pending' ? r.next_attempt_at : null,
    lastResponseStatus: r.last_status === null ? null : Number(r.last_status),
    lastError: r.last_error,
    finishedAt: r.finished_at,
  };
}

export async function listDeliveries(
  ctx: HubContext,
  actor: Actor,
  projectName: string,
  q: { webhook?: string; status?: 'pending' | 'succeeded' | 'failed'; limit?: string },
): Promise<WebhookDelivery[]> {
  const { project } = await requireProjectRole(ctx, actor, projectName, 'admin');
  let limit = 50;
  if (q.limit !== undefined) {
    if (!/^\d{1,4}$/.test(q.limit) || Number(q.limit) < 1 || Number(q.limit) > 1000) throw badRequest('limit must be a whole number from 1 to 1000');
    limit = Number(q.limit);
  }
  if (q.webhook !== undefined) await findEndpoint(ctx, project, q.webhook);
  let sel = whDb(ctx.db).selectFrom('webhook_deliveries').selectAll().where('project_id', '=', project.id);
  if (q.webhook !== undefined) sel = sel.where('endpoint_id', '=', q.webhook);
  if (q.status !== undefined) sel = sel.where('status', '=', q.status);
  const rows = await sel.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute();
  return rows.map(deliveryView);
}
