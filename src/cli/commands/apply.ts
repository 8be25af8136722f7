import type { Command } from 'commander';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { enc } from '../client.js';
import { resolveEnv, resolveProject } from '../config.js';
import { ApiError, CliError, UsageError } from '../errors.js';
import { bold, dim, printJson, red, terminalSafe, warn, yellow } from '../output.js';
import { client, commandLine, example, opts } from './common.js';
import type { ApplyResponse, PlanStep } from '../../protocol/api/hub.js';
import { reportBridgeAck } from './ack.js';

const STAGES = ['schema', 'permissions', 'release'];

/** `schema/*.yaml|yml` (sorted) and `config/permissions.yaml|yml` under `dir`, as the Hub expects them. */
export function readProjectFiles(dir: string): { schema: Array<{ file: string; content: string }>; permissions: string | null } {
  const root = resolve(dir);
  const schemaDir = join(root, 'schema');
  if (!existsSync(schemaDir) || !statSync(schemaDir).isDirectory()) {
    throw new CliError(`no schema/ directory in ${root}`, 1, 'put table definitions in schema/*.yaml, or pass --dir <project folder>');
  }
  const files = readdirSync(schemaDir)
    .filter((f) => /\.ya?ml$/i.test(f) && statSync(join(schemaDir, f)).isFile())
    .sort();
  if (files.length === 0) throw new CliError(`no .yaml files in ${schemaDir}`);
  const schema = files.map((f) => ({ file: `schema/${f}`, content: readFileSync(join(schemaDir, f), 'utf8') }));
  let permissions: string | null = null;
  for (const name of ['permissions.yaml', 'permissions.yml']) {
    const p = join(root, 'config', name);
    if (existsSync(p)) {
      permissions = readFileSync(p, 'utf8');
      break;
    }
  }
  return { schema, permissions };
}

/**
 * The plan as a readable list: one line per step, its SQL indented below; then the differences it
 * treats as equivalent and leaves as they are. Names in it can come from the database: printed cleaned.
 */
export function printPlan(plan: PlanStep[], out: (s: string) => void, notes: string[] = []): void {
  if (plan.length === 0) out('No schema changes.\n');
  else {
    const n = plan.filter((s) => s.destructive).length;
    out(bold(`Plan (${plan.length} step${plan.length > 1 ? 's' : ''}${n ? `, ${n} destructive` : ''}):`) + '\n');
    for (const s of plan) {
      const mark = s.destructive ? yellow('!') : '+';
      out(`  ${mark} ${terminalSafe(`${s.connection}: ${s.description}`, false)}${s.destructive ? yellow('  [destructive]') : ''}\n`);
      for (const line of terminalSafe(s.sql).split('\n')) out(dim(`      ${line}`) + '\n');
    }
  }
  if (notes.length) {
    out(bold('Kept as they are (equivalent to the schema):') + '\n');
    for (const x of notes) out(`  = ${terminalSafe(x, false)}\n`);
  }
}

