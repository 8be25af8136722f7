import type { Command } from 'commander';
import { enc } from '../client.js';
import { resolveEnv, resolveProject } from '../config.js';
import { CliError, UsageError } from '../errors.js';
import { printJson, printTable, success, warn, when } from '../output.js';
import { client, example, opts } from './common.js';

interface Ack {
  bridges: number;
  acked: number;
  lagging: string[];
}

interface KeyView {
  keyId: string;
  name: string;
  roles: string[];
  status: 'active' | 'revoked' | 'expired';
  createdAt: string;
  lastUsedAt: string | null;
  expiresAt: string | null;
  rateLimitPerMin: number | null;
  rotatedAt: string | null;
  staleRoles: string[];
  /** the Hub stopped before the response with the key's plaintext left it */
  unconfirmed?: boolean;
}

interface Created {
  keyId: string;
  name: string;
  roles: string[];
  status: string;
  createdAt: string;
  expiresAt: string | null;
  rateLimitPerMin: number | null;
  apiKey: string;
  ack: Ack;
}

interface Revoked {
  keyId: string;
  name: string;
  roles: string[];
  status: string;
  revokedAt: string | null;
  alreadyRevoked: boolean;
  ack: Ack | null;
}

interface DryRun {
  dryRun: true;
  keyId: string;
  name: string;
  status: string;
  lastUsedAt: string | null;
  requestsLast60m: number;
  sources: Array<{ address: string; lastSeenAt: string; count: number }>;
}

interface Rotated {
  keyId: string;
  name: string;
  roles: string[];
  rotatedAt: string;
  previousSecretValidUntil: string | null;
  apiKey: string;
  ack: Ack;
}

type Scope = { project?: string; env?: string };

const PROJECT_OPT = ['--project <project>', 'project (default: STK_PROJECT or .stk/context.json)'] as const;
const ENV_OPT = ['--env <env>', 'env (default: STK_ENV or .stk/context.json)'] as const;

function scope(cmd: Command) {
  const o = opts<Scope>(cmd);
  const project = resolveProject(o.project);
  const env = resolveEnv(o.env);
  return { project, env, base: `/api/projects/${enc(project)}/envs/${enc(env)}/apikeys` };
}

/** `500/min`, `500/m` or `500` → 500. */
export function parseRateLimitFlag(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const m = /^\s*(\d{1,8})\s*(?:\/\s*(?:min|m|minute))?\s*$/.exec(v);
  if (!m || Number(m[1]) < 1) throw new UsageError(`invalid --rate-limit ${JSON.stringify(v)}: use e.g. 500/min`);
  return Number(m[1]);
}

/** Exits 1 naming the Bridges that did not confirm a change in time. */
function checkAck(ack: Ack | null | undefined, what: string): void {
  if (!ack) return;
  if (ack.lagging.length === 0) {
    process.stderr.write(`  Bridges: ${ack.acked}/${ack.bridges} confirmed${ack.bridges ? '' : ' (none connected)'}\n`);
    return;
  }
  throw new CliError(
    `${what}, but ${ack.lagging.length} of ${ack.bridges} Bridge(s) did not confirm in time: ${ack.lagging.join(', ')}`,
    1,
    'the change is committed; a lagging Bridge applies it when it catches up (check its connection to the Hub)',
  );
}

const keyLine = (k: { keyId: string; name: string }) => `${k.keyId} (${JSON.stringify(k.name)})`;

