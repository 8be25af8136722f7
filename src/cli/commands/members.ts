import type { Command } from 'commander';
import { enc } from '../client.js';
import { resolveProject } from '../config.js';
import { printJson, printTable, success, terminalSafe, warn, when } from '../output.js';
import { getPassword } from '../prompt.js';
import { client, example, opts } from './common.js';
import type { AcceptedInvite, InviteView, MemberView } from '../../protocol/api/hub.js';
import { inviteAcceptCommand, shellWord, STK_RUN } from '../../common/shell-quote.js';

const projectOpt = (c: Command) => c.option('--project <project>', 'project (default: STK_PROJECT or .stk/context.json)');

function printInvite(inv: InviteView, where: string, hubUrl: string, json?: boolean) {
  if (json) return printJson(inv);
  process.stdout.write(`Invite code: ${inv.inviteCode}\n`);
  success(`Invited ${inv.email} ${where} as ${inv.role} (expires ${inv.expiresAt})`);
  process.stdout.write(
    terminalSafe(`${inv.email} accepts by running this one line in a checkout of the project (it asks for a password; the code works once):`) +
      `\n  ${terminalSafe(inviteAcceptCommand(hubUrl, inv.email, inv.inviteCode), false)}\n`,
  );
  warn('This code will not be shown again.');
}

function printMembers(items: MemberView[], json?: boolean, withSource = false) {
  if (json) return printJson(items);
  printTable(
    items,
    [
      { header: 'EMAIL', get: (m) => m.email },
      { header: 'ROLE', get: (m) => m.role },
      { header: 'STATUS', get: (m) => m.status },
      ...(withSource ? [{ header: 'VIA', get: (m: MemberView) => m.source }] : []),
      { header: 'SINCE', get: (m) => when(m.createdAt) },
    ],
    { empty: 'No members' },
  );
}

