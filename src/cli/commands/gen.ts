import type { Command } from 'commander';
import { enc } from '../client.js';
import { resolveEnv, resolveProject } from '../config.js';
import { CliError } from '../errors.js';
import { terminalSafe } from '../output.js';
import { client, example, opts } from './common.js';
import type { CurrentRelease } from '../../protocol/api/hub.js';
import type { ReleaseIR } from '../../protocol/release.js';

/** `stk gen types`: TypeScript types for an env's current release, for `santokit/client`. */
export function registerGenCommands(program: Command): void {
  const gen = example(
    program.command('gen').description("generate code from an env's current release"),
    'stk gen types --project shop --env dev --out src/santokit.ts',
  );

  example(
    gen
      .command('types')
      .description("TypeScript types for the env's current release (tables, columns, relations, what each role may call) for santokit/client")
      .option('--project <project>', 'project (default: STK_PROJECT or .stk/context.json)')
      .option('--env <env>', 'env (default: STK_ENV or .stk/context.json)')
      .option('--out <file>', 'write to this file (default: stdout)'),
    'stk gen types --project shop --env dev --out src/santokit.ts',
    'stk gen types --project shop --env prod > src/santokit.ts',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ project?: string; env?: string; out?: string }>(cmd);
    const p = resolveProject(o.project);
    const e = resolveEnv(o.env);
    const hub = client(cmd);
    const current = await hub.get<CurrentRelease>(`/api/projects/${enc(p)}/envs/${enc(e)}/releases/current`);
    const release = await hub.get<ReleaseIR>(`/api/projects/${enc(p)}/releases/${enc(current.releaseId)}`);
    const { renderTypes } = await import('../typegen.js');
    const text = renderTypes(release, { project: p, env: e });
    if (!o.out) {
      process.stdout.write(text);
      return;
    }
    const { mkdirSync, renameSync, rmSync, writeFileSync } = await import('node:fs');
    const { dirname, resolve } = await import('node:path');
    const file = resolve(o.out);
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(tmp, text);
      renameSync(tmp, file);
    } catch (err) {
      rmSync(tmp, { force: true });
      throw new CliError(`cannot write ${o.out}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const tables = Object.keys(release.schema.tables).length;
    process.stderr.write(
      `✓ Wrote types for ${p}/${e} (release ${terminalSafe(release.releaseId, false)}, ${tables} table${tables === 1 ? '' : 's'}) to ${o.out}\n`,
    );
  });
}
