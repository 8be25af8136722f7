import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatKey, newKeyId, newSecret, parseKey } from '../../src/protocol/key-format.js';
import { loginToken, runStk, type RunResult } from '../helpers/cli.js';
import { rememberSecret } from '../helpers/secrets.js';
import { call, startStack, type Stack } from './apikeys.setup.js';

/**
 * `stk apikey scan` on real processes (a Hub on its SQLite store, a Bridge, PostgreSQL, the real CLI):
 * a folder and a git repository's history, found by regex + checksum; key ids only go to the Hub,
 * which describes a key to its project's admins alone; `--revoke`; the exit codes.
 */
describe('stk apikey scan', () => {
  let s: Stack;
  let viewer: string;
  let otherAdmin: string;
  const PW = rememberSecret('password', 'leaks-password-1');
  const dirs: string[] = [];
  const tempDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'stk-scan-'));
    dirs.push(d);
    return d;
  };
  const scan = (args: string[], o: { cwd?: string; token?: string } = {}): Promise<RunResult> =>
    runStk(['apikey', 'scan', ...args], { cwd: o.cwd, env: { STK_CONFIG_DIR: s.cfg, STK_HUB_URL: s.hub.url, STK_AUTH_TOKEN: o.token ?? s.owner } });
  /** a well-formed, checksummed key nobody ever issued */
  const neverIssued = () => rememberSecret('api-key', formatKey(newKeyId(), newSecret(), 'dev'));
  /** a key through the Hub API (faster than a CLI run; the CLI's create has its own tests) */
  const createKey = async (name: string) => {
    const r = await s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apikeys`, { name, roles: ['reader'] });
    expect(r.status, r.text).toBe(201);
    return { key: r.json.apiKey as string, keyId: r.json.keyId as string };
  };
  const auditOf = async (action: string) =>
    ((await s.api('GET', `/api/audit?project=${s.project}&action=${action}&limit=1000`)).json.items ?? []) as Array<{ detail: any; actorType: string }>;

  beforeAll(async () => {
    s = await startStack({ bridges: 1 });
    const join = async (email: string, project: string, role: string) => {
      const inv = await s.api('POST', `/api/projects/${project}/invites`, { email, role });
      expect(inv.status, inv.text).toBe(201);
      const code = rememberSecret('invite-code', inv.json.inviteCode);
      const a = await s.api('POST', '/api/invites/accept', { email, code, password: PW }, null as unknown as string);
      expect(a.status, a.text).toBe(200);
      return loginToken(s.hub.url, email, PW);
    };
    expect((await s.api('POST', '/api/projects', { name: 'other' })).status).toBe(201);
    viewer = await join('leaks-viewer@example.com', s.project, 'viewer');
    otherAdmin = await join('leaks-other@example.com', 'other', 'admin');
  });
  afterAll(async () => {
    await s?.stop();
  });

  it('scans a folder: a key with file:line, project/env, status; lookalikes, node_modules, large and binary files are not reported', async () => {
    const k = await createKey('in-file');
    const other = await createKey('lookalike-base');
    const bad = other.key.slice(0, -1) + (other.key.endsWith('A') ? 'B' : 'A'); // same shape, wrong checksum
    expect(parseKey(bad)).toBe('checksum');
    const d = tempDir();
    mkdirSync(join(d, 'config'));
    mkdirSync(join(d, 'node_modules/pkg'), { recursive: true });
    writeFileSync(join(d, 'config/.env'), `# settings\nDB=postgres\nSTK_KEY=${k.key}\n`);
    writeFileSync(join(d, 'notes.md'), `a typo'd key: ${bad}\n`);
    writeFileSync(join(d, 'node_modules/pkg/index.js'), `const k = "${other.key}";\n`);
    writeFileSync(join(d, 'big.log'), Buffer.concat([Buffer.from(`${other.key}\n`), Buffer.alloc(6 * 1024 * 1024, 'x')]));
    writeFileSync(join(d, 'blob.bin'), Buffer.concat([Buffer.from([0, 1, 2]), Buffer.from(` ${other.key} `)]));

    const r = await scan(['--json'], { cwd: d });
    expect(r.code, r.output).toBe(1);
    const rows = JSON.parse(r.stdout);
    expect(rows).toEqual([
      {
        location: 'config/.env:3',
        file: 'config/.env',
        line: 3,
        commit: null,
        keyId: k.keyId,
        found: true,
        project: s.project,
        env: s.env,
        name: 'in-file',
        status: 'active',
        lastUsedAt: null,
      },
    ]);
    expect(r.stderr).toMatch(/not scanned: 1 over 5 MB \(big\.log\), 1 binary/);
    expect(r.stderr).toContain('Ignored 1 key-shaped string with a wrong checksum');
    expect(r.stderr).toContain('1 live');
    // the secret is not printed back
    expect(r.output).not.toContain(k.key.slice(-28));

    // piped without --json: the table's columns, tab-separated; a file path scans that file only
    const t = await scan([join(d, 'config/.env')], { cwd: d });
    expect(t.code, t.output).toBe(1);
    expect(t.stdout).toBe(`config/.env:3\t${k.keyId}\tin-file\t${s.project}/${s.env}\tactive\t\n`);

    // a folder with nothing but the lookalike: exit 0
    const clean = tempDir();
    writeFileSync(join(clean, 'a.txt'), `${bad}\n`);
    const c = await scan([clean]);
    expect(c.code, c.output).toBe(0);
    expect(c.stderr).toContain('No Santokit API keys found');
  });

  it('a viewer, another project’s admin and a stranger learn nothing: a real key reads exactly like one never issued', async () => {
    const k = await createKey('secret-project-key');
    const fake = neverIssued();
    const d = tempDir();
    writeFileSync(join(d, 'a.txt'), `${k.key}\n${fake}\n`);
    const strip = (row: any) => ({ ...row, keyId: '-', location: '-', line: 0 });
    for (const token of [viewer, otherAdmin]) {
      const r = await scan(['--json'], { cwd: d, token });
      expect(r.code, r.output).toBe(0); // nothing live that this operator can see
      const rows = JSON.parse(r.stdout);
      expect(rows.map((x: any) => x.keyId)).toEqual([k.keyId, parseKey(fake) && (parseKey(fake) as any).keyId]);
      expect(strip(rows[0])).toEqual(strip(rows[1]));
      expect(rows[0]).toMatchObject({ found: false, name: null, project: null, status: 'unknown', lastUsedAt: null });
      // the API answer itself, byte for byte apart from the ids
      const api = await s.api('POST', '/api/apikeys/lookup', { keyIds: [k.keyId, (parseKey(fake) as any).keyId] }, token);
      expect(api.status).toBe(200);
      expect({ ...api.json.items[0], keyId: '-' }).toEqual({ ...api.json.items[1], keyId: '-' });
    }
    // the owner sees it
    const own = await s.api('POST', '/api/apikeys/lookup', { keyIds: [k.keyId] });
    expect(own.json.items[0]).toMatchObject({ found: true, name: 'secret-project-key', project: s.project, env: s.env, status: 'active' });
    // no session: 401; a malformed id or too many: 400
    expect((await s.api('POST', '/api/apikeys/lookup', { keyIds: [k.keyId] }, null as unknown as string)).status).toBe(401);
    expect((await s.api('POST', '/api/apikeys/lookup', { keyIds: ['not-an-id'] })).status).toBe(400);
    expect((await s.api('POST', '/api/apikeys/lookup', { keyIds: Array.from({ length: 1001 }, () => newKeyId()) })).status).toBe(400);
  });

  it('--git-history finds a key that is only in an old commit, as commit:path:line', async () => {
    const k = await createKey('in-history');
    const repo = tempDir();
    const git = (...a: string[]) =>
      execFileSync('git', ['-C', repo, ...a], {
        env: { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@example.com', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@example.com' },
      })
        .toString()
        .trim();
    git('init', '-q', '-b', 'main');
    writeFileSync(join(repo, 'README.md'), 'hello\n');
    git('add', '.');
    git('commit', '-q', '-m', 'first');
    mkdirSync(join(repo, 'deploy'));
    writeFileSync(join(repo, 'deploy/env.sh'), `#!/bin/sh\nexport STK_API_KEY=${k.key}\n`);
    git('add', '.');
    git('commit', '-q', '-m', 'oops');
    const leakCommit = git('rev-parse', 'HEAD').slice(0, 12);
    writeFileSync(join(repo, 'deploy/env.sh'), '#!/bin/sh\nexport STK_API_KEY="$(cat /run/secrets/stk)"\n');
    git('commit', '-q', '-am', 'fix');

    const now = await scan(['--json'], { cwd: repo });
    expect(now.code, now.output).toBe(0);
    expect(JSON.parse(now.stdout)).toEqual([]);

    const h = await scan(['--git-history', '--json'], { cwd: repo });
    expect(h.code, h.output).toBe(1);
    expect(JSON.parse(h.stdout)).toEqual([
      expect.objectContaining({ location: `${leakCommit}:deploy/env.sh:2`, commit: leakCommit, line: 2, keyId: k.keyId, status: 'active' }),
    ]);
    expect(h.stderr).toMatch(/Scanned \d+ files? and \d+ blobs of git history/);

    // outside a repository: an error (3), not "clean" and not "found"
    const notRepo = await scan(['--git-history'], { cwd: tempDir() });
    expect(notRepo.code, notRepo.output).toBe(3);
    expect(notRepo.stderr).toContain('not inside a git repository');
  });

  it('--revoke: refused off a terminal without --yes (exit 2); with --yes the next /call is 401; exit codes', async () => {
    const k = await createKey('to-revoke');
    const b = s.bridges[0]!;
    expect((await call(b, k.key)).status).toBe(200);
    const d = tempDir();
    writeFileSync(join(d, 'app.ts'), `\n\nconst key = '${k.key}';\n`);

    const refused = await scan(['--revoke'], { cwd: d });
    expect(refused.code, refused.output).toBe(2);
    expect(refused.stderr).toContain('--yes');
    expect((await call(b, k.key)).status).toBe(200);

    const r = await scan(['--revoke', '--yes'], { cwd: d });
    expect(r.code, r.output).toBe(1); // a live key was found (and is revoked now)
    expect(r.stderr).toContain(`Revoked ${k.keyId} ("to-revoke") in ${s.project}/${s.env}`);
    expect((await call(b, k.key)).status).toBe(401);
    const revokes = (await auditOf('apikey.revoke')).filter((e) => e.detail.keyId === k.keyId);
    expect(revokes).toHaveLength(1);

    const again = await scan(['--json'], { cwd: d });
    expect(again.code, again.output).toBe(0);
    expect(JSON.parse(again.stdout)[0]).toMatchObject({ keyId: k.keyId, status: 'revoked' });

    // --suspend: the reversible stop, same rules
    const k2 = await createKey('to-suspend');
    const d2 = tempDir();
    writeFileSync(join(d2, 'x.env'), `KEY=${k2.key}\n`);
    const sus = await scan(['--suspend', '--yes'], { cwd: d2 });
    expect(sus.code, sus.output).toBe(1);
    expect(sus.stderr).toContain(`Suspended ${k2.keyId} ("to-suspend")`);
    expect((await call(b, k2.key)).status).toBe(401);
    const after = await scan(['--json'], { cwd: d2 });
    expect(after.code, after.output).toBe(0);
    expect(JSON.parse(after.stdout)[0]).toMatchObject({ keyId: k2.keyId, status: 'suspended' });

    // --offline: no Hub, any key found → 1; usage errors → 2; an unreachable Hub or a missing path → 3
    expect((await runStk(['apikey', 'scan', '--offline', d], { env: { STK_CONFIG_DIR: s.cfg, STK_HUB_URL: 'http://127.0.0.1:1' } })).code).toBe(1);
    expect((await scan(['--offline', '--revoke', '--yes', d])).code).toBe(2);
    const down = await runStk(['apikey', 'scan', d], { env: { STK_CONFIG_DIR: s.cfg, STK_HUB_URL: 'http://127.0.0.1:1', STK_AUTH_TOKEN: s.owner } });
    expect(down.code, down.output).toBe(3);
    expect(down.stderr).toContain('cannot reach the Hub');
    expect((await scan([join(d, 'no-such-file')])).code).toBe(3);
  });
});
