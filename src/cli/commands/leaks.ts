import type { Command } from 'commander';
import { enc } from '../client.js';
import { resolveProject } from '../config.js';
import { UsageError } from '../errors.js';
import { printJson, printTable, success, warn, when } from '../output.js';
import { client, example, oneOf, opts } from './common.js';
import { LEAK_POLICIES, type CreatedLeakToken, type LeakPolicy, type LeakPolicyView, type LeakTokenView } from '../../protocol/api/leaks.js';

const POLICY_TEXT: Record<LeakPolicy, string> = {
  notify: 'a reported key is audited (apikey.leaked) and keeps working',
  suspend: 'a reported key is suspended (reversible) and audited',
  revoke: 'a reported key is revoked (irreversible) and audited',
};

export function registerLeakCommands(program: Command): void {
  const leaks = example(
    program.command('leaks').description('leak response: tokens for secret scanners (POST /api/leaks) and what a reported key triggers per project'),
    'stk leaks token create github-scanner',
    'stk leaks policy set revoke --project shop',
  );

  const token = leaks.command('token').description('leak-report tokens: the credential a secret scanner sends with its reports (org admin)');
  example(
    token
      .command('create')
      .description('create a token; prints it ONCE (only its hash is stored)')
      .argument('[name]', 'a name for the scanner it is for (or --name)')
      .option('--name <name>', "1-63 lowercase letters, digits, '_' or '-'")
      .option('--json', 'print {id, name, status, createdAt, createdBy, lastUsedAt, revokedAt, token}')
      .option('-q, --quiet', 'print only the token on stdout'),
    'stk leaks token create github-scanner',
    'TOKEN=$(stk leaks token create ci-scanner -q)',
  ).action(async (nameArg: string | undefined, _o, cmd: Command) => {
    const o = opts<{ name?: string; quiet?: boolean }>(cmd);
    const name = oneOf(nameArg, o.name, '--name', 'the token name');
    if (o.json && o.quiet) throw new UsageError('pass --json or --quiet, not both');
    const r = await client(cmd).post<CreatedLeakToken>('/api/leaks/tokens', { name });
    if (o.json) return printJson(r);
    if (o.quiet) return void process.stdout.write(`${r.token}\n`);
    process.stdout.write(`Leak-report token (store securely): ${r.token}\n`);
    success(`Created leak-report token ${JSON.stringify(r.name)} (id ${r.id}): scanners send it as "Authorization: Bearer <token>" to POST /api/leaks`);
    warn('This token is shown only once: the Hub keeps a hash and cannot show it again.');
  });

  example(
    token
      .command('list')
      .description('the tokens: id, name, status, created, last used (never the token)')
      .option('--json', 'print [{id, name, status, createdAt, createdBy, lastUsedAt, revokedAt}]'),
    'stk leaks token list',
  ).action(async (_o, cmd: Command) => {
    const r = await client(cmd).get<{ items: LeakTokenView[] }>('/api/leaks/tokens');
    if (opts(cmd).json) return printJson(r.items);
    printTable(
      r.items,
      [
        { header: 'ID', get: (t) => t.id },
        { header: 'NAME', get: (t) => t.name },
        { header: 'STATUS', get: (t) => t.status },
        { header: 'CREATED', get: (t) => when(t.createdAt) },
        { header: 'LAST USED', get: (t) => when(t.lastUsedAt) },
      ],
      { empty: 'No leak-report tokens (create one with: stk leaks token create <name>)' },
    );
  });

  example(
    token
      .command('revoke')
      .description('revoke a token: the next report sent with it gets 401')
      .argument('[token]', 'the token id or name (or --name)')
      .option('--name <idOrName>', 'the token id or name')
      .option('--json', 'print the token'),
    'stk leaks token revoke github-scanner',
  ).action(async (arg: string | undefined, _o, cmd: Command) => {
    const o = opts<{ name?: string }>(cmd);
    const t = oneOf(arg, o.name, '--name', 'the token (id or name)');
    const r = await client(cmd).post<LeakTokenView & { alreadyRevoked: boolean }>(`/api/leaks/tokens/${enc(t)}/revoke`, {});
    if (o.json) return printJson(r);
    success(r.alreadyRevoked ? `Leak-report token ${JSON.stringify(r.name)} was already revoked` : `Revoked leak-report token ${JSON.stringify(r.name)}`);
  });

  const policy = leaks.command('policy').description('what a leaked key reported to POST /api/leaks triggers in a project (project admin)');
  const PROJECT_OPT = ['--project <project>', 'project (default: STK_PROJECT or .stk/context.json)'] as const;
  const print = (p: LeakPolicyView, json: boolean | undefined) => {
    if (json) return printJson(p);
    process.stdout.write(`${p.project}: ${p.policy}${p.isDefault ? ' (the default)' : ''}: ${POLICY_TEXT[p.policy]}\n`);
  };
  example(
    policy
      .command('show')
      .description("the project's leak policy")
      .option(...PROJECT_OPT)
      .option('--json', 'print {project, policy, isDefault, updatedAt}'),
    'stk leaks policy show --project shop',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ project?: string }>(cmd);
    const project = resolveProject(o.project);
    print(await client(cmd).get<LeakPolicyView>(`/api/projects/${enc(project)}/leak-policy`), o.json);
  });
  example(
    policy
      .command('set')
      .description(`set it: ${LEAK_POLICIES.join(', ')} (default suspend)`)
      .argument('<policy>', LEAK_POLICIES.join(' | '))
      .option(...PROJECT_OPT)
      .option('--json', 'print {project, policy, isDefault, updatedAt}'),
    'stk leaks policy set revoke --project shop',
    'stk leaks policy set notify --project shop',
  ).action(async (value: string, _o, cmd: Command) => {
    const o = opts<{ project?: string }>(cmd);
    if (!(LEAK_POLICIES as readonly string[]).includes(value))
      throw new UsageError(`invalid policy ${JSON.stringify(value.slice(0, 40))}: use ${LEAK_POLICIES.join(', ')}`);
    const project = resolveProject(o.project);
    print(await client(cmd).put<LeakPolicyView>(`/api/projects/${enc(project)}/leak-policy`, { policy: value }), o.json);
  });
}
