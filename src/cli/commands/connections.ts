import type { Command } from 'commander';
import { enc } from '../client.js';
import { resolveEnv, resolveProject } from '../config.js';
import { UsageError } from '../errors.js';
import { printJson, printTable, success, when } from '../output.js';
import { canPrompt, promptSecret, readStdin } from '../prompt.js';
import { client, example, oneOf, opts } from './common.js';
import { reportBridgeAck } from './ack.js';
import type { ConnectionSet, ConnectionTest, ConnectionView } from '../../protocol/api/hub.js';

type Target = { project?: string; env?: string; name?: string };

const withTarget = (c: Command) =>
  c.option('--project <project>', 'project (default: STK_PROJECT or .stk/context.json)').option('--env <env>', 'env (default: STK_ENV or .stk/context.json)');

function basePath(o: { project?: string; env?: string }) {
  const project = resolveProject(o.project);
  const env = resolveEnv(o.env);
  return { project, env, path: `/api/projects/${enc(project)}/envs/${enc(env)}/connections` };
}

/** `stk connections set|test|list`: DB URLs go to the Hub encrypted and only ever come back masked. */
export function registerConnectionCommands(program: Command): void {
  const conns = example(
    program.command('connections').description("an env's database connections (needs project:admin)"),
    'printf %s "$DATABASE_URL" | stk connections set --project shop --env dev --db-url-stdin',
    'stk connections test --project shop --env dev',
    'stk connections list --project shop --env dev',
  );

  example(
    withTarget(conns.command('set').description('create or replace a connection; the URL is stored encrypted and never shown again'))
      .argument('[name]', 'connection name (or --name; default: main)')
      .option('--name <name>', 'connection name (default: main)')
      .option('--engine <engine>', 'database engine (only postgres)', 'postgres')
      .option('--db-url <url>', 'postgres:// URL (visible in shell history: prefer --db-url-stdin)')
      .option('--db-url-stdin', 'read the URL from stdin')
      .option('--json', 'print {name, engine, url (masked), createdAt, updatedAt}'),
    'stk connections set --project shop --env dev --name main --engine postgres --db-url postgres://app:secret@db:5432/shop',
    'printf %s "$DATABASE_URL" | stk connections set --project shop --env dev --db-url-stdin',
  ).action(async (nameArg: string | undefined, _o, cmd: Command) => {
    const o = opts<Target & { engine: string; dbUrl?: string; dbUrlStdin?: boolean }>(cmd);
    const name = nameArg === undefined && o.name === undefined ? 'main' : oneOf(nameArg, o.name, '--name', 'the connection name');
    if (o.dbUrl && o.dbUrlStdin) throw new UsageError('pass either --db-url or --db-url-stdin, not both');
    const { project, env, path } = basePath(o);
    let dbUrl = o.dbUrl;
    if (o.dbUrlStdin) dbUrl = (await readStdin()).trim();
    else if (!dbUrl) {
      if (!canPrompt()) throw new UsageError('no database URL: pass --db-url-stdin (or --db-url)');
      dbUrl = (await promptSecret('Database URL: ')).trim();
    }
    if (!dbUrl) throw new UsageError('the database URL is empty');
    const { ack, ...c } = await client(cmd).put<ConnectionSet>(`${path}/${enc(name)}`, { engine: o.engine, dbUrl });
    if (o.json) {
      reportBridgeAck(ack, `connection ${c.name} is saved`, true);
      return printJson(c);
    }
    success(`Saved connection ${c.name} in ${project}/${env}: ${c.url}`);
    reportBridgeAck(ack, `connection ${c.name} is saved`);
  });

  example(
    withTarget(conns.command('test').description('connect with the stored URL and run SELECT 1'))
      .argument('[name]', 'connection name (or --name; default: main)')
      .option('--name <name>', 'connection name (default: main)')
      .option('--json', 'print {ok, latencyMs}'),
    'stk connections test --project shop --env dev --name main',
  ).action(async (nameArg: string | undefined, _o, cmd: Command) => {
    const o = opts<Target>(cmd);
    const name = nameArg === undefined && o.name === undefined ? 'main' : oneOf(nameArg, o.name, '--name', 'the connection name');
    const { project, env, path } = basePath(o);
    const r = await client(cmd).post<ConnectionTest>(`${path}/${enc(name)}/test`);
    if (o.json) return printJson(r);
    success(`Connection ${name} in ${project}/${env} works (${r.latencyMs} ms)`);
  });

  example(
    withTarget(conns.command('list').description("an env's connections, password masked")).option(
      '--json',
      'print [{name, engine, url, createdAt, updatedAt}]',
    ),
    'stk connections list --project shop --env dev',
  ).action(async (_o, cmd: Command) => {
    const o = opts<Target>(cmd);
    const { project, env, path } = basePath(o);
    const r = await client(cmd).get<{ items: ConnectionView[] }>(path);
    if (o.json) return printJson(r.items);
    printTable(
      r.items,
      [
        { header: 'NAME', get: (c) => c.name },
        { header: 'ENGINE', get: (c) => c.engine },
        { header: 'URL', get: (c) => c.url },
        { header: 'UPDATED', get: (c) => when(c.updatedAt) },
      ],
      { empty: `No connections in ${project}/${env} (add one with: stk connections set --project ${project} --env ${env} --db-url-stdin)` },
    );
  });
}
