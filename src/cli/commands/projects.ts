import type { Command } from 'commander';
import { enc } from '../client.js';
import { resolveProject } from '../config.js';
import { printJson, printTable, success, when } from '../output.js';
import { client, example, oneOf, opts } from './common.js';
import type { EnvListItem, EnvView, ProjectListItem, ProjectView } from '../../protocol/api/hub.js';

/** `stk project create|list` and `stk env create|list`. Returns the `project` group (members.ts adds invite/members). */
export function registerProjectCommands(program: Command): Command {
  const project = example(
    program.command('project').description('projects: create, list, invite operators, manage members'),
    'stk project create shop',
    'stk project list',
    'stk project invite bob@example.com --project shop --role deployer',
  );

  example(
    project
      .command('create')
      .description('create a project (needs org:admin)')
      .argument('[name]', "1-63 lowercase letters, digits, '_' or '-' (or --name)")
      .option('--name <name>', 'the project name')
      .option('--json', 'print {name, createdAt}'),
    'stk project create shop',
  ).action(async (nameArg: string | undefined, _o, cmd: Command) => {
    const name = oneOf(nameArg, opts<{ name?: string }>(cmd).name, '--name', 'the project name');
    const p = await client(cmd).post<ProjectView>('/api/projects', { name });
    if (opts(cmd).json) return printJson(p);
    success(`Created project ${p.name}`);
  });

  example(
    project.command('list').description('projects you can see, with your role on each').option('--json', 'print [{name, createdAt, role}]'),
    'stk project list',
    'stk project list --json',
  ).action(async (_o, cmd: Command) => {
    const r = await client(cmd).get<{ items: ProjectListItem[] }>('/api/projects');
    if (opts(cmd).json) return printJson(r.items);
    printTable(
      r.items,
      [
        { header: 'NAME', get: (p) => p.name },
        { header: 'ROLE', get: (p) => p.role },
        { header: 'CREATED', get: (p) => when(p.createdAt) },
      ],
      { empty: 'No projects yet (create one with: stk project create <name>)' },
    );
  });

  const env = example(
    program.command('env').description('envs of a project (dev, staging, prod, …)'),
    'stk env create --project shop dev',
    'stk env list --project shop',
  );

  example(
    env
      .command('create')
      .description('create an env in a project (needs project:admin)')
      .argument('[env]', "1-63 lowercase letters, digits, '_' or '-' (or --name)")
      .option('--project <project>', 'project (default: STK_PROJECT or .stk/context.json)')
      .option('--name <env>', 'the env name')
      .option('--json', 'print {name, createdAt}'),
    'stk env create --project shop dev',
  ).action(async (nameArg: string | undefined, _o, cmd: Command) => {
    const o = opts<{ project?: string; name?: string }>(cmd);
    const name = oneOf(nameArg, o.name, '--name', 'the env name');
    const p = resolveProject(o.project);
    const e = await client(cmd).post<EnvView>(`/api/projects/${enc(p)}/envs`, { name });
    if (o.json) return printJson(e);
    success(`Created env ${e.name} in project ${p}`);
  });

  example(
    env
      .command('list')
      .description("a project's envs and their current release")
      .option('--project <project>', 'project (default: STK_PROJECT or .stk/context.json)')
      .option('--json', 'print [{name, createdAt, currentReleaseId}]'),
    'stk env list --project shop',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ project?: string }>(cmd);
    const p = resolveProject(o.project);
    const r = await client(cmd).get<{ items: EnvListItem[] }>(`/api/projects/${enc(p)}/envs`);
    if (o.json) return printJson(r.items);
    printTable(
      r.items,
      [
        { header: 'NAME', get: (e) => e.name },
        { header: 'CURRENT RELEASE', get: (e) => e.currentReleaseId ?? '-' },
        { header: 'CREATED', get: (e) => when(e.createdAt) },
      ],
      { empty: `No envs in ${p} yet (create one with: stk env create --project ${p} <env>)` },
    );
  });

  return project;
}
