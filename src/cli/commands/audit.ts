import type { Command } from 'commander';
import { readContext } from '../config.js';
import { printJson, printTable, when } from '../output.js';
import { client, example, opts } from './common.js';
import type { AuditItem } from '../../protocol/api/hub.js';

/** `stk audit list`: org admins read everything, project admins their project. */
export function registerAuditCommands(program: Command): void {
  const audit = example(program.command('audit').description('the audit log of operator actions'), 'stk audit list --project shop');
  example(
    audit
      .command('list')
      .description('audit entries, newest first')
      .option('--project <project>', 'only this project (default: STK_PROJECT or .stk/context.json; required for project admins)')
      .option('--env <env>', 'only this env')
      .option('--action <action>', 'only this action (e.g. apikey.create) or domain (apikey.*)')
      .option('--since <when>', 'ISO time or a duration back from now (1h, 7d)')
      .option('--limit <n>', 'at most n entries (1-1000)', '100')
      .option('--json', 'print [{id, ts, actor, actorType, action, project, env, requestId, ip, detail}]'),
    'stk audit list --project shop --since 1h',
    'stk audit list --project shop --action connection.* --json',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ project?: string; env?: string; action?: string; since?: string; limit?: string }>(cmd);
    const project = o.project ?? process.env.STK_PROJECT ?? readContext().project;
    const r = await client(cmd).get<{ items: AuditItem[] }>('/api/audit', { project, env: o.env, action: o.action, since: o.since, limit: o.limit });
    if (o.json) return printJson(r.items);
    printTable(
      r.items,
      [
        { header: 'TIME', get: (a) => when(a.ts) },
        { header: 'ACTOR', get: (a) => a.actor ?? a.actorType },
        { header: 'ACTION', get: (a) => a.action },
        { header: 'PROJECT', get: (a) => a.project ?? '-' },
        { header: 'ENV', get: (a) => a.env ?? '-' },
        { header: 'DETAIL', get: (a) => JSON.stringify(a.detail) },
      ],
      { empty: 'No audit entries match' },
    );
  });
}
