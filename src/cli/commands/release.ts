import type { Command } from 'commander';
import { enc } from '../client.js';
import { resolveEnv, resolveProject } from '../config.js';
import { UsageError } from '../errors.js';
import { bold, printJson, printTable, success, when } from '../output.js';
import { client, commandLine, example, opts } from './common.js';
import type { CurrentRelease, PromoteResponse, ReleaseDetail, ReleaseSummary, RollbackResponse } from '../../protocol/api/hub.js';
import { explainRefusal, printPlan } from './apply.js';
import { reportBridgeAck } from './ack.js';
import type { ReleaseIR } from '../../protocol/release.js';

const projectOpt = ['--project <project>', 'project (default: STK_PROJECT or .stk/context.json)'] as const;

export function registerReleaseCommands(program: Command): void {
  const release = example(
    program.command('release').description('releases: list, show, current, promote between envs, roll back'),
    'stk release list --project shop',
    'stk release promote --project shop --from dev --to prod',
  );

  example(
    release
      .command('list')
      .description('releases of a project, newest first, with the envs they are current in')
      .option(...projectOpt)
      .option('--limit <n>', 'how many (1-500)', '50')
      .option('--json', 'print [{releaseId, ref, createdAt, connections, tables, envs}]'),
    'stk release list --project shop',
    'stk release list --project shop --limit 5 --json',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ project?: string; limit: string }>(cmd);
    const p = resolveProject(o.project);
    if (!/^\d+$/.test(o.limit)) throw new UsageError('--limit must be a whole number');
    const r = await client(cmd).get<{ items: ReleaseSummary[] }>(`/api/projects/${enc(p)}/releases`, { limit: o.limit });
    if (o.json) return printJson(r.items);
    printTable(
      r.items,
      [
        { header: 'RELEASE ID', get: (x) => x.releaseId },
        { header: 'REF', get: (x) => x.ref ?? '-' },
        { header: 'TABLES', get: (x) => x.tables.length },
        { header: 'CURRENT IN', get: (x) => x.envs.join(',') || '-' },
        { header: 'CREATED', get: (x) => when(x.createdAt) },
      ],
      { empty: `No releases in ${p} yet (run: stk apply --project ${p} --env <env>)` },
    );
  });

  example(
    release
      .command('current')
      .description("the env's current release")
      .option(...projectOpt)
      .option('--env <env>', 'env (default: STK_ENV or .stk/context.json)')
      .option('--json', 'print {releaseId, ref, createdAt, connections, tables, envs, env, since}')
      .option('-q, --quiet', 'print only the release id (for FIRST=$(...))'),
    'stk release current --project shop --env prod',
    'FIRST=$(stk release current --project shop --env dev -q)',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ project?: string; env?: string; quiet?: boolean }>(cmd);
    const p = resolveProject(o.project);
    const e = resolveEnv(o.env);
    const r = await client(cmd).get<CurrentRelease>(`/api/projects/${enc(p)}/envs/${enc(e)}/releases/current`);
    if (o.json) return printJson(r);
    if (o.quiet) return void process.stdout.write(`${r.releaseId}\n`);
    process.stdout.write(
      `release:     ${r.releaseId}\nref:         ${r.ref ?? '-'}\ncreated:     ${when(r.createdAt)}\ncurrent in:  ${r.envs.join(', ')} (in ${e} since ${when(r.since)})\n` +
        `connections: ${r.connections.join(', ')}\ntables:      ${r.tables.join(', ')}\n`,
    );
  });

  example(
    release
      .command('show')
      .description('a release: tables, columns, relations and permission rules')
      .option(...projectOpt)
      .requiredOption('--release-id <id>', 'the release (see stk release list)')
      .option('--json', 'print the full release (schema and compiled permissions)'),
    'stk release show --project shop --release-id 01JBZ4K6Q8W3M0V5R7T9Y2X1AB',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ project?: string; releaseId: string }>(cmd);
    const p = resolveProject(o.project);
    const r = await client(cmd).get<ReleaseIR & ReleaseDetail>(`/api/projects/${enc(p)}/releases/${enc(o.releaseId)}`);
    if (o.json) return printJson(r);
    const out = (s: string) => process.stdout.write(s + '\n');
    out(`release:     ${r.releaseId}`);
    out(`ref:         ${r.ref ?? '-'}`);
    out(`created:     ${when(r.createdAt)}`);
    out(`current in:  ${r.envs.join(', ') || '-'}`);
    out(`connections: ${r.connections.join(', ')}`);
    for (const t of Object.values(r.schema.tables).sort((a, b) => a.name.localeCompare(b.name))) {
      out('');
      out(bold(`table ${t.name}`) + ` (connection ${t.connection}, id ${t.primaryKey.name} generate ${t.primaryKey.generate})`);
      for (const c of t.columns) {
        const flags = [
          c.nullable ? 'nullable' : 'not null',
          c.unique ? 'unique' : '',
          c.default ? `default ${c.default.kind === 'now' ? 'now' : JSON.stringify(c.default.value)}` : '',
          c.references ? `→ ${c.references.table}.${c.references.column} as ${c.references.as}` : '',
        ]
          .filter(Boolean)
          .join(', ');
        out(`  ${c.name}: ${c.type} (${flags})`);
      }
      const perms = r.permissions.tables[t.name] ?? {};
      for (const [op, rules] of Object.entries(perms)) {
        rules.forEach((rule, i) => {
          const cond = rule.condition ? ` if ${rule.condition.source}` : '';
          const cols = rule.columns ? ` columns ${rule.columns.join(',')}` : '';
          out(`  ${op} #${i + 1}: roles ${rule.roles.join(',')}${cond}${cols}`);
        });
      }
      if (Object.keys(perms).length === 0) out('  (no permission rules: no access)');
    }
  });

  example(
    release
      .command('promote')
      .description("point env --to at env --from's current release (or --release-id), applying its schema to --to's databases first")
      .option(...projectOpt)
      .option('--from <env>', 'source env')
      .requiredOption('--to <env>', 'target env')
      .option('--release-id <id>', "promote this release instead of --from's current one")
      .option('--force', 'allow destructive schema steps in the target env')
      .option('--adopt', "let the schema apply manage declared tables that exist in the target env's databases but santokit did not create")
      .option('--dry-run', 'show the plan; change nothing')
      .option('--json', 'print {releaseId, from, to, previousReleaseId, moved, plan}'),
    'stk release promote --project shop --from dev --to prod',
    'stk release promote --project shop --to prod --release-id 01JBZ4K6Q8W3M0V5R7T9Y2X1AB',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ project?: string; from?: string; to: string; releaseId?: string; force?: boolean; adopt?: boolean; dryRun?: boolean }>(cmd);
    const p = resolveProject(o.project);
    if (!o.from && !o.releaseId) throw new UsageError('pass --from <env> or --release-id <id>');
    let r: PromoteResponse;
    try {
      r = await client(cmd).post<PromoteResponse>(`/api/projects/${enc(p)}/releases/promote`, {
        to: o.to,
        ...(o.from ? { from: o.from } : {}),
        ...(o.releaseId ? { releaseId: o.releaseId } : {}),
        force: Boolean(o.force),
        adopt: Boolean(o.adopt),
        dryRun: Boolean(o.dryRun),
      });
    } catch (e) {
      const again = (...more: string[]) =>
        commandLine(cmd, [
          'release',
          'promote',
          '--project',
          p,
          ...(o.from ? ['--from', o.from] : []),
          '--to',
          o.to,
          ...(o.releaseId ? ['--release-id', o.releaseId] : []),
          ...(o.adopt || more.includes('--adopt') ? ['--adopt'] : []),
          ...(o.force || more.includes('--force') ? ['--force'] : []),
        ]);
      explainRefusal(e, Boolean(o.json), again);
      throw e;
    }
    const { ack, ...res } = r;
    if (o.json) {
      reportBridgeAck(ack, `${p}/${r.to} now runs release ${r.releaseId}`, true);
      return printJson(res);
    }
    printPlan(r.plan, (s) => process.stdout.write(s), r.notes);
    if (r.dryRun) {
      process.stdout.write(`Dry run: would point ${p}/${r.to} at ${r.releaseId}; nothing was changed.\n`);
      return;
    }
    if (r.moved) success(`${p}/${r.to} now runs release ${r.releaseId}${r.previousReleaseId ? ` (was ${r.previousReleaseId})` : ''}`);
    else success(`${p}/${r.to} already runs release ${r.releaseId}`);
    reportBridgeAck(ack, `${p}/${r.to} now runs release ${r.releaseId}`);
  });

  example(
    release
      .command('rollback')
      .description('point an env back at an earlier release (pointer only: refused when that release no longer fits the live database)')
      .option(...projectOpt)
      .option('--env <env>', 'env (default: STK_ENV or .stk/context.json)')
      .requiredOption('--to-release-id <id>', 'the release to go back to')
      .option('--json', 'print {releaseId, env, previousReleaseId, moved}'),
    'stk release rollback --project shop --env prod --to-release-id 01JBZ4K6Q8W3M0V5R7T9Y2X1AB',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ project?: string; env?: string; toReleaseId: string }>(cmd);
    const p = resolveProject(o.project);
    const e = resolveEnv(o.env);
    const { ack, ...r } = await client(cmd).post<RollbackResponse>(`/api/projects/${enc(p)}/envs/${enc(e)}/rollback`, { releaseId: o.toReleaseId });
    reportBridgeAck(ack, `${p}/${r.env} runs release ${r.releaseId} again`, Boolean(o.json));
    if (o.json) return printJson(r);
    if (r.moved) success(`${p}/${r.env} rolled back to release ${r.releaseId}${r.previousReleaseId ? ` (was ${r.previousReleaseId})` : ''}`);
    else success(`${p}/${r.env} already runs release ${r.releaseId}`);
  });
}
