import type { Command } from 'commander';
import { enc } from '../client.js';
import { resolveEnv, resolveProject } from '../config.js';
import { CliError } from '../errors.js';
import { printJson, printTable, success, terminalSafe, when } from '../output.js';
import { client, example, opts } from './common.js';
import type { RecordedSnapshot, SchemaChange, SchemaDrift } from '../../protocol/api/hub.js';

type Target = { project?: string; env?: string };

const withTarget = (c: Command) =>
  c.option('--project <project>', 'project (default: STK_PROJECT or .stk/context.json)').option('--env <env>', 'env (default: STK_ENV or .stk/context.json)');

const MARK: Record<SchemaChange['change'], string> = { added: '+', removed: '-', changed: '~' };

function printChanges(changes: SchemaChange[]): void {
  for (const c of changes) process.stdout.write(`  ${MARK[c.change]} ${terminalSafe(`${c.connection}: ${c.description}`, false)}\n`);
}

const plural = (n: number, w: string) => `${n} ${w}${n === 1 ? '' : 's'}`;

/** `stk schema snapshot|drift`: the env's live schema, recorded on the Hub and compared later. */
export function registerSchemaCommands(program: Command): void {
  const schema = example(
    program.command('schema').description("the live schema of an env's databases: record a snapshot, then check for drift"),
    'stk schema snapshot --project shop --env prod',
    'stk schema drift --project shop --env prod',
  );

  example(
    withTarget(
      schema
        .command('snapshot')
        .description('record the live schema of every connection of the env (tables, columns, keys, indexes) for drift checks (needs project:deployer)'),
    ).option('--json', 'print {snapshotId, project, env, takenAt, takenBy, releaseId, summary, connections, previousSnapshotId, changes}'),
    'stk schema snapshot --project shop --env prod',
    'stk schema snapshot --project shop --env prod --json',
  ).action(async (_o, cmd: Command) => {
    const o = opts<Target>(cmd);
    const p = resolveProject(o.project);
    const e = resolveEnv(o.env);
    const s = await client(cmd).post<RecordedSnapshot>(`/api/projects/${enc(p)}/envs/${enc(e)}/schema/snapshot`);
    if (o.json) return printJson(s);
    const rows = s.connections.flatMap((c) => c.tables.map((t) => ({ connection: c.name, t })));
    printTable(
      rows,
      [
        { header: 'CONNECTION', get: (r) => r.connection },
        { header: 'TABLE', get: (r) => r.t.name },
        { header: 'COLUMNS', get: (r) => r.t.columns.length },
        { header: 'MANAGED', get: (r) => (r.t.managed ? 'yes' : 'no') },
      ],
      { empty: 'No tables' },
    );
    const { connections, tables, columns } = s.summary;
    success(
      `Recorded snapshot ${s.snapshotId} of ${s.project}/${s.env}: ${plural(connections, 'connection')}, ${plural(tables, 'table')}, ${plural(columns, 'column')}${s.releaseId ? ` (release ${s.releaseId} current)` : ''}`,
    );
    if (!s.previousSnapshotId) process.stdout.write(`First snapshot of ${s.project}/${s.env}: 'stk schema drift' compares the live schema with it.\n`);
    else if (s.changes.length === 0) process.stdout.write(`No changes since the previous snapshot ${s.previousSnapshotId}.\n`);
    else {
      process.stdout.write(`Changes since the previous snapshot ${s.previousSnapshotId}:\n`);
      printChanges(s.changes);
    }
  });

  example(
    withTarget(schema.command('drift').description("compare the env's live schema with its latest snapshot; records nothing (needs project:deployer)"))
      .option('--exit-code', 'exit 1 when the live schema differs from the snapshot (like git diff --exit-code)')
      .option('--json', 'print {snapshotId, takenAt, releaseId, checkedAt, summary, changes}'),
    'stk schema drift --project shop --env prod',
    'stk schema drift --project shop --env prod --exit-code',
  ).action(async (_o, cmd: Command) => {
    const o = opts<Target & { exitCode?: boolean }>(cmd);
    const p = resolveProject(o.project);
    const e = resolveEnv(o.env);
    const d = await client(cmd).get<SchemaDrift>(`/api/projects/${enc(p)}/envs/${enc(e)}/schema/drift`);
    if (o.json) printJson(d);
    else if (d.changes.length === 0) success(`No drift in ${p}/${e}: the live schema matches snapshot ${d.snapshotId} (taken ${when(d.takenAt)})`);
    else {
      process.stdout.write(`${p}/${e} differs from snapshot ${d.snapshotId} (taken ${when(d.takenAt)}) in ${plural(d.changes.length, 'way')}:\n`);
      printChanges(d.changes);
    }
    if (o.exitCode && d.changes.length > 0)
      throw new CliError(`the live schema of ${p}/${e} drifted from snapshot ${d.snapshotId} (${plural(d.changes.length, 'change')})`);
  });
}
