import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { enc } from '../client.js';
import { CliError, UsageError } from '../errors.js';
import { isTTY, printJson, printTable, success, warn, when } from '../output.js';
import { canConfirm, promptLine } from '../prompt.js';
import { client, example, opts } from './common.js';
import { MAX_SCAN_FILE_BYTES, gitTopLevel, newStats, scanGitHistory, scanPaths, type KeyHit, type ScanStats } from '../key-scan.js';
import { MAX_LOOKUP_IDS, type KeyLookupItem } from '../../protocol/api/leaks.js';
import type { RevokedKey, SuspendedKey } from '../../protocol/api/hub.js';

/** Exit codes of `stk apikey scan` (for pre-commit hooks and CI). */
export const SCAN_EXIT = { clean: 0, liveKey: 1, usage: 2, error: 3 } as const;

export interface ScanRow {
  /** file:line, or commit:path:line for a hit in git history */
  location: string;
  file: string;
  line: number;
  commit: string | null;
  keyId: string;
  /** false: the Hub knows no such key, or you are not project:admin on its project (the same answer) */
  found: boolean;
  project: string | null;
  env: string | null;
  name: string | null;
  /** active, revoked, expired…; `unknown` when not found, `unchecked` with --offline */
  status: string;
  lastUsedAt: string | null;
}

type ScanOpts = { gitHistory?: boolean; offline?: boolean; revoke?: boolean; suspend?: boolean; yes?: boolean; json?: boolean };
type Act = 'revoke' | 'suspend';

const location = (h: KeyHit) => (h.commit ? `${h.commit}:${h.file}:${h.line}` : `${h.file}:${h.line}`);

function reportStats(s: ScanStats, history: boolean): void {
  const parts = [`${s.files} file${s.files === 1 ? '' : 's'}`];
  if (history) parts.push(`${s.blobs} blob${s.blobs === 1 ? '' : 's'} of git history`);
  const skipped: string[] = [];
  const mb = MAX_SCAN_FILE_BYTES / 1024 / 1024;
  if (s.skippedLarge.length)
    skipped.push(`${s.skippedLarge.length} over ${mb} MB (${s.skippedLarge.slice(0, 5).join(', ')}${s.skippedLarge.length > 5 ? ', …' : ''})`);
  if (s.skippedBinary) skipped.push(`${s.skippedBinary} binary`);
  if (s.skippedUnreadable.length) skipped.push(`${s.skippedUnreadable.length} unreadable (${s.skippedUnreadable.slice(0, 5).join(', ')})`);
  process.stderr.write(`Scanned ${parts.join(' and ')}${skipped.length ? `; not scanned: ${skipped.join(', ')}` : ''}\n`);
  if (s.lookalikes)
    process.stderr.write(`Ignored ${s.lookalikes} key-shaped string${s.lookalikes === 1 ? '' : 's'} with a wrong checksum (not Santokit keys)\n`);
  if (s.truncated) warn(`stopped after ${s.files + s.blobs} files/blobs: scan fewer paths at a time`);
}

async function lookup(cmd: Command, ids: string[]): Promise<Map<string, KeyLookupItem>> {
  const out = new Map<string, KeyLookupItem>();
  const c = client(cmd);
  for (let i = 0; i < ids.length; i += MAX_LOOKUP_IDS) {
    const r = await c.post<{ items: KeyLookupItem[] }>('/api/apikeys/lookup', { keyIds: ids.slice(i, i + MAX_LOOKUP_IDS) });
    for (const it of r.items) out.set(it.keyId, it);
  }
  return out;
}

