import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, STK, waitFor } from '../helpers/procs.js';
import { runStk, tempConfigDir } from '../helpers/cli.js';
import { spawnPty } from '../helpers/pty.js';
import { rememberSecret } from '../helpers/secrets.js';
import { call, startStack, type Stack } from './apikeys.setup.js';
import { formatKey, newSecret } from '../../src/protocol/key-format.js';

/**
 * Issue 14's rough edges in the CLI, against a real Hub and Bridge: closed pipes, the scripting forms
 * of `apikey create`, revoke's confirmation on a real terminal, `list --status`, `apikey show` with
 * usage, messages that name the flag, one login hint, `whoami`, both flag spellings, completion.
 */

/** Runs stk with its stdout already closed (what `| head -1` does once head has its line). */
async function runClosedStdout(args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  return await new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [STK, ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    c.stdout.destroy();
    let stderr = '';
    c.stderr.on('data', (d) => (stderr += d));
    c.on('error', reject);
    c.on('close', (code) => resolve({ code, stderr }));
  });
}

describe('stk for a newcomer and for scripts', () => {
  let s: Stack;
  let env: Record<string, string>;
  const P = () => ['--project', s.project, '--env', s.env];

  beforeAll(async () => {
    s = await startStack({ bridges: 1 });
    env = { STK_CONFIG_DIR: s.cfg, STK_HUB_URL: s.hub.url, STK_AUTH_TOKEN: s.owner };
    for (let i = 0; i < 3; i++) await s.createKey(`pipe-${i}`, 'reader');
  }, 120_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('a closed pipe ends the CLI quietly with exit 0 (apikey list | head -1, audit list | head -1, --help, completion)', async () => {
    for (const args of [
      ['apikey', 'list', ...P()],
      ['audit', 'list', '--project', s.project],
      ['--help'],
      ['completion', 'bash'],
      ['apikey', 'list', ...P(), '--json'],
    ]) {
      const r = await runClosedStdout(args, env);
      expect(r.stderr, args.join(' ')).toBe('');
      expect(r.code, args.join(' ')).toBe(0);
    }
  });

  it('apikey create -q prints only the key; --json carries apiKey; a positional name works; both forms at once must agree', async () => {
    const q = await s.stk(['apikey', 'create', 'quiet-one', ...P(), '--roles', 'reader', '-q']);
    expect(q.code, q.output).toBe(0);
    const key = rememberSecret('api-key', q.stdout.trim());
    expect(q.stdout).toMatch(/^stk_dev_[0-9A-Z]{12}_[A-Za-z0-9]{28}\n$/);
    expect(q.stderr).toBe('');
    expect((await call(s.bridges[0]!, key)).status).toBe(200);

    const j = await s.stk(['apikey', 'create', '--name', 'json-one', ...P(), '--roles', 'reader', '--json']);
    const created = JSON.parse(j.stdout) as { apiKey: string; name: string };
    rememberSecret('api-key', created.apiKey);
    expect(created.name).toBe('json-one');
    expect(created.apiKey).toMatch(/^stk_/);

    const both = await s.stk(['apikey', 'create', 'a-name', '--name', 'b-name', ...P(), '--roles', 'reader']);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('the key name given twice');
    const none = await s.stk(['apikey', 'create', ...P(), '--roles', 'reader']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('the key name is required: pass it as an argument or with --name');
    expect((await s.stk(['apikey', 'create', 'x', ...P(), '--roles', 'reader', '-q', '--json'])).code).toBe(2);
  });

  it('bad flag values name the flag and exit 2 before anything is sent (--expires-in 3x, --expires-at, --grace, --status)', async () => {
    const r = await s.stk(['apikey', 'create', 'never-made', ...P(), '--roles', 'reader', '--expires-in', '3x']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('Error: invalid --expires-in "3x": use a duration like 30m, 12h or 90d\n');
    expect((await s.stk(['apikey', 'create', 'never-made', ...P(), '--roles', 'reader', '--expires-at', 'tomorrow'])).stderr).toContain(
      'invalid --expires-at "tomorrow"',
    );
    expect((await s.stk(['apikey', 'rotate', 'pipe-0', ...P(), '--grace', 'soon'])).stderr).toContain('invalid --grace "soon"');
    const st = await s.stk(['apikey', 'list', ...P(), '--status', 'dead']);
    expect(st.code).toBe(2);
    expect(st.stderr).toContain('invalid --status "dead": use active, suspended, revoked, expired');
    const list = await s.stk(['apikey', 'list', ...P(), '--json']);
    expect((JSON.parse(list.stdout) as Array<{ name: string }>).map((k) => k.name)).not.toContain('never-made');
  });

  it('--grace help shows one default; not logged in, the hint to run stk login appears once', async () => {
    const h = await runStk(['apikey', 'rotate', '--help']);
    const grace = h.stdout.slice(h.stdout.indexOf('--grace'), h.stdout.indexOf('--json'));
    expect(grace.match(/default/g)).toHaveLength(1);
    const r = await runStk(['apikey', 'list', ...P()], { env: { STK_CONFIG_DIR: tempConfigDir(), STK_HUB_URL: s.hub.url } });
    expect(r.code).toBe(1);
    expect(r.stderr.match(/stk login/g)).toHaveLength(1);
  });

  it('list --status filters; piped rows are tab-separated bare values, a terminal reads "status: revoked"; revoke <name> works without a terminal and never asks', async () => {
    const rv = await s.stk(['apikey', 'revoke', 'pipe-1', ...P()]);
    expect(rv.code, rv.output).toBe(0);
    expect(rv.output).not.toContain('Type the key name');
    const revoked = await s.stk(['apikey', 'list', ...P(), '--status', 'revoked']);
    const rows = revoked.stdout
      .trim()
      .split('\n')
      .map((l) => l.split('\t'));
    expect(rows.map((r) => r[1])).toEqual(['pipe-1']);
    expect(rows[0]![3]).toBe('revoked');
    const active = await s.stk(['apikey', 'list', ...P(), '--status', 'active']);
    expect(active.stdout).not.toContain('pipe-1');
    expect(active.stdout).toContain('pipe-0');
    const tty = await runStk(['apikey', 'list', ...P(), '--status', 'revoked'], { env: { ...env, STK_FORCE_TTY: '1' } });
    expect(tty.stdout).toMatch(/pipe-1 +reader +status: revoked/);

    const dry = await s.stk(['apikey', 'revoke', ...P(), '--key-id', 'pipe-1', '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('is already revoked; revoking it again would change nothing');
    const again = await s.stk(['apikey', 'revoke', ...P(), '--key-id', 'pipe-1']);
    expect(again.code).toBe(0);
    expect(again.output).toContain('was already revoked');
  });

  it('on a terminal, revoke asks for the key name: a wrong answer revokes nothing (exit 1), the right one revokes, --yes and --no-input never ask', async () => {
    const { key } = await s.createKey('tty-key', 'reader');
    const ttyEnv = { ...env, NO_COLOR: '1' };
    const wrong = spawnPty([process.execPath, STK, 'apikey', 'revoke', 'tty-key', ...P()], { env: ttyEnv });
    await wrong.waitFor('Type the key name (tty-key) to confirm: ');
    expect(wrong.output()).toContain('cannot be undone');
    wrong.write('tty-kex\r');
    expect(await wrong.exit).toBe(1);
    expect(wrong.output()).toContain('confirmation did not match "tty-key": nothing was revoked');
    expect((await call(s.bridges[0]!, key)).status).toBe(200);

    const right = spawnPty([process.execPath, STK, 'apikey', 'revoke', 'tty-key', ...P()], { env: ttyEnv });
    await right.waitFor('to confirm: ');
    right.write('tty-key\r');
    expect(await right.exit, right.output()).toBe(0);
    expect(right.output()).toContain('Revoked API key');
    expect((await call(s.bridges[0]!, key)).status).toBe(401);

    for (const flag of ['--yes', '--no-input']) {
      const name = `tty-${flag.slice(2)}`;
      await s.createKey(name, 'reader');
      const p = spawnPty([process.execPath, STK, 'apikey', 'revoke', name, ...P(), flag], { env: ttyEnv });
      expect(await p.exit, p.output()).toBe(0);
      expect(p.output()).not.toContain('to confirm');
    }
  });

  it("apikey show: requests per minute as a chart, by status (2xx, 404 after auth, 401 wrong secret, 429), by source, with the figures' age; --json gives the series", async () => {
    const { key, keyId } = await s.createKey('shown', 'admin', ['--rate-limit', '4/min']);
    const b = s.bridges[0]!;
    expect((await call(b, key)).status).toBe(200);
    expect((await call(b, key)).status).toBe(200);
    expect((await call(b, key, { path: 'db/nope/select' })).status).toBe(404); // fails after the key was authenticated
    expect((await call(b, key)).status).toBe(200);
    expect((await call(b, key)).status).toBe(429);
    // the right key id with a secret that is not its own (a valid checksum): counted for this key as 401
    expect((await call(b, formatKey(keyId, newSecret(), 'dev'))).status).toBe(401);
    const before = Date.now();
    type Usage = {
      asOf: string;
      bridges: number;
      series: Array<{ minute: string; requests: number }>;
      byStatus: Array<{ status: string; requests: number }>;
      sources: Array<{ address: string; requests: number }>;
    };
    let u!: Usage;
    await waitFor(
      async () => {
        const r = await s.stk(['apikey', 'show', 'shown', ...P(), '--json']);
        u = JSON.parse(r.stdout) as Usage;
        return u.asOf !== null && Date.parse(u.asOf) >= before && u.byStatus.some((x) => x.status === '401');
      },
      15_000,
      'the Bridge to report usage',
    );
    expect(u.bridges).toBe(1);
    expect(u.series.reduce((n, m) => n + m.requests, 0)).toBe(4);
    expect(Object.fromEntries(u.byStatus.map((x) => [x.status, x.requests]))).toEqual({ '2xx': 3, '401': 1, '404': 1, '429': 1 });
    expect(u.sources).toEqual([expect.objectContaining({ address: '127.0.0.1', requests: 4 })]);

    const human = await s.stk(['apikey', 'show', keyId, ...P()]);
    expect(human.code, human.output).toBe(0);
    expect(human.stdout).toContain(`${keyId} ("shown") in ${s.project}/${s.env}`);
    expect(human.stdout).toContain('status: active');
    expect(human.stdout).toMatch(/Requests per minute, last 24 h: 4 in total, peak \d+\/min \(as of \d+ s ago/);
    expect(human.stdout).toMatch(/\n {2}[·▁▂▃▄▅▆▇█]{20,}\n/);
    expect(human.stdout).toContain('By status, last 24 h: 2xx 3 · 401 1 · 404 1 · 429 1');
    expect(human.stdout).toMatch(/127\.0\.0\.1 +4 requests/);
    const dry = await s.stk(['apikey', 'revoke', 'shown', ...P(), '--dry-run']);
    expect(dry.stdout).toMatch(/Figures: as of \d+ s ago/);

    // a key only ever refused (revoked, then called): its report carries lastUsedAt null and is taken
    const refused = await s.createKey('only-refused', 'reader');
    expect((await s.stk(['apikey', 'revoke', 'only-refused', ...P()])).code).toBe(0);
    expect((await call(b, refused.key)).status).toBe(401);
    expect((await call(b, refused.key)).status).toBe(401);
    let r!: Usage & { key: { lastUsedAt: string | null } };
    await waitFor(
      async () => {
        r = JSON.parse((await s.stk(['apikey', 'show', 'only-refused', ...P(), '--json'])).stdout) as typeof r;
        return r.byStatus.some((x) => x.status === '401');
      },
      15_000,
      'the refusals to be reported',
    );
    expect(Object.fromEntries(r.byStatus.map((x) => [x.status, x.requests]))).toEqual({ '2xx': 0, '401': 2 });
    expect(r.series).toEqual([]);
    expect(r.key.lastUsedAt).toBeNull();
    // and the Bridge's reports keep flowing: the other key's figures are fresh
    await waitFor(
      async () => {
        const again = JSON.parse((await s.stk(['apikey', 'show', 'shown', ...P(), '--json'])).stdout) as Usage;
        return Date.now() - Date.parse(again.asOf) < 5000;
      },
      15_000,
      'fresh figures',
    );
  });

  it('release current -q prints only the release id (the walkthrough keeps it in a variable)', async () => {
    const q = await s.stk(['release', 'current', ...P(), '-q']);
    const j = JSON.parse((await s.stk(['release', 'current', ...P(), '--json'])).stdout) as { releaseId: string };
    expect(q.stdout).toBe(`${j.releaseId}\n`);
  });

  it('whoami shows the Hub and what an org owner can do', async () => {
    const r = await s.stk(['whoami']);
    expect(r.code, r.output).toBe(0);
    expect(r.stdout).toContain(`hub: ${s.hub.url}\n`);
    expect(r.stdout).toContain('org role: owner\n  can: everything: create projects, invite operators (owners too)');
    expect(r.stdout).toContain('project roles: none set (admin on every project through the org role)');
    expect(r.stdout).not.toContain('project roles: none\n');
    expect(JSON.parse((await s.stk(['whoami', '--json'])).stdout)).toMatchObject({ hubUrl: s.hub.url, orgRole: 'owner' });
  });

  it('the seed spellings keep working next to the new ones: --key-id, --name, --hub-url; --hub on context set', async () => {
    await s.createKey('spell', 'reader');
    expect((await s.stk(['apikey', 'update', '--key-id', 'spell', ...P(), '--rate-limit', '10/min'])).code).toBe(0);
    expect((await s.stk(['apikey', 'update', 'spell', ...P(), '--rate-limit', '11/min'])).code).toBe(0);
    expect((await s.stk(['env', 'create', '--project', s.project, 'staging'])).code).toBe(0);
    expect((await s.stk(['env', 'create', '--project', s.project, '--name', 'qa'])).code).toBe(0);
    const dir = mkdtempSync(join(tmpdir(), 'stk-ctx-'));
    expect((await runStk(['context', 'set', '--hub', 'http://127.0.0.1:1'], { cwd: dir })).code).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, '.stk/context.json'), 'utf8'))).toEqual({ hubUrl: 'http://127.0.0.1:1' });
    expect((await runStk(['context', 'set', '--hub-url', 'http://127.0.0.1:2'], { cwd: dir })).code).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, '.stk/context.json'), 'utf8'))).toEqual({ hubUrl: 'http://127.0.0.1:2' });
  });
});

