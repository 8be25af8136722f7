import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, startBridge, startHub, TEST_OWNER, type Proc } from '../helpers/procs.js';
import { loginToken, runStk, tempConfigDir, type RunResult } from '../helpers/cli.js';
import { createTestDatabase, query } from '../helpers/pg.js';
import { openSqlite } from '../helpers/sqlite.js';
import { spawnPty } from '../helpers/pty.js';
import { rememberSecret } from '../helpers/secrets.js';
import { call, EXAMPLE_DIR, KEY_LINE_RE } from './apikeys.setup.js';

/**
 * Issue 15: a script written for the original Santokit's `stk` runs unchanged. The OPERATOR-001 → 002
 * → 005 → 006 flow with the upstream command spellings only (`--flag value`, the env name last, the
 * key revoked by name, `org remove`, `project remove`, the release flags), through the real CLI
 * against a real Hub, Bridge and PostgreSQL, authenticated the upstream way: STK_HUB_URL and
 * STK_AUTH_TOKEN, never `stk login`, run from the folder holding schema/ and config/ (as the
 * reference tests do). Invites are ours (a code), so the invitee runs the line the invite printed.
 */

const P = 'shop_1a2b3c4d';
const VIEWER_PW = 'viewer-password-1';
const ORG_PW = 'orgmember-password-1';

