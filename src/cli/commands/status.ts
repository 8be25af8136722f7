import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { UsageError } from '../errors.js';
import { bold, green, printJson, red } from '../output.js';
import { example, opts } from './common.js';
import { devDataDir, isAlive, type DevState } from '../../dev/state.js';

/**
 * `stk status` (like `supabase status`): the dev stack started in this directory (`npm start`), read
 * from `.santokit/dev.json`, and whether each part answers right now. Exit 0 when every part answers,
 * 1 otherwise (so it doubles as a check in scripts).
 */

interface Part {
  url: string;
  ok: boolean;
  detail: string;
}

export interface Status {
  running: boolean;
  dataDir: string;
  pid: number | null;
  startedAt: string | null;
  hub: Part | null;
  bridge: Part | null;
  postgres: Part | null;
  devOwner: { email: string; passwordFile: string } | null;
}

async function http(url: string, path: string): Promise<Part> {
  try {
    const r = await fetch(url + path, { signal: AbortSignal.timeout(2000) });
    await r.arrayBuffer().catch(() => {});
    return { url, ok: r.ok, detail: r.ok ? `answers (${path} ${r.status})` : `${path} answers ${r.status}` };
  } catch (e) {
    const code = (e as { cause?: { code?: string } }).cause?.code;
    return { url, ok: false, detail: `does not answer${code ? ` (${code})` : ''}` };
  }
}

async function postgres(url: string): Promise<Part> {
  const pg = (await import('pg')).default;
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await c.connect();
    await c.query('select 1');
    return { url, ok: true, detail: 'answers (select 1)' };
  } catch (e) {
    return { url, ok: false, detail: `does not answer (${(e as { code?: string }).code ?? (e as Error).message})` };
  } finally {
    await c.end().catch(() => {});
  }
}

export async function devStatus(dataDir: string): Promise<Status> {
  let s: DevState | undefined;
  try {
    s = JSON.parse(readFileSync(join(dataDir, 'dev.json'), 'utf8')) as DevState;
  } catch {
    s = undefined;
  }
  if (!s || !Number.isInteger(s.pid) || !isAlive(s.pid)) {
    return { running: false, dataDir, pid: null, startedAt: null, hub: null, bridge: null, postgres: null, devOwner: null };
  }
  const [hub, bridge, pgPart] = await Promise.all([http(s.hubUrl, '/healthz'), http(s.bridgeUrl, '/healthz'), postgres(s.pgUrl)]);
  return {
    running: true,
    dataDir,
    pid: s.pid,
    startedAt: s.startedAt,
    hub,
    bridge,
    postgres: pgPart,
    devOwner: { email: s.ownerEmail, passwordFile: s.passwordFile },
  };
}

const shown = (p: string) => relative(process.cwd(), p) || '.';

export function registerStatusCommand(program: Command): void {
  example(
    program
      .command('status')
      .description('the dev stack running in this directory (npm start): URLs, dev owner, and whether each part answers')
      .option('-o, --output <format>', 'pretty, json or env (KEY=value lines for eval)', 'pretty')
      .option('--json', 'same as -o json')
      .addHelpText(
        'after',
        '\nExit status 0 when the Hub, the Bridge and the embedded PostgreSQL all answer, 1 otherwise.\nThe data directory is STK_DATA_DIR, else .santokit in the current directory.',
      ),
    'stk status',
    'stk status --json',
    'eval "$(stk status -o env)" && echo "$STK_HUB_URL"',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ output: string }>(cmd);
    const format = o.json ? 'json' : o.output;
    if (!['pretty', 'json', 'env'].includes(format)) throw new UsageError(`invalid --output ${JSON.stringify(format)}: use pretty, json or env`);
    const st = await devStatus(devDataDir());
    const allOk = st.running && [st.hub, st.bridge, st.postgres].every((p) => p?.ok);
    if (format === 'json') printJson(st);
    else if (format === 'env') {
      if (st.running) {
        const lines = [
          `STK_HUB_URL=${st.hub!.url}`,
          `STK_BRIDGE_URL=${st.bridge!.url}`,
          `STK_DEV_PG_URL=${st.postgres!.url}`,
          `STK_DEV_OWNER_EMAIL=${st.devOwner!.email}`,
          `STK_DEV_OWNER_PASSWORD_FILE=${st.devOwner!.passwordFile}`,
        ];
        // values are URLs, an email and a path: quoted so `eval` takes them as one word each
        process.stdout.write(lines.map((l) => l.replace(/=(.*)$/, (_m, v: string) => `='${v.replace(/'/g, `'\\''`)}'`)).join('\n') + '\n');
      }
    } else if (!st.running) {
      process.stdout.write(`No dev stack is running in ${shown(st.dataDir)}/ (start one with: npm start)\n`);
    } else {
      const mark = (p: Part) => (p.ok ? green('✓') : red('✗'));
      const w = Math.max(st.hub!.url.length, st.bridge!.url.length, st.postgres!.url.length);
      const row = (label: string, p: Part) => `  ${bold(label.padEnd(11))} ${p.url.padEnd(w)}  ${mark(p)} ${p.detail}`;
      process.stdout.write(
        [
          `Santokit dev stack in ${shown(st.dataDir)}/: running (pid ${st.pid}, since ${st.startedAt})`,
          '',
          row('Hub', st.hub!),
          row('Bridge', st.bridge!),
          row('PostgreSQL', st.postgres!),
          '',
          `  ${bold('Dev owner'.padEnd(11))} ${st.devOwner!.email} (password in ${shown(st.devOwner!.passwordFile)})`,
          '',
        ].join('\n'),
      );
    }
    // what is wrong is on the screen (or in the JSON) already: only the exit status says it again
    if (!allOk) process.exitCode = 1;
  });
}