describe('stk completion, stk dev --help, stk status without a stack', () => {
  it('completion bash completes commands and flags from the real command tree; zsh and fish scripts; another shell is exit 2', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'stk-compl-')), 'stk.bash');
    writeFileSync(file, (await runStk(['completion', 'bash'])).stdout);
    const complete = async (line: string) => {
      const r = await new Promise<string>((resolve) => {
        const c = spawn(
          'bash',
          [
            '-c',
            `source "$FILE"; read -ra COMP_WORDS <<< "$LINE"; [[ "$LINE" == *" " ]] && COMP_WORDS+=(""); COMP_CWORD=$((\${#COMP_WORDS[@]}-1)); _stk_complete; echo "\${COMPREPLY[*]}"`,
          ],
          { env: { ...process.env, LINE: line, FILE: file }, stdio: ['ignore', 'pipe', 'inherit'] },
        );
        let out = '';
        c.stdout.on('data', (d) => (out += d));
        c.on('close', () => resolve(out.trim()));
      });
      return r.split(' ');
    };
    expect(await complete('stk ap')).toEqual(['apply', 'apikey']);
    expect(await complete('stk apikey ')).toEqual(expect.arrayContaining(['create', 'list', 'show', 'revoke', 'rotate', 'update']));
    expect(await complete('stk apikey revoke --y')).toEqual(['--yes']);
    expect(await complete('stk apikey create --project shop --')).toEqual(expect.arrayContaining(['--name', '--roles', '--quiet', '--hub']));
    expect(await complete('stk dev --')).toEqual(expect.arrayContaining(['--hub-port', '--bridge-port', '--pg-port', '--data-dir']));
    const zsh = await runStk(['completion', 'zsh']);
    expect(zsh.stdout).toMatch(/^#compdef stk\n/);
    expect(zsh.stdout).toContain('bashcompinit');
    const fish = await runStk(['completion', 'fish']);
    expect(fish.stdout).toContain("complete -c stk -n '__fish_use_subcommand' -a 'hub bridge dev");
    expect(fish.stdout).toContain("complete -c stk -n '__fish_seen_subcommand_from apikey; and __fish_seen_subcommand_from revoke' -l yes");
    const bad = await runStk(['completion', 'powershell']);
    expect(bad.code).toBe(2);
  });

  it('stk dev --help lists its port flags; a bad one names the flag (exit 2)', async () => {
    const h = await runStk(['dev', '--help']);
    for (const f of ['--hub-port <port>', '--bridge-port <port>', '--pg-port <port>', '--data-dir <dir>']) expect(h.stdout).toContain(f);
    const bad = await runStk(['dev', '--hub-port', 'eighty']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('invalid --hub-port "eighty"');
  });

  it('stk status with no dev stack here: says so, exit 1; -o env prints nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stk-nostack-'));
    const r = await runStk(['status'], { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('No dev stack is running in .santokit/ (start one with: npm start)');
    const e = await runStk(['status', '-o', 'env'], { cwd: dir });
    expect(e.code).toBe(1);
    expect(e.stdout).toBe('');
    const j = await runStk(['status', '--json'], { cwd: dir });
    expect(JSON.parse(j.stdout)).toMatchObject({ running: false, hub: null });
  });
});
