import type { Command } from 'commander';
import { enc } from '../client.js';
import { resolveProject } from '../config.js';
import { CliError, UsageError } from '../errors.js';
import { printJson, printTable, success, warn, when } from '../output.js';
import { client, example, oneOf, opts } from './common.js';
import { WEBHOOK_EVENTS } from '../../protocol/webhooks.js';
import type { CreatedWebhook, WebhookDelivery, WebhookView } from '../../protocol/api/hub.js';

type Scope = { project?: string };
const PROJECT_OPT = ['--project <project>', 'project (default: STK_PROJECT or .stk/context.json)'] as const;
const base = (project: string) => `/api/projects/${enc(project)}/webhooks`;
const DELIVERY_STATUSES = ['pending', 'succeeded', 'failed'] as const;

function printDeliveries(items: WebhookDelivery[], empty: string): void {
  printTable(
    items,
    [
      { header: 'DELIVERY (webhook-id)', get: (d) => d.deliveryId },
      { header: 'WEBHOOK', get: (d) => d.webhookId },
      { header: 'TYPE', get: (d) => d.type },
      { header: 'STATUS', get: (d) => d.status },
      { header: 'ATTEMPTS', get: (d) => d.attempts },
      { header: 'LAST CODE', get: (d) => d.lastResponseStatus ?? (d.attempts ? '-' : '') },
      { header: 'NEXT RETRY', get: (d) => (d.nextAttemptAt ? when(d.nextAttemptAt) : '') },
      { header: 'CREATED', get: (d) => when(d.createdAt) },
      { header: 'LAST ERROR', get: (d) => d.lastError ?? '' },
    ],
    { empty },
  );
}