/** `stk org …`, `stk project invite|members …` and `stk invite accept`. */
export function registerMemberCommands(program: Command): void {
  // ---- org scope
  const org = example(
    program.command('org').description('the organisation: invite operators, manage org roles (owner|admin|member)'),
    'stk org invite alice@example.com --role admin',
    'stk org members list',
  );
  example(
    org
      .command('invite')
      .description('invite an operator to the org (needs org:admin; owners invite owners); prints a one-time code')
      .argument('<email>')
      .requiredOption('--role <role>', 'owner | admin | member')
      .option('--json', 'print {email, role, inviteCode, expiresAt}'),
    'stk org invite alice@example.com --role admin',
  ).action(async (email: string, _o, cmd: Command) => {
    const o = opts<{ role: string }>(cmd);
    const c = client(cmd);
    const inv = await c.post<InviteView>('/api/org/invites', { email, role: o.role });
    printInvite(inv, 'to the org', c.hubUrl, o.json);
  });

  const orgMembers = example(
    org.command('members').description('org members and their roles'),
    'stk org members list',
    'stk org members set-role alice@example.com --role member',
  );
  example(
    orgMembers.command('list').description('list org members (needs org:admin)').option('--json', 'print [{email, role, status, createdAt}]'),
    'stk org members list',
  ).action(async (_o, cmd: Command) => {
    const r = await client(cmd).get<{ items: MemberView[] }>('/api/org/members');
    printMembers(r.items, opts(cmd).json);
  });
  example(
    orgMembers
      .command('set-role')
      .description("change an org member's role (takes effect on their next request)")
      .argument('<email>')
      .requiredOption('--role <role>', 'owner | admin | member')
      .option('--json', 'print the member'),
    'stk org members set-role alice@example.com --role member',
  ).action(async (email: string, _o, cmd: Command) => {
    const o = opts<{ role: string }>(cmd);
    const m = await client(cmd).put<MemberView>(`/api/org/members/${enc(email)}`, { role: o.role });
    if (o.json) return printJson(m);
    success(`${m.email} is now org ${m.role}`);
  });
  const removeFromOrg = async (email: string, _o: unknown, cmd: Command) => {
    await client(cmd).delete(`/api/org/members/${enc(email)}`);
    success(`Removed ${email} from the org`);
  };
  example(
    orgMembers.command('remove').description('remove an operator from the org and all its projects').argument('<email>'),
    'stk org members remove alice@example.com',
  ).action(removeFromOrg);
  // the upstream spelling, kept beside ours (docs/compat.md)
  example(
    org
      .command('remove')
      .description('alias of `stk org members remove` (the upstream spelling): remove an operator from the org and all its projects')
      .argument('<email>'),
    'stk org remove alice@example.com',
  ).action(removeFromOrg);

  // ---- project scope (under the `project` group created by projects.ts)
  const project = program.commands.find((c) => c.name() === 'project') ?? program.command('project').description('projects');
  example(
    projectOpt(project.command('invite').description('invite an operator to a project (needs project:admin); prints a one-time code'))
      .argument('<email>')
      .requiredOption('--role <role>', 'admin | deployer | viewer')
      .option('--json', 'print {email, role, inviteCode, expiresAt}'),
    'stk project invite bob@example.com --project shop --role deployer',
  ).action(async (email: string, _o, cmd: Command) => {
    const o = opts<{ role: string; project?: string }>(cmd);
    const p = resolveProject(o.project);
    const c = client(cmd);
    const inv = await c.post<InviteView>(`/api/projects/${enc(p)}/invites`, { email, role: o.role });
    printInvite(inv, `to project ${p}`, c.hubUrl, o.json);
  });

  const pm = example(
    project.command('members').description("a project's members (explicit roles, and org owners/admins who inherit admin)"),
    'stk project members list --project shop',
    'stk project members set-role bob@example.com --project shop --role viewer',
  );
  example(
    projectOpt(pm.command('list').description('list project members (needs project:admin)')).option(
      '--json',
      'print [{email, role, status, createdAt, source}]',
    ),
    'stk project members list --project shop',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ project?: string }>(cmd);
    const p = resolveProject(o.project);
    const r = await client(cmd).get<{ items: MemberView[] }>(`/api/projects/${enc(p)}/members`);
    printMembers(r.items, o.json, true);
  });
  example(
    projectOpt(pm.command('set-role').description("set an operator's explicit role on the project (overrides an inherited org role, even downwards)"))
      .argument('<email>')
      .requiredOption('--role <role>', 'admin | deployer | viewer')
      .option('--json', 'print the member'),
    'stk project members set-role bob@example.com --project shop --role viewer',
  ).action(async (email: string, _o, cmd: Command) => {
    const o = opts<{ role: string; project?: string }>(cmd);
    const p = resolveProject(o.project);
    const m = await client(cmd).put<MemberView>(`/api/projects/${enc(p)}/members/${enc(email)}`, { role: o.role });
    if (o.json) return printJson(m);
    success(`${m.email} is now ${m.role} on project ${p}${m.status === 'pending' ? ' (invite not accepted yet)' : ''}`);
  });
  const removeFromProject = async (email: string, _o: unknown, cmd: Command) => {
    const o = opts<{ project?: string }>(cmd);
    const p = resolveProject(o.project);
    await client(cmd).delete(`/api/projects/${enc(p)}/members/${enc(email)}`);
    success(`Removed ${email} from project ${p}`);
  };
  example(
    projectOpt(pm.command('remove').description("remove an operator's explicit role on the project")).argument('<email>'),
    'stk project members remove bob@example.com --project shop',
  ).action(removeFromProject);
  example(
    projectOpt(
      project.command('remove').description("alias of `stk project members remove` (the upstream spelling): remove an operator's explicit role on the project"),
    ).argument('<email>'),
    'stk project remove bob@example.com --project shop',
  ).action(removeFromProject);

  // ---- acceptance
  const invite = example(program.command('invite').description('accept an invite you received'), 'stk invite accept --email bob@example.com --code stki_…');
  example(
    invite
      .command('accept')
      .description('accept an invite: new operators choose their password, existing ones confirm theirs')
      .requiredOption('--email <email>', 'the invited email')
      .requiredOption('--code <code>', 'the invite code')
      .option('--password-stdin', 'read the password from stdin')
      .option('--json', 'print {email}'),
    'stk invite accept --email bob@example.com --code stki_…',
    'echo "$NEW_PASSWORD" | stk invite accept --email bob@example.com --code "$CODE" --password-stdin',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ email: string; code: string; passwordStdin?: boolean }>(cmd);
    const password = await getPassword(o.passwordStdin, 'Password: ');
    const c = client(cmd, true);
    const r = await c.post<AcceptedInvite>('/api/invites/accept', { email: o.email, code: o.code, password });
    if (o.json) return printJson(r);
    success(`Invite accepted for ${r.email}; log in with: ${STK_RUN} login --hub ${shellWord(c.hubUrl)} --email ${shellWord(r.email)}`);
  });
}
