import { Option, type Command } from 'commander';
import { clearContext, findContextFile, readContext, writeContext } from '../config.js';
import { UsageError } from '../errors.js';
import { printJson, success } from '../output.js';
import { example, opts } from './common.js';

export function registerContextCommands(program: Command): void {
  const ctx = program.command('context').description('repo defaults in .stk/context.json so --project/--env can be left out (flags win)');
  example(
    ctx
      .command('set')
      .description('write .stk/context.json in the current directory')
      .option('--project <project>', 'default project')
      .option('--env <env>', 'default env')
      .option('--hub <url>', 'Hub URL for this directory')
      .addOption(new Option('--hub-url <url>', 'same as --hub (earlier spelling)').hideHelp()),
    'stk context set --project shop --env dev',
    'stk context set --hub http://127.0.0.1:4000',
  ).action((_o, cmd: Command) => {
    const o = opts<{ project?: string; env?: string; hubUrl?: string }>(cmd);
    if (!o.project && !o.env && !o.hubUrl && !o.hub) throw new UsageError('nothing to set: pass --project, --env or --hub');
    const cur = readContext();
    const next = {
      ...cur,
      ...(o.hubUrl || o.hub ? { hubUrl: o.hubUrl ?? o.hub } : {}),
      ...(o.project ? { project: o.project } : {}),
      ...(o.env ? { env: o.env } : {}),
    };
    const p = writeContext(next);
    success(`Context saved to ${p}`);
  });
  example(ctx.command('show').description('print the current context').option('--json'), 'stk context show').action((_o, cmd: Command) => {
    const c = readContext();
    if (opts(cmd).json) return printJson(c);
    const file = findContextFile();
    if (!file) return void process.stdout.write('no context (run stk context set)\n');
    process.stdout.write(`file: ${file}\nhubUrl: ${c.hubUrl ?? ''}\nproject: ${c.project ?? ''}\nenv: ${c.env ?? ''}\n`);
  });
  example(ctx.command('clear').description('remove .stk/context.json'), 'stk context clear').action(() => {
    const p = clearContext();
    success(p ? `Removed ${p}` : 'No context file');
  });
}