export function registerApplyCommand(program: Command): void {
  example(
    program
      .command('apply')
      .description("validate schema/*.yaml and config/permissions.yaml, apply the DDL to the env's databases, and create (or reuse) the release")
      .option('--project <project>', 'project (default: STK_PROJECT or .stk/context.json)')
      .option('--env <env>', 'env (default: STK_ENV or .stk/context.json)')
      .option('--ref <ref>', 'a reference stored on the release, e.g. the commit SHA')
      .option('--dry-run', 'show the plan; change nothing')
      .option('--force', 'allow destructive steps (drop table/column/index, NOT NULL, type changes)')
      .option('--adopt', 'let apply manage declared tables that already exist but santokit did not create (without it they are never touched)')
      .option('--only <stages>', `comma-separated subset of ${STAGES.join(',')}`)
      .option('--dir <path>', 'project folder holding schema/ and config/', '.')
      .option('--json', 'print {releaseId, reused, ref, plan}'),
    'stk apply --project shop --env dev --ref $(git rev-parse HEAD)',
    'stk apply --project shop --env dev --dry-run',
    'stk apply --project shop --env prod --force',
    'stk apply --project shop --env dev --only schema --dir examples/basic',
    'stk apply --project shop --env dev --adopt --dry-run',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ project?: string; env?: string; ref?: string; dryRun?: boolean; force?: boolean; adopt?: boolean; only?: string; dir: string }>(cmd);
    const project = resolveProject(o.project);
    const env = resolveEnv(o.env);
    let only: string[] | undefined;
    if (o.only !== undefined) {
      only = o.only
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      const bad = only.filter((s) => !STAGES.includes(s));
      if (only.length === 0 || bad.length)
        throw new UsageError(`--only takes a comma-separated subset of ${STAGES.join(',')}${bad.length ? ` (unknown: ${bad.join(', ')})` : ''}`);
    }
    if (o.ref !== undefined && o.ref.trim() === '') throw new UsageError('--ref needs a value (e.g. a commit SHA)');
    const files = readProjectFiles(o.dir);
    if (files.permissions === null && !o.json) warn('no config/permissions.yaml: the release grants no access to any table');
    /** this apply again with more flags, as one line to paste */
    const again = (...more: string[]) =>
      commandLine(cmd, [
        'apply',
        '--project',
        project,
        '--env',
        env,
        ...(o.dir !== '.' ? ['--dir', o.dir] : []),
        ...(o.ref !== undefined ? ['--ref', o.ref] : []),
        ...(o.only !== undefined ? ['--only', o.only] : []),
        ...(o.adopt || more.includes('--adopt') ? ['--adopt'] : []),
        ...(o.force || more.includes('--force') ? ['--force'] : []),
      ]);
    let r: ApplyResponse;
    try {
      r = await client(cmd).post<ApplyResponse>(`/api/projects/${enc(project)}/envs/${enc(env)}/apply`, {
        schema: files.schema,
        permissions: files.permissions,
        ref: o.ref ?? null,
        dryRun: Boolean(o.dryRun),
        force: Boolean(o.force),
        adopt: Boolean(o.adopt),
        ...(only ? { only } : {}),
      });
    } catch (e) {
      explainRefusal(e, Boolean(o.json), again);
      throw e;
    }
    if (o.json) {
      reportBridgeAck(r.ack, `release ${r.releaseId} is current in ${project}/${env}`, true);
      return printJson({ releaseId: r.releaseId, reused: r.reused, ref: r.ref, plan: r.plan, notes: r.notes });
    }
    const out = (s: string) => process.stdout.write(s);
    out(`${project}/${env}\n`);
    if (!only || only.includes('schema')) printPlan(r.plan, out, r.notes);
    if (r.drift.length) {
      out(yellow('Drift (not fixed by this plan):') + '\n');
      for (const d of r.drift) out(`  - ${d}\n`);
    }
    if (r.dryRun) {
      out('Dry run: nothing was applied.\n');
      return;
    }
    if (r.releaseId) out(`Release: ${r.releaseId} (${r.reused ? 'reused' : 'new'})\n`);
    else out(`${only?.includes('schema') ? 'Schema applied' : 'Validated'}; no release created (--only without release).\n`);
    reportBridgeAck(r.ack, `release ${r.releaseId} is current in ${project}/${env}`);
  });
}

/**
 * A refused apply or promote carries the plan or the list of problems in the error details: show
 * them before the error line, and the command line that lets it through (`again(flags)`: the same
 * command with those flags, one line to copy and paste).
 */
export function explainRefusal(e: unknown, json: boolean, again: (...flags: string[]) => string): void {
  if (json || !(e instanceof ApiError) || !e.details || typeof e.details !== 'object') return;
  const d = e.details as { plan?: PlanStep[]; errors?: string[]; unsupported?: string[]; unmanaged?: string[]; notes?: string[] };
  const err = (s: string) => process.stderr.write(s);
  if (Array.isArray(d.errors) && d.errors.length > 5) {
    err(red('Problems:', process.stderr) + '\n');
    for (const x of d.errors) err(`  - ${x}\n`);
  }
  if (Array.isArray(d.unsupported) && d.unsupported.length) {
    err(red('Cannot apply:', process.stderr) + '\n');
    for (const x of d.unsupported) err(`  - ${x}\n`);
  }
  if (Array.isArray(d.plan) && e.status === 409) {
    printPlan(d.plan, err, Array.isArray(d.notes) ? d.notes : []);
    const destructive = d.plan.filter((s) => s.destructive).length;
    const steps = `${destructive} destructive step${destructive > 1 ? 's' : ''} (marked !)`;
    if (Array.isArray(d.unmanaged) && d.unmanaged.length) {
      const many = d.unmanaged.length > 1;
      err(
        yellow(
          `Nothing was applied: the plan touches table${many ? 's' : ''} santokit did not create (${terminalSafe(d.unmanaged.join(', '), false)}). ` +
            `To let apply manage ${many ? 'them' : 'it'} from now on, with the plan above${destructive ? ` and its ${steps}` : ''}, run:`,
          process.stderr,
        ) + `\n  ${terminalSafe(destructive ? again('--adopt', '--force') : again('--adopt'), false)}\n`,
      );
    } else {
      err(yellow(`Nothing was applied: the plan has ${steps}. To apply them, run:`, process.stderr) + `\n  ${terminalSafe(again('--force'), false)}\n`);
    }
  }
}