async function scan(paths: string[], o: ScanOpts, cmd: Command): Promise<void> {
  if (o.revoke && o.suspend) throw new UsageError('pass --revoke or --suspend, not both');
  const act: Act | undefined = o.revoke ? 'revoke' : o.suspend ? 'suspend' : undefined;
  if (act && o.offline) throw new UsageError(`--${act} needs the Hub: drop --offline`);
  // acting on every key found: asked on a terminal, and refused off one without --yes (before any work)
  if (act && !o.yes && !canConfirm()) {
    throw new UsageError(`--${act} without a terminal to confirm on: pass --yes to ${act} every live key found without asking`);
  }
  const cwd = process.cwd();
  const targets = (paths.length ? paths : ['.']).map((p) => resolve(cwd, p));
  const stats = newStats();
  const hits: KeyHit[] = [];
  try {
    await scanPaths(targets, cwd, stats, hits);
  } catch (e) {
    throw new CliError(`cannot scan: ${(e as Error).message}`, SCAN_EXIT.error);
  }
  if (o.gitHistory) {
    const first = targets[0]!;
    let repo: string;
    try {
      repo = await gitTopLevel(statSync(first).isDirectory() ? first : dirname(first));
      await scanGitHistory(repo, stats, hits);
    } catch (e) {
      throw new CliError(`cannot scan the git history: ${(e as Error).message}`, SCAN_EXIT.error);
    }
  }
  reportStats(stats, Boolean(o.gitHistory));

  const ids = [...new Set(hits.map((h) => h.keyId))];
  const known = o.offline || ids.length === 0 ? new Map<string, KeyLookupItem>() : await lookup(cmd, ids);
  const rows: ScanRow[] = hits.map((h) => {
    const k = known.get(h.keyId);
    return {
      location: location(h),
      file: h.file,
      line: h.line,
      commit: h.commit,
      keyId: h.keyId,
      found: Boolean(k?.found),
      project: k?.project ?? null,
      env: k?.env ?? null,
      name: k?.name ?? null,
      status: o.offline ? 'unchecked' : (k?.status ?? 'unknown'),
      lastUsedAt: k?.lastUsedAt ?? null,
    };
  });

  if (o.json) printJson(rows);
  else if (rows.length) {
    const human = isTTY();
    printTable(rows, [
      { header: 'LOCATION', get: (r) => r.location },
      { header: 'KEY ID', get: (r) => r.keyId },
      { header: 'NAME', get: (r) => r.name ?? '-' },
      { header: 'PROJECT/ENV', get: (r) => (r.project ? `${r.project}/${r.env}` : '-') },
      { header: '', get: (r) => (human ? `status: ${r.status}` : r.status) },
      { header: 'LAST USED', get: (r) => when(r.lastUsedAt) },
    ]);
  }

  const live = [...known.values()].filter((k) => k.found && k.status === 'active');
  const unknown = ids.filter((id) => !known.get(id)?.found).length;
  if (ids.length === 0) success('No Santokit API keys found');
  else if (o.offline) warn(`${ids.length} API key${ids.length === 1 ? '' : 's'} found (not checked with the Hub: --offline)`);
  else {
    process.stderr.write(
      `Found ${ids.length} API key${ids.length === 1 ? '' : 's'} in ${rows.length} place${rows.length === 1 ? '' : 's'}: ${live.length} live` +
        (unknown ? `, ${unknown} unknown to this Hub (or in a project you are not project:admin on)` : '') +
        '\n',
    );
    if (live.length && !act) warn('a live key was found: revoke or rotate it (stk apikey scan --revoke, or stk apikey rotate), then remove it from the files');
  }

  if (act && live.length) await actOnLive(cmd, act, live, Boolean(o.yes));
  process.exitCode = (o.offline ? ids.length > 0 : live.length > 0) ? SCAN_EXIT.liveKey : SCAN_EXIT.clean;
}

