import type { Command } from 'commander';
import { enc } from '../client.js';
import { resolveEnv, resolveProject } from '../config.js';
import { CliError, UsageError } from '../errors.js';
import { isTTY, printJson, printTable, success, warn, when } from '../output.js';
import { canConfirm, promptLine } from '../prompt.js';
import { client, durationFlag, example, oneOf, opts, timestampFlag } from './common.js';
import { parseDuration } from '../../common/duration.js';
import { registerScanCommand } from './apikey-scan.js';
import type { AckResult } from '../../protocol/api/define.js';
import type {
  ApiKeyView,
  CreatedKey,
  GraceEnded,
  KeyUsageReport,
  ResumedKey,
  RevokeDryRun,
  RevokedKey,
  RotatedKey,
  SuspendedKey,
} from '../../protocol/api/hub.js';

type Scope = { project?: string; env?: string };

const STATUSES: ReadonlyArray<ApiKeyView['status']> = ['active', 'suspended', 'revoked', 'expired'];

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
function checkAck(ack: AckResult | null | undefined, what: string): void {
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

/** The list's ALLOWED FROM column: `any`, or the entries (on a terminal, the first two and how many more). */
function allowedFrom(ips: string[] | null, human: boolean): string {
  if (!ips) return 'any';
  if (!human || ips.length <= 2) return ips.join(',');
  return `${ips.slice(0, 2).join(',')} +${ips.length - 2} more`;
}

const keyLine = (k: { keyId: string; name: string }) => `${k.keyId} (${JSON.stringify(k.name)})`;

const num = (n: number) => n.toLocaleString('en-US');
const BARS = ' ▁▂▃▄▅▆▇█';

/** Requests per minute over the window as one line of block characters, each the busiest minute of its slice. */
export function sparkline(series: Array<{ minute: string; requests: number }>, fromIso: string, toIso: string, width: number): { line: string; peak: number } {
  const from = Date.parse(fromIso);
  const minutes = Math.max(1, Math.round((Date.parse(toIso) - from) / 60_000));
  const cols = new Array<number>(width).fill(0);
  let peak = 0;
  for (const m of series) {
    // the current minute lands on the last column
    const i = Math.min(width - 1, Math.floor(((Date.parse(m.minute) - from) / 60_000 / minutes) * width));
    if (i < 0) continue;
    cols[i] = Math.max(cols[i]!, m.requests);
    peak = Math.max(peak, m.requests);
  }
  const line = cols.map((v) => (v === 0 ? '·' : BARS[Math.max(1, Math.ceil((v / peak) * 8))])).join('');
  return { line, peak };
}

function age(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

/** `--grace`: a duration (0 to 7d) or `auto`; anything else → exit 2 naming the flag. */
export function graceFlag(v: string | undefined): string {
  if (v === undefined) return '0';
  if (v.trim().toLowerCase() === 'auto') return 'auto';
  try {
    parseDuration(v);
  } catch {
    throw new UsageError(
      `invalid --grace ${JSON.stringify(v.slice(0, 40))}: use a duration like 0, 30m, 12h or 7d, or auto (ends once the previous secret is unused)`,
    );
  }
  return v;
}

const secs = (n: number) => (n % 60 === 0 ? `${n / 60} min` : `${n} s`);
const plural = (n: number, w: string) => `${num(n)} ${w}${n === 1 ? '' : 's'}`;

/** The last rotation's grace period in `apikey show`: requests per secret, the previous secret's last use and sources. */
function renderGrace(g: NonNullable<KeyUsageReport['grace']>): string[] {
  const state = g.endedAt
    ? `ended ${g.endedAt} (${g.endReason === 'quiet' ? 'automatically: the previous secret was unused' : g.endReason === 'deadline' ? 'its deadline' : g.endReason === 'operator' ? 'by an operator' : g.endReason === 'revoked' ? 'the key was revoked' : g.endReason})`
    : Date.parse(g.until) <= Date.now()
      ? `over since ${g.until}`
      : g.auto
        ? `auto: ends once the previous secret is unused${g.endsAfter ? `, at the earliest ${g.endsAfter}` : ''}; at the latest ${g.until}`
        : `the previous secret works until ${g.until}`;
  const out = [
    `Rotation grace period (rotated ${g.rotatedAt}): ${state}`,
    `  previous secret: ${plural(g.previous.requests, 'request')}, last used ${g.previous.lastUsedAt ?? 'never'}`,
    `  current secret:  ${plural(g.current.requests, 'request')}`,
  ];
  if (g.unattributedLastAt) {
    out.push(
      `  not attributed to a secret (an older Bridge, or before a Bridge applied the rotation): last ${g.unattributedLastAt}, counted as the previous secret`,
    );
  }
  if (g.previous.sources.length) {
    out.push('  previous secret from:');
    for (const x of g.previous.sources) out.push(`    ${x.address.padEnd(16)} ${plural(x.requests, 'request')}, last ${x.lastSeenAt}`);
  }
  out.push('');
  return out;
}

function renderUsage(u: KeyUsageReport, project: string, env: string): string {
  const k = u.key;
  const width = Math.max(24, Math.min(96, (process.stdout.columns || 80) - 4));
  const total = u.series.reduce((n, m) => n + m.requests, 0);
  const { line, peak } = sparkline(u.series, u.from, u.to, width);
  const fresh = u.asOf
    ? `as of ${age(u.asOf)}: Bridges report every 60 s, later requests are not in yet`
    : 'no Bridge is connected, so nothing newer can arrive';
  const out = [
    `${keyLine(k)} in ${project}/${env}`,
    `  status: ${k.status}${k.status === 'suspended' && k.suspendedAt ? ` since ${k.suspendedAt} (stk apikey resume ${k.name} restores it)` : ''}${k.unconfirmed ? ' (unconfirmed)' : ''}`,
    `  roles: ${k.roles.join(', ')}${k.staleRoles.length ? ` (no longer in the release: ${k.staleRoles.join(', ')})` : ''}`,
    `  created: ${k.createdAt}${k.rotatedAt ? `, rotated ${k.rotatedAt}` : ''}`,
    `  last used: ${k.lastUsedAt ?? 'never'}${k.lastUsedAt ? ' (minute granularity)' : ''}`,
    `  expires: ${k.expiresAt ?? 'never'}`,
    `  rate limit: ${k.rateLimitPerMin ? `${num(k.rateLimitPerMin)}/min` : 'default'} on each Bridge`,
    `  allowed from: ${k.allowedIps ? k.allowedIps.join(', ') : 'any address'}`,
    '',
    `Requests per minute, last 24 h: ${num(total)} in total, peak ${num(peak)}/min (${fresh})`,
    `  ${line}`,
    `  ${'24 h ago'.padEnd(width - 3)}now`,
    '',
    `By status, last 24 h: ${u.byStatus
      .filter((b) => b.requests > 0 || b.status === '2xx')
      .map((b) => `${b.status} ${num(b.requests)}`)
      .join(' · ')}`,
    u.sources.length ? 'Sources, last 7 days:' : 'Sources, last 7 days: none seen',
    ...u.sources.map((x) => `  ${x.address.padEnd(16)} ${num(x.requests)} request${x.requests === 1 ? '' : 's'}, last ${x.lastSeenAt}`),
    '',
    ...(u.grace ? renderGrace(u.grace) : []),
  ];
  return out.join('\n');
}

export function registerApiKeyCommands(program: Command): void {
  const apikey = example(
    program
      .command('apikey')
      .description('project API keys for servers and CI: create, list, show, rotate, end-grace, suspend, resume, revoke, scan (needs project:admin)'),
    'stk apikey create --project shop --env prod --name server --roles reader,writer',
    'stk apikey list --project shop --env prod',
    'stk apikey suspend server --project shop --env prod',
    'stk apikey revoke --project shop --env prod --key-id server',
  );

  example(
    apikey
      .command('create')
      .description('create a key bound to one project+env and a set of roles; prints the key ONCE')
      .argument('[name]', 'the key name (or --name)')
      .option(...PROJECT_OPT)
      .option(...ENV_OPT)
      .option('--name <name>', "unique per env: 1-63 lowercase letters, digits, '_' or '-'")
      .requiredOption('--roles <roles>', 'comma-separated roles; each must be granted by some rule of the current release')
      .option('--expires-in <duration>', 'e.g. 30d, 12h (default: never)')
      .option('--expires-at <iso>', 'e.g. 2027-01-31T00:00:00Z')
      .option('--rate-limit <n/min>', 'requests per minute for this key on each Bridge (default: STK_RATE_LIMIT_PER_API_KEY, 1000)')
      .option('--allow-ip <list>', 'only from these IPv4/IPv6 addresses or CIDR ranges, comma-separated, at most 100 (default: any address)')
      .option('--json', 'print {keyId, name, roles, status, createdAt, expiresAt, rateLimitPerMin, allowedIps, apiKey, ack}')
      .option('-q, --quiet', 'print only the key on stdout (for KEY=$(...)); nothing else'),
    'stk apikey create --project shop --env prod --name server --roles reader,writer',
    'stk apikey create --project shop --env dev --name ci --roles reader --expires-in 90d --rate-limit 500/min',
    'stk apikey create --project shop --env prod --name office --roles reader --allow-ip 203.0.113.0/24,2001:db8::/32',
    'KEY=$(stk apikey create --project shop --env dev --name local --roles admin -q)',
  ).action(async (nameArg: string | undefined, _o, cmd: Command) => {
    const o = opts<Scope & { name?: string; roles: string; expiresIn?: string; expiresAt?: string; rateLimit?: string; allowIp?: string; quiet?: boolean }>(
      cmd,
    );
    const name = oneOf(nameArg, o.name, '--name', 'the key name');
    if (o.json && o.quiet) throw new UsageError('pass --json or --quiet, not both');
    if (o.expiresIn && o.expiresAt) throw new UsageError('pass --expires-in or --expires-at, not both');
    durationFlag('--expires-in', o.expiresIn);
    timestampFlag('--expires-at', o.expiresAt);
    const { project, env, base } = scope(cmd);
    const body = {
      name,
      // sent as typed (split only): the Hub trims and rejects empties and duplicates with 422
      roles: o.roles.split(','),
      expiresIn: o.expiresIn,
      expiresAt: o.expiresAt,
      rateLimitPerMin: parseRateLimitFlag(o.rateLimit),
      // sent as typed (split only): the Hub validates each entry and names a bad one (422)
      ...(o.allowIp !== undefined ? { allowedIps: o.allowIp.split(',') } : {}),
    };
    const k = await client(cmd).post<CreatedKey>(base, body);
    if (o.json) {
      printJson(k);
    } else if (o.quiet) {
      process.stdout.write(`${k.apiKey}\n`);
    } else {
      process.stdout.write(`API Key (store securely): ${k.apiKey}\nKey ID: ${k.keyId}\n`);
      process.stderr.write(
        `✓ Created API key ${JSON.stringify(k.name)} in ${project}/${env}, roles ${k.roles.join(', ')}${k.expiresAt ? `, expires ${k.expiresAt}` : ''}${k.allowedIps ? `, only from ${k.allowedIps.join(', ')}` : ''}\n`,
      );
      warn('This key is shown only once: the Hub keeps a hash and cannot show it again.');
    }
    if (k.ack.lagging.length) warn(`Bridge(s) ${k.ack.lagging.join(', ')} did not load the key within the wait; it works there once they catch up`);
  });

  example(
    apikey
      .command('list')
      .description("an env's keys: id, name, roles, status, created, last used, expiry, allowed addresses (never the secret)")
      .option(...PROJECT_OPT)
      .option(...ENV_OPT)
      .option('--status <status>', 'only keys with this status: active, suspended, revoked or expired')
      .option(
        '--json',
        'print [{keyId, name, roles, status, createdAt, lastUsedAt, expiresAt, rateLimitPerMin, rotatedAt, suspendedAt, allowedIps, staleRoles, unconfirmed, grace}]',
      )
      .addHelpText(
        'after',
        '\nOn a terminal: a table, the status reading "status: active", "status: suspended", "status: revoked" or "status: expired".\nPiped: the same columns tab-separated, no header, bare values (active), times in ISO-8601 UTC.\nLAST USED has minute granularity: Bridges count requests in memory and report them to the Hub at\nmost every 60 s, so a key used a moment ago can still show the previous minute (or never).',
      ),
    'stk apikey list --project shop --env prod',
    'stk apikey list --project shop --env prod --status active',
    'stk apikey list --project shop --env prod --json',
  ).action(async (_o, cmd: Command) => {
    const o = opts<Scope & { status?: string }>(cmd);
    if (o.status !== undefined && !STATUSES.includes(o.status as ApiKeyView['status'])) {
      throw new UsageError(`invalid --status ${JSON.stringify(o.status)}: use ${STATUSES.join(', ')}`);
    }
    const { project, env, base } = scope(cmd);
    const r = await client(cmd).get<{ items: ApiKeyView[] }>(base);
    const items = o.status ? r.items.filter((k) => k.status === o.status) : r.items;
    if (o.json) return printJson(items);
    const human = isTTY();
    printTable(
      items,
      [
        { header: 'ID', get: (k) => k.keyId },
        { header: 'NAME', get: (k) => k.name },
        { header: 'ROLES', get: (k) => k.roles.join(',') },
        // a person reads "status: active" (the words say what the column is); scripts get the bare value
        {
          header: '',
          get: (k) =>
            human
              ? `status: ${k.status}${k.grace ? (k.grace.auto ? ' (grace: auto)' : ` (grace until ${when(k.grace.previousSecretValidUntil)})`) : ''}`
              : k.status,
        },
        { header: 'CREATED', get: (k) => when(k.createdAt) },
        { header: 'LAST USED', get: (k) => when(k.lastUsedAt) },
        { header: 'EXPIRES', get: (k) => (k.expiresAt ? when(k.expiresAt) : 'never') },
        { header: 'ALLOWED FROM', get: (k) => allowedFrom(k.allowedIps, human) },
      ],
      {
        empty: o.status
          ? `No ${o.status} API keys in ${project}/${env}`
          : `No API keys in ${project}/${env} (create one with: stk apikey create --project ${project} --env ${env} --name <name> --roles <roles>)`,
      },
    );
    for (const k of items) {
      if (k.status === 'active' && k.staleRoles.length) {
        warn(`key ${keyLine(k)}: role(s) ${k.staleRoles.join(', ')} are no longer referenced by the current release`);
      }
      if (k.status === 'active' && k.unconfirmed) {
        warn(`key ${keyLine(k)}: unconfirmed: the Hub stopped before the response with its secret went out, so nobody may hold it; if unused, revoke it`);
      }
    }
  });

  example(
    apikey
      .command('show')
      .description("a key's details and usage: requests per minute over 24 h (a chart), by status and by source")
      .argument('[key]', 'the key id or name (or --key-id)')
      .option(...PROJECT_OPT)
      .option(...ENV_OPT)
      .option('--key-id <idOrName>', 'the key id, or its name')
      .option('--json', 'print {key, asOf, bridges, grace, from, to, series: [{minute, requests}], byStatus, sources}')
      .addHelpText(
        'after',
        "\nBridges count in memory and report every 60 s (STK_USAGE_REPORT_SECONDS): the figures say how old they are.\nIn --json, series lists the minutes with requests (others had none); 2xx = authenticated calls that succeeded.\nAfter a rotation with a grace period: requests per secret, the previous secret's last use and busiest addresses (grace).",
      ),
    'stk apikey show server --project shop --env prod',
    'stk apikey show server --project shop --env prod --json',
  ).action(async (keyArg: string | undefined, _o, cmd: Command) => {
    const o = opts<Scope & { keyId?: string }>(cmd);
    const key = oneOf(keyArg, o.keyId, '--key-id', 'the key (id or name)');
    const { project, env, base } = scope(cmd);
    const u = await client(cmd).get<KeyUsageReport>(`${base}/${enc(key)}/usage`);
    if (o.json) return printJson(u);
    process.stdout.write(renderUsage(u, project, env));
  });

  example(
    apikey
      .command('revoke')
      .description('revoke a key (by id or name); returns once every connected Bridge rejects it')
      .argument('[key]', 'the key id or name (or --key-id)')
      .option(...PROJECT_OPT)
      .option(...ENV_OPT)
      .option('--key-id <idOrName>', 'the key id, or its name')
      .option('--dry-run', 'show last use, requests in the last 60 min and source addresses; change nothing')
      .option('-y, --yes', 'do not ask for confirmation (it is only asked on a terminal)')
      .option('--json', 'print the Hub response')
      .addHelpText(
        'after',
        '\nRevoking cannot be undone. On a terminal you are asked to type the key name first (--yes skips it);\nwithout a terminal (scripts, CI) nothing is asked.',
      ),
    'stk apikey revoke server --project shop --env prod --dry-run',
    'stk apikey revoke server --project shop --env prod',
    'stk apikey revoke --project shop --env prod --key-id server --yes',
  ).action(async (keyArg: string | undefined, _o, cmd: Command) => {
    const o = opts<Scope & { keyId?: string; dryRun?: boolean; yes?: boolean }>(cmd);
    const key = oneOf(keyArg, o.keyId, '--key-id', 'the key (id or name)');
    const { project, env, base } = scope(cmd);
    const path = `${base}/${enc(key)}/revoke`;
    if (o.dryRun) {
      const d = await client(cmd).post<RevokeDryRun>(path, { dryRun: true });
      if (o.json) return printJson(d);
      const out = [
        d.status === 'revoked'
          ? `Dry run: nothing changed. ${keyLine(d)} in ${project}/${env} is already revoked; revoking it again would change nothing.`
          : `Dry run: nothing changed. Revoking ${keyLine(d)} in ${project}/${env} would reject it on every Bridge.`,
        `Status: ${d.status}`,
        `Last used: ${d.lastUsedAt ?? 'never'} (minute granularity)`,
        `Figures: ${d.asOf ? `as of ${age(d.asOf)} (Bridges report every 60 s: a request since then is not counted yet)` : d.asOf === null ? 'no Bridge is connected' : 'of the last report'}`,
        `Requests in the last 60 min: ${d.requestsLast60m}`,
        `Sources: ${d.sources.length ? d.sources.map((s) => `${s.address} (${s.count} request${s.count === 1 ? '' : 's'}, last ${s.lastSeenAt})`).join(', ') : 'none seen'}`,
      ];
      process.stdout.write(out.join('\n') + '\n');
      return;
    }
    if (!o.yes && canConfirm()) {
      const k = await client(cmd).get<ApiKeyView>(`${base}/${enc(key)}`);
      if (k.status !== 'revoked') {
        process.stderr.write(
          `Revoking ${keyLine(k)} in ${project}/${env} (roles ${k.roles.join(', ')}, last used ${k.lastUsedAt ?? 'never'}) cannot be undone: every Bridge rejects it at once.\n`,
        );
        const typed = (await promptLine(`Type the key name (${k.name}) to confirm: `)).trim();
        if (typed !== k.name) throw new CliError(`confirmation did not match ${JSON.stringify(k.name)}: nothing was revoked`);
      }
    }
    const r = await client(cmd).post<RevokedKey>(path, {});
    if (o.json) printJson(r);
    else if (r.alreadyRevoked) success(`API key ${keyLine(r)} was already revoked${r.revokedAt ? ` (at ${r.revokedAt})` : ''}; nothing changed`);
    else success(`Revoked API key ${keyLine(r)} in ${project}/${env}; status: revoked`);
    checkAck(r.ack, `revoked ${keyLine(r)}`);
  });

  example(
    apikey
      .command('suspend')
      .description('stop a key until resumed (an incident, a maybe-leaked key); returns once every connected Bridge refuses it')
      .argument('[key]', 'the key id or name (or --key-id)')
      .option(...PROJECT_OPT)
      .option(...ENV_OPT)
      .option('--key-id <idOrName>', 'the key id, or its name')
      .option('--reason <text>', 'why (kept in the audit log, at most 500 characters)')
      .option('--json', 'print {keyId, name, roles, status, suspendedAt, alreadySuspended, ack}')
      .addHelpText(
        'after',
        '\nA suspended key is refused with 401 "API key suspended" by every Bridge; `stk apikey resume` restores it\nwith the same secret. Suspending a suspended key changes nothing (alreadySuspended: true); a revoked key cannot be suspended.',
      ),
    'stk apikey suspend server --project shop --env prod --reason "key seen in a public gist"',
    'stk apikey suspend --project shop --env prod --key-id server --json',
  ).action(async (keyArg: string | undefined, _o, cmd: Command) => {
    const o = opts<Scope & { keyId?: string; reason?: string }>(cmd);
    const key = oneOf(keyArg, o.keyId, '--key-id', 'the key (id or name)');
    const { project, env, base } = scope(cmd);
    const r = await client(cmd).post<SuspendedKey>(`${base}/${enc(key)}/suspend`, o.reason === undefined ? {} : { reason: o.reason });
    if (o.json) printJson(r);
    else if (r.alreadySuspended) success(`API key ${keyLine(r)} was already suspended${r.suspendedAt ? ` (since ${r.suspendedAt})` : ''}; nothing changed`);
    else
      success(`Suspended API key ${keyLine(r)} in ${project}/${env}; status: suspended (undo: stk apikey resume ${r.name} --project ${project} --env ${env})`);
    checkAck(r.ack, `suspended ${keyLine(r)}`);
  });

  example(
    apikey
      .command('resume')
      .description('undo `apikey suspend`: the same secret works again once every connected Bridge applied it')
      .argument('[key]', 'the key id or name (or --key-id)')
      .option(...PROJECT_OPT)
      .option(...ENV_OPT)
      .option('--key-id <idOrName>', 'the key id, or its name')
      .option('--json', 'print {keyId, name, roles, status, alreadyActive, ack}'),
    'stk apikey resume server --project shop --env prod',
  ).action(async (keyArg: string | undefined, _o, cmd: Command) => {
    const o = opts<Scope & { keyId?: string }>(cmd);
    const key = oneOf(keyArg, o.keyId, '--key-id', 'the key (id or name)');
    const { project, env, base } = scope(cmd);
    const r = await client(cmd).post<ResumedKey>(`${base}/${enc(key)}/resume`, {});
    if (o.json) printJson(r);
    else if (r.alreadyActive) success(`API key ${keyLine(r)} was not suspended; nothing changed (status: ${r.status})`);
    else success(`Resumed API key ${keyLine(r)} in ${project}/${env}; status: ${r.status}`);
    checkAck(r.ack, `resumed ${keyLine(r)}`);
  });

  example(
    apikey
      .command('rotate')
      .description('new secret for the same key id, name, roles and history; prints the new key ONCE')
      .argument('[key]', 'the key id or name (or --key-id)')
      .option(...PROJECT_OPT)
      .option(...ENV_OPT)
      .option('--key-id <idOrName>', 'the key id, or its name')
      .option(
        '--grace <duration|auto>',
        'how long the previous secret keeps working, 0 to 7d, or auto: until it has been unused for 15 min (STK_APIKEY_GRACE_QUIET on the Hub), at most 7d (default: 0, it stops now)',
      )
      .option('--json', 'print {keyId, name, roles, rotatedAt, previousSecretValidUntil, autoEnd, apiKey, ack}')
      .option('-q, --quiet', 'print only the new key on stdout')
      .addHelpText(
        'after',
        '\nDuring a grace period Bridges count requests per secret: `stk apikey show` says how many still use the\nprevious secret and from which addresses. `stk apikey end-grace` ends it at once.',
      ),
    'stk apikey rotate --project shop --env prod --key-id server --grace 1h',
    'stk apikey rotate server --project shop --env prod --grace auto',
  ).action(async (keyArg: string | undefined, _o, cmd: Command) => {
    const o = opts<Scope & { keyId?: string; grace?: string; quiet?: boolean }>(cmd);
    const key = oneOf(keyArg, o.keyId, '--key-id', 'the key (id or name)');
    if (o.json && o.quiet) throw new UsageError('pass --json or --quiet, not both');
    const grace = graceFlag(o.grace);
    const { project, env, base } = scope(cmd);
    const r = await client(cmd).post<RotatedKey>(`${base}/${enc(key)}/rotate`, { grace });
    if (o.json) printJson(r);
    else if (o.quiet) process.stdout.write(`${r.apiKey}\n`);
    else {
      process.stdout.write(`API Key (store securely): ${r.apiKey}\nKey ID: ${r.keyId}\n`);
      const prev = !r.previousSecretValidUntil
        ? 'stopped working now'
        : r.autoEnd
          ? `works until it has had no request for ${secs(r.autoEnd.quietSeconds)}, at most until ${r.previousSecretValidUntil} (stk apikey show ${r.name} follows it)`
          : `works until ${r.previousSecretValidUntil}`;
      process.stderr.write(`✓ Rotated API key ${keyLine(r)} in ${project}/${env}; the previous secret ${prev}\n`);
      warn('This key is shown only once: the Hub keeps a hash and cannot show it again.');
    }
    checkAck(r.ack, `rotated ${keyLine(r)}`);
  });

  example(
    apikey
      .command('end-grace')
      .description("end a rotation's grace period now: returns once every connected Bridge refuses the previous secret")
      .argument('[key]', 'the key id or name (or --key-id)')
      .option(...PROJECT_OPT)
      .option(...ENV_OPT)
      .option('--key-id <idOrName>', 'the key id, or its name')
      .option('--json', 'print {keyId, name, roles, alreadyEnded, ack}'),
    'stk apikey end-grace server --project shop --env prod',
  ).action(async (keyArg: string | undefined, _o, cmd: Command) => {
    const o = opts<Scope & { keyId?: string }>(cmd);
    const key = oneOf(keyArg, o.keyId, '--key-id', 'the key (id or name)');
    const { project, env, base } = scope(cmd);
    const r = await client(cmd).post<GraceEnded>(`${base}/${enc(key)}/end-grace`, {});
    if (o.json) printJson(r);
    else if (r.alreadyEnded) success(`API key ${keyLine(r)} has no grace period in progress; nothing changed`);
    else success(`Ended the grace period of API key ${keyLine(r)} in ${project}/${env}: only its current secret works now`);
    checkAck(r.ack, `ended the grace period of ${keyLine(r)}`);
  });

  example(
    apikey
      .command('update')
      .description("change a key's roles, expiry or rate limit; returns once every connected Bridge applied it")
      .argument('[key]', 'the key id or name (or --key-id)')
      .option(...PROJECT_OPT)
      .option(...ENV_OPT)
      .option('--key-id <idOrName>', 'the key id, or its name')
      .option('--roles <roles>', 'replace the roles (comma-separated)')
      .option('--expires-in <duration>', 'new expiry from now, e.g. 30d')
      .option('--expires-at <iso>', 'new expiry')
      .option('--no-expiry', 'remove the expiry')
      .option('--rate-limit <n/min>', 'new per-key limit')
      .option('--allow-ip <list>', 'replace the IP allowlist: IPv4/IPv6 addresses or CIDR ranges, comma-separated, at most 100')
      .option('--no-allow-ip', 'remove the IP allowlist (any address again)')
      .option('--json', 'print the key'),
    'stk apikey update --project shop --env prod --key-id server --roles reader',
    'stk apikey update --project shop --env prod --key-id ci --expires-in 7d',
    'stk apikey update office --project shop --env prod --allow-ip 198.51.100.7,2001:db8::/32',
    'stk apikey update office --project shop --env prod --no-allow-ip',
  ).action(async (keyArg: string | undefined, _o, cmd: Command) => {
    const o = opts<
      Scope & { keyId?: string; roles?: string; expiresIn?: string; expiresAt?: string; expiry?: boolean; rateLimit?: string; allowIp?: string | false }
    >(cmd);
    const key = oneOf(keyArg, o.keyId, '--key-id', 'the key (id or name)');
    durationFlag('--expires-in', o.expiresIn);
    timestampFlag('--expires-at', o.expiresAt);
    const body: Record<string, unknown> = {};
    if (o.roles !== undefined) body.roles = o.roles.split(',');
    if (o.expiresIn) body.expiresIn = o.expiresIn;
    if (o.expiresAt) body.expiresAt = o.expiresAt;
    if (o.expiry === false) {
      if (o.expiresIn || o.expiresAt) throw new UsageError('--no-expiry cannot be combined with --expires-in/--expires-at');
      body.expiresAt = null;
    }
    if (o.rateLimit !== undefined) body.rateLimitPerMin = parseRateLimitFlag(o.rateLimit);
    if (o.allowIp === false) body.allowedIps = null;
    else if (typeof o.allowIp === 'string') body.allowedIps = o.allowIp.split(',');
    if (Object.keys(body).length === 0)
      throw new UsageError('nothing to change: pass --roles, --expires-in, --expires-at, --no-expiry, --rate-limit, --allow-ip or --no-allow-ip');
    const { project, env, base } = scope(cmd);
    const r = await client(cmd).patch<ApiKeyView & { ack: AckResult }>(`${base}/${enc(key)}`, body);
    if (o.json) printJson(r);
    else
      success(
        `Updated API key ${keyLine(r)} in ${project}/${env}: roles ${r.roles.join(', ')}, expires ${r.expiresAt ?? 'never'}, rate limit ${r.rateLimitPerMin ?? 'default'}/min, allowed from ${r.allowedIps ? r.allowedIps.join(', ') : 'any address'}`,
      );
    checkAck(r.ack, `updated ${keyLine(r)}`);
  });

  registerScanCommand(apikey);
}