/** `stk webhooks add|list|remove|test|deliveries`: signed webhooks for key and release events. */
export function registerWebhookCommands(program: Command): void {
  const webhooks = example(
    program.command('webhooks').description('signed webhooks (Standard Webhooks) for API-key and release events of a project (needs project:admin)'),
    'stk webhooks add --project shop --url https://hooks.example.com/santokit --events apikey.created,apikey.revoked',
    'stk webhooks list --project shop',
    'stk webhooks deliveries --project shop',
  );

  example(
    webhooks
      .command('add')
      .description('add an endpoint; prints its signing secret (whsec_…) ONCE')
      .option(...PROJECT_OPT)
      .requiredOption('--url <url>', 'https:// URL of the receiver (no redirects are followed)')
      .requiredOption('--events <events>', `comma-separated: ${WEBHOOK_EVENTS.join(', ')}`)
      .option('--json', 'print {webhookId, url, events, status, disabledReason, pending, dropped, createdAt, secret}')
      .option('-q, --quiet', 'print only the secret on stdout'),
    'stk webhooks add --project shop --url https://hooks.example.com/santokit --events apikey.created,apikey.revoked,apikey.leaked',
    'SECRET=$(stk webhooks add --project shop --url https://hooks.example.com/k --events apikey.expiring -q)',
  ).action(async (_o, cmd: Command) => {
    const o = opts<Scope & { url: string; events: string; quiet?: boolean }>(cmd);
    if (o.json && o.quiet) throw new UsageError('pass --json or --quiet, not both');
    const project = resolveProject(o.project);
    const events = o.events
      .split(',')
      .map((e) => e.trim())
      .filter(Boolean);
    const w = await client(cmd).post<CreatedWebhook>(base(project), { url: o.url, events });
    if (o.json) return printJson(w);
    if (o.quiet) {
      process.stdout.write(`${w.secret}\n`);
      return;
    }
    process.stdout.write(`Signing secret (store securely): ${w.secret}\nWebhook ID: ${w.webhookId}\n`);
    process.stderr.write(`✓ Added webhook ${w.webhookId} to project ${project} for ${w.events.join(', ')}\n`);
    warn('The secret is shown only once. Verify each delivery with it (docs/webhooks.md); `stk webhooks test` sends a test event.');
  });

  example(
    webhooks
      .command('list')
      .description("a project's webhook endpoints: id, url, events, status, pending and dropped deliveries (never the secret)")
      .option(...PROJECT_OPT)
      .option('--json', 'print [{webhookId, url, events, status, disabledReason, pending, dropped, createdAt}]'),
    'stk webhooks list --project shop',
  ).action(async (_o, cmd: Command) => {
    const o = opts<Scope>(cmd);
    const project = resolveProject(o.project);
    const r = await client(cmd).get<{ items: WebhookView[] }>(base(project));
    if (o.json) return printJson(r.items);
    printTable(
      r.items,
      [
        { header: 'ID', get: (w) => w.webhookId },
        { header: 'URL', get: (w) => w.url },
        { header: 'EVENTS', get: (w) => w.events.join(',') },
        { header: 'STATUS', get: (w) => (w.disabledReason ? `${w.status} (${w.disabledReason})` : w.status) },
        { header: 'PENDING', get: (w) => w.pending },
        { header: 'DROPPED', get: (w) => w.dropped },
        { header: 'CREATED', get: (w) => when(w.createdAt) },
      ],
      { empty: `No webhooks in project ${project}: add one with 'stk webhooks add --project ${project} --url https://… --events …'` },
    );
  });

  example(
    webhooks
      .command('remove')
      .description('remove an endpoint and its queued deliveries')
      .argument('[webhookId]', 'the webhook id (wh_…, or --id)')
      .option('--id <webhookId>', 'the webhook id')
      .option(...PROJECT_OPT),
    'stk webhooks remove --project shop wh_01JD…',
  ).action(async (idArg: string | undefined, _o, cmd: Command) => {
    const o = opts<Scope & { id?: string }>(cmd);
    const id = oneOf(idArg, o.id, '--id', 'the webhook id');
    const project = resolveProject(o.project);
    await client(cmd).delete(`${base(project)}/${enc(id)}`);
    success(`Removed webhook ${id} from project ${project}`);
  });

  example(
    webhooks
      .command('test')
      .description('send a webhook.test event to one endpoint and wait (up to --wait) for its outcome')
      .argument('[webhookId]', 'the webhook id (wh_…, or --id)')
      .option('--id <webhookId>', 'the webhook id')
      .option(...PROJECT_OPT)
      .option('--wait <seconds>', 'how long to wait for the first attempt (0: just queue it)', '20')
      .option('--json', 'print the delivery {deliveryId, webhookId, type, status, attempts, …}'),
    'stk webhooks test --project shop wh_01JD…',
  ).action(async (idArg: string | undefined, _o, cmd: Command) => {
    const o = opts<Scope & { id?: string; wait: string }>(cmd);
    const id = oneOf(idArg, o.id, '--id', 'the webhook id');
    if (!/^\d{1,4}$/.test(o.wait)) throw new UsageError(`invalid --wait ${JSON.stringify(o.wait)}: a whole number of seconds`);
    const project = resolveProject(o.project);
    const hub = client(cmd);
    const { deliveryId } = await hub.post<{ deliveryId: string }>(`${base(project)}/${enc(id)}/test`);
    const end = Date.now() + Number(o.wait) * 1000;
    let d: WebhookDelivery | undefined;
    // until the first attempt has an outcome (a finished delivery, or a failed attempt waiting for its retry)
    const decided = (x: WebhookDelivery) => x.status !== 'pending' || x.lastError !== null || x.lastResponseStatus !== null;
    for (;;) {
      const r = await hub.get<{ items: WebhookDelivery[] }>(`${base(project)}/deliveries`, { webhook: id, limit: 20 });
      d = r.items.find((x) => x.deliveryId === deliveryId);
      if (!d || decided(d) || Date.now() >= end) break;
      await new Promise((res) => setTimeout(res, 250));
    }
    if (o.json) return printJson(d ?? { deliveryId });
    if (!d || d.attempts === 0) {
      success(`Queued test delivery ${deliveryId}; see 'stk webhooks deliveries --project ${project} --webhook ${id}'`);
      return;
    }
    if (d.status === 'succeeded') return success(`Test delivery ${deliveryId} answered ${d.lastResponseStatus}`);
    if (d.lastError === null && d.lastResponseStatus === null) {
      success(`Test delivery ${deliveryId} is being sent; see 'stk webhooks deliveries --project ${project} --webhook ${id}'`);
      return;
    }
    throw new CliError(
      `test delivery ${deliveryId} failed: ${d.lastError ?? `HTTP ${d.lastResponseStatus}`}${d.nextAttemptAt ? ` (next attempt ${when(d.nextAttemptAt)})` : ''}`,
    );
  });

  example(
    webhooks
      .command('deliveries')
      .description('recent deliveries, newest first: status, attempts, last response code, next retry')
      .option(...PROJECT_OPT)
      .option('--webhook <webhookId>', 'only this endpoint')
      .option('--status <status>', `only ${DELIVERY_STATUSES.join(', ')}`)
      .option('--limit <n>', '1-1000', '50')
      .option(
        '--json',
        'print [{deliveryId, webhookId, type, status, attempts, createdAt, lastAttemptAt, nextAttemptAt, lastResponseStatus, lastError, finishedAt}]',
      ),
    'stk webhooks deliveries --project shop',
    'stk webhooks deliveries --project shop --status failed',
  ).action(async (_o, cmd: Command) => {
    const o = opts<Scope & { webhook?: string; status?: string; limit: string }>(cmd);
    if (o.status !== undefined && !(DELIVERY_STATUSES as readonly string[]).includes(o.status))
      throw new UsageError(`invalid --status ${JSON.stringify(o.status)}: use ${DELIVERY_STATUSES.join(', ')}`);
    const project = resolveProject(o.project);
    const r = await client(cmd).get<{ items: WebhookDelivery[] }>(`${base(project)}/deliveries`, { webhook: o.webhook, status: o.status, limit: o.limit });
    if (o.json) return printJson(r.items);
    printDeliveries(r.items, `No deliveries in project ${project}${o.status ? ` with status ${o.status}` : ''}`);
  });
}