async function actOnLive(cmd: Command, act: Act, live: KeyLookupItem[], yes: boolean): Promise<void> {
  const label = (k: KeyLookupItem) => `${k.keyId} (${JSON.stringify(k.name)}) in ${k.project}/${k.env}`;
  if (!yes) {
    const what =
      act === 'revoke'
        ? 'Revoking cannot be undone; every Bridge rejects these keys at once'
        : 'Suspending (stk apikey resume undoes it): every Bridge rejects these keys at once';
    process.stderr.write(`${what}:\n${live.map((k) => `  ${label(k)}, last used ${k.lastUsedAt ?? 'never'}`).join('\n')}\n`);
    const typed = (await promptLine(`Type "${act}" to ${act} ${live.length} key${live.length === 1 ? '' : 's'}: `)).trim();
    if (typed !== act) {
      warn(`not confirmed: nothing was ${act}d`);
      return;
    }
  }
  const c = client(cmd);
  const failed: string[] = [];
  for (const k of live) {
    const base = `/api/projects/${enc(k.project!)}/envs/${enc(k.env!)}/apikeys/${enc(k.keyId)}`;
    try {
      const r =
        act === 'revoke'
          ? await c.post<RevokedKey>(`${base}/revoke`, {})
          : await c.post<SuspendedKey>(`${base}/suspend`, { reason: 'found by stk apikey scan' });
      const already = 'alreadyRevoked' in r ? r.alreadyRevoked : r.alreadySuspended;
      const lagging = r.ack?.lagging ?? [];
      const did = act === 'revoke' ? 'Revoked' : 'Suspended';
      success(`${did} ${label(k)}${already ? ' (it already was)' : ''}${lagging.length ? `; Bridge(s) ${lagging.join(', ')} did not confirm in time` : ''}`);
      if (lagging.length) failed.push(`${k.keyId}: not confirmed by ${lagging.join(', ')}`);
    } catch (e) {
      failed.push(`${k.keyId}: ${(e as Error).message}`);
    }
  }
  if (failed.length) throw new CliError(`could not ${act} every live key: ${failed.join('; ')}`, SCAN_EXIT.error);
}

export function registerScanCommand(apikey: Command): void {
  example(
    apikey
      .command('scan')
      .description('find Santokit API keys in files (and git history), then ask the Hub which are live — by key id only, the secret never leaves the machine')
      .argument('[paths...]', 'files or directories to scan (default: the current directory); node_modules and .git are skipped')
      .option('--git-history', 'also scan every blob in the history of the git repository the first path is in (all refs)')
      .option('--offline', 'do not contact the Hub: report the keys found (checksum-valid) and exit 1 if there is any')
      .option('--revoke', 'revoke the live keys found (asks on a terminal; needs --yes elsewhere)')
      .option('--suspend', 'suspend the live keys found instead (reversible: stk apikey resume)')
      .option('-y, --yes', 'do not ask before --revoke/--suspend (required when not on a terminal)')
      .option('--json', 'print [{location, file, line, commit, keyId, found, project, env, name, status, lastUsedAt}]')
      .addHelpText(
        'after',
        [
          '',
          'A key counts only when it matches the published pattern AND its checksum (docs/api-keys.md).',
          'The Hub describes a key only to a project:admin of its project; for anyone else it is "unknown",',
          'exactly like an id that never existed. Files over 5 MB and binary files are skipped (and counted).',
          '',
          'Exit codes: 0 no live key found · 1 a live key was found (with --offline: any key) · 2 usage error',
          '· 3 the scan or the Hub failed.',
        ].join('\n'),
      ),
    'stk apikey scan',
    'stk apikey scan src config --git-history',
    'stk apikey scan --json > leaks.json',
    'stk apikey scan . --revoke --yes',
    'stk apikey scan . --suspend',
  ).action(async (paths: string[], _o, cmd: Command) => {
    try {
      await scan(paths, opts<ScanOpts>(cmd), cmd);
    } catch (e) {
      if (e instanceof UsageError || (e instanceof CliError && e.exitCode !== 1)) throw e;
      // a failure is never mistaken for "a live key was found" (1): API and network errors exit 3
      if (e instanceof CliError) throw new CliError(e.message, SCAN_EXIT.error, e.hint);
      throw new CliError((e as Error).message, SCAN_EXIT.error);
    }
  });
}