describe('upstream stk spellings end to end', () => {
  let hub: Awaited<ReturnType<typeof startHub>>;
  let bridge: Proc;
  let cfg: string;
  let fixture: string;
  let owner: string;
  const dbs: Array<Awaited<ReturnType<typeof createTestDatabase>>> = [];
  let key = '';
  let release1 = '';
  let release2 = '';

  /** `cd <fixture> && stk …` with STK_HUB_URL and STK_AUTH_TOKEN, as the reference's runStkCli does */
  const stk = (args: string[], token: string | undefined = owner) =>
    runStk(args, { cwd: fixture, env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: token } });
  const ok = async (args: string[], token?: string): Promise<RunResult> => {
    const r = await stk(args, token);
    expect(r.code, `stk ${args.join(' ')}\n${r.output}`).toBe(0);
    return r;
  };
  /** denied: non-zero exit and the HTTP status in the output (what OPERATOR-006 greps for) */
  const denied = async (args: string[], token: string) => {
    const r = await stk(args, token);
    expect(r.code, r.output).not.toBe(0);
    expect(r.output).toContain('403');
    return r;
  };
  const callAs = (k: string) => call(bridge, k, { project: P, env: 'dev' });

  /**
   * Runs the accept line an invite printed, verbatim, through a shell on a real terminal in the
   * checkout (where `npx stk` is this CLI), and types the password at its prompt; then the login
   * line it prints, the same way. Nothing of the inviter's environment is inherited.
   */
  async function acceptPrintedInvite(inviteOutput: string, email: string, password: string): Promise<string> {
    const line = /^ {2}(npx --no stk invite accept .*)$/m.exec(inviteOutput)?.[1];
    expect(line, inviteOutput).toBeTruthy();
    expect(line).toContain(`--hub ${hub.url} --email ${email} --code stki_`);
    rememberSecret('invite-code', /--code (\S+)/.exec(line!)![1]);
    const own = { STK_CONFIG_DIR: tempConfigDir(), STK_HUB_URL: undefined, STK_AUTH_TOKEN: undefined, STK_NO_INPUT: undefined, NO_COLOR: '1' };
    const accept = spawnPty(['sh', '-c', line!], { cwd: ROOT, env: own });
    await accept.waitFor('Password: ', 60_000);
    accept.write(password + '\r');
    expect(await accept.exit, accept.output()).toBe(0);
    const login = /log in with: (npx --no stk login .*)$/m.exec(accept.output())?.[1]?.trim();
    expect(login, accept.output()).toBe(`npx --no stk login --hub ${hub.url} --email ${email}`);
    const session = spawnPty(['sh', '-c', login!], { cwd: ROOT, env: own });
    await session.waitFor('Password: ', 60_000);
    session.write(password + '\r');
    expect(await session.exit, session.output()).toBe(0);
    expect(session.output()).toContain(`Logged in to ${hub.url} as ${email}`);
    // the token the reference tests use: POST /api/auth/login
    return await loginToken(hub.url, email, password);
  }

  beforeAll(async () => {
    hub = await startHub();
    bridge = await startBridge({ hubUrl: hub.url, serviceToken: hub.serviceToken });
    for (const name of ['upstream_dev', 'upstream_prod']) dbs.push(await createTestDatabase(name));
    cfg = tempConfigDir();
    fixture = mkdtempSync(join(tmpdir(), 'stk-upstream-'));
    cpSync(EXAMPLE_DIR, fixture, { recursive: true });
    owner = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
  }, 120_000);
  afterAll(async () => {
    await bridge?.stop();
    await hub?.stop();
    for (const d of dbs) await d.drop();
  });

  it('OPERATOR-001: project create <p>, env create --project <p> <env>, connections set/test', async () => {
    await ok(['project', 'create', P]);
    await ok(['env', 'create', '--project', P, 'dev']);
    await ok(['env', 'create', '--project', P, 'prod']);
    for (const [env, db] of [
      ['dev', dbs[0]!],
      ['prod', dbs[1]!],
    ] as const) {
      await ok(['connections', 'set', '--project', P, '--env', env, '--name', 'main', '--engine', 'postgres', '--db-url', db.url]);
      await ok(['connections', 'test', '--project', P, '--env', env, '--name', 'main']);
    }
    // a failure exits non-zero and names the HTTP status
    const missing = await stk(['connections', 'test', '--project', P, '--env', 'dev', '--name', 'nope']);
    expect(missing.code).toBe(1);
    expect(missing.output).toContain('404');
    // never logged in: the environment was enough
    expect(existsSync(join(cfg, 'credentials.json'))).toBe(false);
  });

  it('OPERATOR-002: apply --ref from the fixture folder, apikey create (the key line), /call 200, list shows the name, revoke --key-id <name> → 401', async () => {
    await ok(['apply', '--project', P, '--env', 'dev', '--ref', 'v1']);
    const created = await ok(['apikey', 'create', '--project', P, '--env', 'dev', '--name', 'server', '--roles', 'reader,admin']);
    key = rememberSecret('api-key', KEY_LINE_RE.exec(created.output)?.[1]) ?? '';
    expect(key, created.output).toBeTruthy();
    expect((await callAs(key)).status).toBe(200);

    const list = await ok(['apikey', 'list', '--project', P, '--env', 'dev']);
    expect(list.output).toContain('server');
    expect(list.output).not.toContain(key);

    // by name, off a terminal, without --yes: no question, exit 0
    await ok(['apikey', 'revoke', '--project', P, '--env', 'dev', '--key-id', 'server']);
    expect((await callAs(key)).status).toBe(401);
  });

  it('releases: current, list --limit, show --release-id, promote --from --to [--release-id], rollback --to-release-id', async () => {
    const current = await ok(['release', 'current', '--project', P, '--env', 'dev']);
    release1 = /release:\s+(\S+)/.exec(current.stdout)![1]!;
    expect(current.stdout).toContain('ref:         v1');
    const list = await ok(['release', 'list', '--project', P, '--limit', '1']);
    expect(list.stdout.trim().split('\n')).toHaveLength(1);
    expect(list.stdout).toContain(release1);
    const show = await ok(['release', 'show', '--project', P, '--release-id', release1]);
    expect(show.stdout).toContain('table users');

    await ok(['release', 'promote', '--project', P, '--from', 'dev', '--to', 'prod']);
    expect((await ok(['release', 'current', '--project', P, '--env', 'prod'])).stdout).toContain(release1);

    // a second release on dev (one more column), promoted by id
    const users = join(fixture, 'schema/users.yaml');
    writeFileSync(
      users,
      readFileSync(users, 'utf8').replace(
        '      name: { type: string, nullable: true }\n',
        '      name: { type: string, nullable: true }\n      nickname: { type: string, nullable: true }\n',
      ),
    );
    await ok(['apply', '--project', P, '--env', 'dev', '--ref', 'v2']);
    release2 = /release:\s+(\S+)/.exec((await ok(['release', 'current', '--project', P, '--env', 'dev'])).stdout)![1]!;
    expect(release2).not.toBe(release1);
    await ok(['release', 'promote', '--project', P, '--from', 'dev', '--to', 'prod', '--release-id', release2]);
    expect((await ok(['release', 'current', '--project', P, '--env', 'prod'])).stdout).toContain(release2);
    const listed = await ok(['release', 'list', '--project', P]);
    expect(listed.stdout.indexOf(release2)).toBeLessThan(listed.stdout.indexOf(release1));

    await ok(['release', 'rollback', '--project', P, '--env', 'prod', '--to-release-id', release1]);
    expect((await ok(['release', 'current', '--project', P, '--env', 'prod'])).stdout).toContain(release1);
  });

  it('schema snapshot --project --env records the live schema (a store row), prints it; schema drift reports what changed by hand since', async () => {
    const first = await ok(['schema', 'snapshot', '--project', P, '--env', 'dev', '--json']);
    const snap = JSON.parse(first.stdout);
    expect(snap).toMatchObject({ project: P, env: 'dev', releaseId: release2, summary: { connections: 1, tables: 2, columns: 12 }, takenBy: TEST_OWNER.email });
    const users = snap.connections[0].tables.find((t: { name: string }) => t.name === 'users');
    expect(users.columns.map((c: { name: string }) => c.name)).toEqual(['id', 'email', 'name', 'created_at', 'nickname']);
    expect(users.columns[1]).toEqual({ name: 'email', type: 'text', nullable: false, default: null });
    const posts = snap.connections[0].tables.find((t: { name: string }) => t.name === 'posts');
    expect(posts.foreignKeys).toEqual([{ columns: ['author_id'], refTable: 'users', refColumns: ['id'], onDelete: 'cascade', onUpdate: 'restrict' }]);

    // what the Hub stored is what it printed
    const store = openSqlite(hub.dbUrl.replace(/^sqlite:\/\//, ''), { readonly: true });
    try {
      const row = store.prepare('select * from schema_snapshots where id = ?').get(snap.snapshotId) as Record<string, unknown>;
      expect(row).toMatchObject({ release_id: release2, tables: 2, columns: 12 });
      expect(JSON.parse(row.schema_json as string)).toEqual(snap.connections);
      expect(store.prepare("select count(*) as n from audit_log where action = 'schema.snapshot'").get()).toEqual({ n: 1 });
    } finally {
      store.close();
    }

    const clean = await ok(['schema', 'drift', '--project', P, '--env', 'dev', '--exit-code']);
    expect(clean.stderr).toContain(`No drift in ${P}/dev: the live schema matches snapshot ${snap.snapshotId}`);

    await query(
      dbs[0]!.url,
      'ALTER TABLE users ADD COLUMN phone text; ALTER TABLE posts ALTER COLUMN body SET NOT NULL; CREATE INDEX users_name_ix ON users (name)',
    );
    const drift = await stk(['schema', 'drift', '--project', P, '--env', 'dev', '--exit-code']);
    expect(drift.code, drift.output).toBe(1);
    expect(drift.stdout).toContain('+ main: column users.phone added (text, nullable)');
    expect(drift.stdout).toContain('~ main: column posts.body changed: text, nullable → text, not null');
    expect(drift.stdout).toContain('+ main: index users_name_ix on (name) added');
    expect(drift.stderr).toContain('drifted from snapshot');

    // a new snapshot says what changed since the previous one, in the text form too
    const second = await ok(['schema', 'snapshot', '--project', P, '--env', 'dev']);
    expect(second.stdout).toMatch(/^main\tposts\t7\tyes$/m);
    expect(second.stdout).toContain(`Changes since the previous snapshot ${snap.snapshotId}:`);
    expect(second.stdout).toContain('+ main: column users.phone added (text, nullable)');
    expect((await ok(['schema', 'drift', '--project', P, '--env', 'dev', '--exit-code'])).stderr).toContain('No drift');

    // an env without a snapshot: 404; a database with too many tables is refused before it is read
    const none = await stk(['schema', 'drift', '--project', P, '--env', 'prod']);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(`no schema snapshot of ${P}/prod yet: record one with 'stk schema snapshot --project ${P} --env prod' (404 NOT_FOUND)`);
    await query(dbs[1]!.url, `DO $$ BEGIN FOR i IN 1..1000 LOOP EXECUTE format('CREATE TABLE many_%s ()', i); END LOOP; END $$`);
    try {
      const big = await stk(['schema', 'snapshot', '--project', P, '--env', 'prod']);
      expect(big.code).toBe(1);
      expect(big.stderr).toContain('too much schema to snapshot (at least 1002 tables');
      expect(big.stderr).toContain('(409 CONFLICT)');
    } finally {
      await query(dbs[1]!.url, `DO $$ BEGIN FOR i IN 1..1000 LOOP EXECUTE format('DROP TABLE many_%s', i); END LOOP; END $$`);
    }
  });

  it('OPERATOR-006: project invite prints the line the invitee runs; a viewer is denied (403); set-role admin lets them create keys; project remove takes it away', async () => {
    const inv = await ok(['project', 'invite', 'viewer@example.com', '--role', 'viewer', '--project', P]);
    const viewer = await acceptPrintedInvite(inv.stdout, 'viewer@example.com', VIEWER_PW);

    await denied(['apikey', 'create', '--project', P, '--env', 'dev', '--name', 'viewer-key', '--roles', 'reader'], viewer);
    await denied(['apikey', 'list', '--project', P, '--env', 'dev'], viewer);
    await denied(['apikey', 'revoke', '--project', P, '--env', 'dev', '--key-id', 'server'], viewer);
    await denied(['release', 'rollback', '--project', P, '--env', 'prod', '--to-release-id', release2], viewer);
    await denied(['schema', 'snapshot', '--project', P, '--env', 'dev'], viewer);
    await denied(['schema', 'drift', '--project', P, '--env', 'dev'], viewer);
    // a viewer reads
    expect((await ok(['release', 'list', '--project', P, '--limit', '5'], viewer)).stdout).toContain(release1);

    await ok(['project', 'members', 'set-role', 'viewer@example.com', '--role', 'admin', '--project', P]);
    const made = await ok(['apikey', 'create', '--project', P, '--env', 'dev', '--name', 'viewer-key', '--roles', 'reader'], viewer);
    expect(made.output).toContain('API Key');
    const viewerKey = rememberSecret('api-key', KEY_LINE_RE.exec(made.output)![1])!;
    expect((await callAs(viewerKey)).status).toBe(200);

    await ok(['project', 'remove', 'viewer@example.com', '--project', P]);
    await denied(['apikey', 'list', '--project', P, '--env', 'dev'], viewer);
    // the alias and ours are one command: removing again is the same 404 either way
    const again = await stk(['project', 'members', 'remove', 'viewer@example.com', '--project', P]);
    const aliasAgain = await stk(['project', 'remove', 'viewer@example.com', '--project', P]);
    expect(again.code).toBe(1);
    expect(aliasAgain.code).toBe(1);
    expect(aliasAgain.stderr).toBe(again.stderr);
  });

  it('OPERATOR-006 org scope: org invite → the printed line, org members set-role, org remove', async () => {
    const inv = await ok(['org', 'invite', 'ops@example.com', '--role', 'member']);
    const member = await acceptPrintedInvite(inv.stdout, 'ops@example.com', ORG_PW);
    // an org member holds no project role
    await denied(['apikey', 'list', '--project', P, '--env', 'dev'], member);
    await denied(['org', 'invite', 'nobody@example.com', '--role', 'member'], member);

    await ok(['org', 'members', 'set-role', 'ops@example.com', '--role', 'admin']);
    expect((await ok(['apikey', 'list', '--project', P, '--env', 'dev'], member)).output).toContain('viewer-key');

    await ok(['org', 'remove', 'ops@example.com']);
    const after = await stk(['apikey', 'list', '--project', P, '--env', 'dev'], member);
    expect(after.code).not.toBe(0);
    expect(after.output).toMatch(/40[13]/);
  });

  it('an invalid role is 422 and exits non-zero; the upstream name format is accepted where ours was narrower', async () => {
    const bad = await stk(['project', 'invite', 'x@example.com', '--role', 'superuser', '--project', P]);
    expect(bad.code).toBe(1);
    expect(bad.output).toContain('422');
    await ok(['env', 'create', '--project', P, 'qa_2']);
    expect((await ok(['env', 'list', '--project', P])).stdout).toContain('qa_2');
  });
});