export function registerApiKeyCommands(program: Command): void {
  const apikey = example(
    program.command('apikey').description('project API keys for servers and CI: create, list, rotate, revoke (needs project:admin)'),
    'stk apikey create --project shop --env prod --name server --roles reader,writer',
    'stk apikey list --project shop --env prod',
    'stk apikey revoke --project shop --env prod --key-id server',
  );

  example(
    apikey.command('create').description('create a key bound to one project+env and a set of roles; prints the key ONCE')
      .option(...PROJECT_OPT).option(...ENV_OPT)
      .requiredOption('--name <name>', "unique per env: 1-63 lowercase letters, digits or '-'")
      .requiredOption('--roles <roles>', 'comma-separated roles; each must be granted by some rule of the current release')
      .option('--expires-in <duration>', 'e.g. 30d, 12h (default: never)')
      .option('--expires-at <iso>', 'e.g. 2027-01-31T00:00:00Z')
      .option('--rate-limit <n/min>', 'requests per minute for this key on each Bridge (default: STK_RATE_LIMIT_PER_API_KEY, 1000)')
      .option('--json', 'print {keyId, name, roles, status, createdAt, expiresAt, rateLimitPerMin, apiKey, ack}')
      .option('-q, --quiet', 'print only the key on stdout (for KEY=$(...)); nothing else'),
    'stk apikey create --project shop --env prod --name server --roles reader,writer',
    'stk apikey create --project shop --env dev --name ci --roles reader --expires-in 90d --rate-limit 500/min',
    'KEY=$(stk apikey create --project shop --env dev --name local --roles admin -q)',
  ).action(async (_o, cmd: Command) => {
    const o = opts<Scope & { name: string; roles: string; expiresIn?: string; expiresAt?: string; rateLimit?: string; quiet?: boolean }>(cmd);
    if (o.json && o.quiet) throw new UsageError('pass --json or --quiet, not both');
    if (o.expiresIn && o.expiresAt) throw new UsageError('pass --expires-in or --expires-at, not both');
    const { project, env, base } = scope(cmd);
    const body = {
      name: o.name,
      // sent as typed (split only): the Hub trims and rejects empties and duplicates with 422
      roles: o.roles.split(','),
      expiresIn: o.expiresIn,
      expiresAt: o.expiresAt,
      rateLimitPerMin: parseRateLimitFlag(o.rateLimit),
    };
    const k = await client(cmd).post<Created>(base, body);
    if (o.json) {
      printJson(k);
    } else if (o.quiet) {
      process.stdout.write(`${k.apiKey}\n`);
    } else {
      process.stdout.write(`API Key (store securely): ${k.apiKey}\nKey ID: ${k.keyId}\n`);
      process.stderr.write(`✓ Created API key ${JSON.stringify(k.name)} in ${project}/${env}, roles ${k.roles.join(', ')}${k.expiresAt ? `, expires ${k.expiresAt}` : ''}\n`);
      warn('This key is shown only once: the Hub keeps a hash and cannot show it again.');
    }
    if (k.ack.lagging.length) warn(`Bridge(s) ${k.ack.lagging.join(', ')} did not load the key within the wait; it works there once they catch up`);
  });

  example(
    apikey.command('list').description("an env's keys: id, name, roles, status, created, last used, expiry (never the secret)")
      .option(...PROJECT_OPT).option(...ENV_OPT)
      .option('--json', 'print [{keyId, name, roles, status, createdAt, lastUsedAt, expiresAt, rateLimitPerMin, rotatedAt, staleRoles, unconfirmed}]')
      .addHelpText('after', '\nLAST USED has minute granularity: Bridges count requests in memory and report them to the Hub at\nmost every 60 s, so a key used a moment ago can still show the previous minute (or never).\nSTATUS reads "status: active", "status: revoked" or "status: expired".'),
    'stk apikey list --project shop --env prod',
    'stk apikey list --project shop --env prod --json',
  ).action(async (_o, cmd: Command) => {
    const { project, env, base } = scope(cmd);
    const r = await client(cmd).get<{ items: KeyView[] }>(base);
    if (opts(cmd).json) return printJson(r.items);
    printTable(r.items, [
      { header: 'ID', get: (k) => k.keyId },
      { header: 'NAME', get: (k) => k.name },
      { header: 'ROLES', get: (k) => k.roles.join(',') },
      { header: 'STATUS', get: (k) => `status: ${k.status}` },
      { header: 'CREATED', get: (k) => when(k.createdAt) },
      { header: 'LAST USED', get: (k) => when(k.lastUsedAt) },
      { header: 'EXPIRES', get: (k) => (k.expiresAt ? when(k.expiresAt) : 'never') },
    ], { empty: `No API keys in ${project}/${env} (create one with: stk apikey create --project ${project} --env ${env} --name <name> --roles <roles>)` });
    for (const k of r.items) {
      if (k.status === 'active' && k.staleRoles.length) {
        warn(`key ${keyLine(k)}: role(s) ${k.staleRoles.join(', ')} are no longer referenced by the current release`);
      }
      if (k.status === 'active' && k.unconfirmed) {
        warn(`key ${keyLine(k)}: unconfirmed: the Hub stopped before the response with its secret went out, so nobody may hold it; if unused, revoke it`);
      }
    }
  });

  example(
    apikey.command('revoke').description('revoke a key (by id or name); returns once every connected Bridge rejects it')
      .option(...PROJECT_OPT).option(...ENV_OPT)
      .requiredOption('--key-id <idOrName>', 'the key id, or its name')
      .option('--dry-run', 'show last use, requests in the last 60 min and source addresses; change nothing')
      .option('--json', 'print the Hub response'),
    'stk apikey revoke --project shop --env prod --key-id server --dry-run',
    'stk apikey revoke --project shop --env prod --key-id server',
  ).action(async (_o, cmd: Command) => {
    const o = opts<Scope & { keyId: string; dryRun?: boolean }>(cmd);
    const { project, env, base } = scope(cmd);
    const path = `${base}/${enc(o.keyId)}/revoke`;
    if (o.dryRun) {
      const d = await client(cmd).post<DryRun>(path, { dryRun: true });
      if (o.json) return printJson(d);
      const out = [
        `Dry run: nothing changed. Revoking ${keyLine(d)} in ${project}/${env} would reject it on every Bridge.`,
        `Status: ${d.status}`,
        `Last used: ${d.lastUsedAt ?? 'never'} (minute granularity)`,
        `Requests in the last 60 min: ${d.requestsLast60m}`,
        `Sources: ${d.sources.length ? d.sources.map((s) => `${s.address} (${s.count} request${s.count === 1 ? '' : 's'}, last ${s.lastSeenAt})`).join(', ') : 'none seen'}`,
      ];
      process.stdout.write(out.join('\n') + '\n');
      return;
    }
    const r = await client(cmd).post<Revoked>(path, {});
    if (o.json) printJson(r);
    else if (r.alreadyRevoked) success(`API key ${keyLine(r)} was already revoked${r.revokedAt ? ` (at ${r.revokedAt})` : ''}; nothing changed`);
    else success(`Revoked API key ${keyLine(r)} in ${project}/${env}; status: revoked`);
    checkAck(r.ack, `revoked ${keyLine(r)}`);
  });

  example(
    apikey.command('rotate').description('new secret for the same key id, name, roles and history; prints the new key ONCE')
      .option(...PROJECT_OPT).option(...ENV_OPT)
      .requiredOption('--key-id <idOrName>', 'the key id, or its name')
      .option('--grace <duration>', 'how long the previous secret keeps working, 0 to 7d (default 0: it stops now)', '0')
      .option('--json', 'print {keyId, name, roles, rotatedAt, previousSecretValidUntil, apiKey, ack}')
      .option('-q, --quiet', 'print only the new key on stdout'),
    'stk apikey rotate --project shop --env prod --key-id server --grace 1h',
  ).action(async (_o, cmd: Command) => {
    const o = opts<Scope & { keyId: string; grace: string; quiet?: boolean }>(cmd);
    if (o.json && o.quiet) throw new UsageError('pass --json or --quiet, not both');
    const { project, env, base } = scope(cmd);
    const r = await client(cmd).post<Rotated>(`${base}/${enc(o.keyId)}/rotate`, { grace: o.grace });
    if (o.json) printJson(r);
    else if (o.quiet) process.stdout.write(`${r.apiKey}\n`);
    else {
      process.stdout.write(`API Key (store securely): ${r.apiKey}\nKey ID: ${r.keyId}\n`);
      process.stderr.write(`✓ Rotated API key ${keyLine(r)} in ${project}/${env}; the previous secret ${r.previousSecretValidUntil ? `works until ${r.previousSecretValidUntil}` : 'stopped working now'}\n`);
      warn('This key is shown only once: the Hub keeps a hash and cannot show it again.');
    }
    checkAck(r.ack, `rotated ${keyLine(r)}`);
  });

  example(
    apikey.command('update').description("change a key's roles, expiry or rate limit; returns once every connected Bridge applied it")
      .option(...PROJECT_OPT).option(...ENV_OPT)
      .requiredOption('--key-id <idOrName>', 'the key id, or its name')
      .option('--roles <roles>', 'replace the roles (comma-separated)')
      .option('--expires-in <duration>', 'new expiry from now, e.g. 30d')
      .option('--expires-at <iso>', 'new expiry')
      .option('--no-expiry', 'remove the expiry')
      .option('--rate-limit <n/min>', 'new per-key limit')
      .option('--json', 'print the key'),
    'stk apikey update --project shop --env prod --key-id server --roles reader',
    'stk apikey update --project shop --env prod --key-id ci --expires-in 7d',
  ).action(async (_o, cmd: Command) => {
    const o = opts<Scope & { keyId: string; roles?: string; expiresIn?: string; expiresAt?: string; expiry?: boolean; rateLimit?: string }>(cmd);
    const body: Record<string, unknown> = {};
    if (o.roles !== undefined) body.roles = o.roles.split(',');
    if (o.expiresIn) body.expiresIn = o.expiresIn;
    if (o.expiresAt) body.expiresAt = o.expiresAt;
    if (o.expiry === false) {
      if (o.expiresIn || o.expiresAt) throw new UsageError('--no-expiry cannot be combined with --expires-in/--expires-at');
      body.expiresAt = null;
    }
    if (o.rateLimit !== undefined) body.rateLimitPerMin = parseRateLimitFlag(o.rateLimit);
    if (Object.keys(body).length === 0) throw new UsageError('nothing to change: pass --roles, --expires-in, --expires-at, --no-expiry or --rate-limit');
    const { project, env, base } = scope(cmd);
    const r = await client(cmd).patch<KeyView & { ack: Ack }>(`${base}/${enc(o.keyId)}`, body);
    if (o.json) printJson(r);
    else success(`Updated API key ${keyLine(r)} in ${project}/${env}: roles ${r.roles.join(', ')}, expires ${r.expiresAt ?? 'never'}, rate limit ${r.rateLimitPerMin ?? 'default'}/min`);
    checkAck(r.ack, `updated ${keyLine(r)}`);
  });
}
