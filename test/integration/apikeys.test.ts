import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqlite } from '../helpers/sqlite.js';
import { waitFor, type Proc } from '../helpers/procs.js';
import { loginToken, runStk } from '../helpers/cli.js';
import { rememberSecret } from '../helpers/secrets.js';
import { call, EXAMPLE_DIR, KEY_LINE_RE, startStack, type Stack } from './apikeys.setup.js';
import { API_KEY_RE, checksumOf, formatKey, parseKey } from '../../src/protocol/key-format.js';

/**
 * OPERATOR-002 through the real processes: Hub, two Bridges, the `stk` binary and examples/basic
 * applied to PostgreSQL. The seed criteria and failure modes run verbatim first.
 */
describe('project API keys (OPERATOR-002)', () => {
  let s: Stack;
  let b1: Proc;
  let b2: Proc;
  /** every plaintext key created here, and where it may legitimately appear */
  const plaintexts: string[] = [];
  /** Hub responses and CLI outputs, tagged with the one plaintext they may contain (their create/rotate) */
  const transcript: Array<{ what: string; text: string; allowed?: string }> = [];
  const remember = (what: string, text: string, allowed?: string) => transcript.push({ what, text, allowed });
  let viewerToken: string;
  let deployerToken: string;

  const stk = async (args: string[], token?: string) => {
    const r = await s.stk(args, token);
    const key = KEY_LINE_RE.exec(r.stdout)?.[1];
    if (key) plaintexts.push(rememberSecret('api-key', key));
    remember(`stk ${args.join(' ')}`, r.output, key);
    return r;
  };
  const api = async (method: string, path: string, body?: unknown, token?: string) => {
    const r = await s.api(method, path, body, token);
    const key = typeof r.json?.apiKey === 'string' ? (r.json.apiKey as string) : undefined;
    if (key) plaintexts.push(rememberSecret('api-key', key));
    remember(`${method} ${path}`, r.text, key);
    return r;
  };
  const base = () => `/api/projects/${s.project}/envs/${s.env}/apikeys`;
  const create = async (name: string, roles: string, extra: string[] = []) => {
    const r = await stk(['apikey', 'create', '--project', s.project, '--env', s.env, '--name', name, '--roles', roles, ...extra]);
    expect(r.code, r.output).toBe(0);
    return { key: KEY_LINE_RE.exec(r.stdout)![1]!, keyId: /Key ID: (\S+)/.exec(r.stdout)![1]!, r };
  };
  const both = async (key: string) => Promise.all([call(b1, key, { project: s.project, env: s.env }), call(b2, key, { project: s.project, env: s.env })]);

  beforeAll(async () => {
    // an upstream-style project name (the reference tests use apikey_<8 hex>): '_' works end to end
    s = await startStack({ bridges: 2, project: `apikey_${randomBytes(4).toString('hex')}` });
    [b1, b2] = s.bridges as [Proc, Proc];
    const join = async (email: string, role: string) => {
      const inv = await s.api('POST', `/api/projects/${s.project}/invites`, { email, role });
      expect(inv.status, inv.text).toBe(201);
      const acc = await fetch(s.hub.url + '/api/invites/accept', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email, code: inv.json.inviteCode, password: 'member-password-1' }),
      });
      expect(acc.status).toBe(200);
      return loginToken(s.hub.url, email, 'member-password-1');
    };
    viewerToken = await join('viewer@example.com', 'viewer');
    deployerToken = await join('deployer@example.com', 'deployer');
  });
  afterAll(async () => {
    await s?.stop();
  });

  describe('seed acceptance criteria', () => {
    let key: string;
    let keyId: string;

    it('stk apikey create exits 0 and prints the plaintext key exactly once, plus the key id', async () => {
      const r = await stk(['apikey', 'create', '--project', s.project, '--env', s.env, '--name', 'server', '--roles', 'admin,reader']);
      expect(r.code, r.output).toBe(0);
      const m = KEY_LINE_RE.exec(r.output);
      expect(m).not.toBeNull();
      key = m![1]!;
      expect(key).toMatch(/^\S+$/);
      expect(key).toMatch(API_KEY_RE);
      expect(r.output.split(key).length - 1).toBe(1); // exactly once
      expect(r.stdout.match(/^API Key \(store securely\): /gm)).toHaveLength(1);
      keyId = /^Key ID: (\S+)$/m.exec(r.stdout)![1]!;
      expect(key).toContain(`_${keyId}_`);
      expect(r.stderr).toMatch(/shown only once/);
    });

    it('stk apikey list exits 0 and lists the key with status: active (bare `active` when piped), never the secret or its hash', async () => {
      const r = await stk(['apikey', 'list', '--project', s.project, '--env', s.env]);
      expect(r.code, r.output).toBe(0);
      const line = r.stdout.split('\n').find((l) => l.includes('server'))!;
      expect(line.split('\t').slice(0, 4)).toEqual([keyId, 'server', 'admin,reader', 'active']);
      const human = await runStk(['apikey', 'list', '--project', s.project, '--env', s.env], {
        env: { STK_CONFIG_DIR: s.cfg, STK_HUB_URL: s.hub.url, STK_AUTH_TOKEN: s.owner, STK_FORCE_TTY: '1' },
      });
      expect(human.stdout.split('\n').find((l) => l.includes('server'))).toMatch(new RegExp(`^${keyId} +server +admin,reader +status: active `));
      const j = await stk(['apikey', 'list', '--project', s.project, '--env', s.env, '--json']);
      expect(j.code).toBe(0);
      const items = JSON.parse(j.stdout) as Array<Record<string, unknown>>;
      expect(Array.isArray(items)).toBe(true);
      const item = items.find((i) => i.name === 'server')!;
      expect(item).toMatchObject({ keyId, name: 'server', roles: ['admin', 'reader'], status: 'active', lastUsedAt: null, expiresAt: null });
      expect(typeof item.createdAt).toBe('string');
      for (const f of ['keyId', 'name', 'roles', 'status', 'createdAt', 'lastUsedAt', 'expiresAt']) expect(item).toHaveProperty(f);
      // the stored hash is HMAC-SHA-256(pepper, secret) with the pepper derived from STK_SECRET_KEY
      const pepper = Buffer.from(hkdfSync('sha256', Buffer.from(s.hub.secretKey, 'hex'), Buffer.alloc(0), 'santokit/apikey-pepper/v1', 32));
      const secret = (parseKey(key) as { secret: string }).secret;
      const hash = createHmac('sha256', pepper).update(secret).digest('hex');
      for (const out of [r.output, j.output]) {
        expect(out).not.toContain(key);
        expect(out).not.toContain(secret);
        expect(out).not.toContain(hash);
      }
    });

    it('POST /call with X-Santokit-Api-Key on db/users/select → 200 while active (both Bridges)', async () => {
      for (const r of await both(key)) {
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expect(Array.isArray(r.body.data)).toBe(true);
      }
    });

    it('stk apikey revoke --key-id <name> exits 0, status becomes revoked, the very next /call → 401 on every Bridge', async () => {
      const r = await stk(['apikey', 'revoke', '--project', s.project, '--env', s.env, '--key-id', 'server']);
      expect(r.code, r.output).toBe(0);
      expect(r.output).toContain('Bridges: 2/2 confirmed');
      for (const c of await both(key)) {
        expect(c.status).toBe(401);
        expect(c.body.error).toMatchObject({ code: 'UNAUTHORIZED', message: 'API key revoked' });
        expect(typeof c.body.error.requestId).toBe('string');
      }
      const l = await stk(['apikey', 'list', '--project', s.project, '--env', s.env, '--json']);
      expect((JSON.parse(l.stdout) as Array<{ keyId: string; status: string }>).find((k) => k.keyId === keyId)!.status).toBe('revoked');
      const h = await stk(['apikey', 'list', '--project', s.project, '--env', s.env]);
      expect(h.stdout).toMatch(/\tserver\t.*\trevoked\t/);
    });

    it('failure mode: without project:admin, create/list/revoke exit non-zero and the Hub answers 403', async () => {
      for (const token of [viewerToken, deployerToken]) {
        const c = await stk(['apikey', 'create', '--project', s.project, '--env', s.env, '--name', 'nope', '--roles', 'admin'], token);
        const l = await stk(['apikey', 'list', '--project', s.project, '--env', s.env], token);
        const v = await stk(['apikey', 'revoke', '--project', s.project, '--env', s.env, '--key-id', 'server'], token);
        for (const r of [c, l, v]) {
          expect(r.code).not.toBe(0);
          expect(r.output).toContain('403');
          expect(r.output).toContain('FORBIDDEN');
        }
        for (const [m, p] of [
          ['POST', base()],
          ['GET', base()],
          ['POST', `${base()}/server/revoke`],
          ['POST', `${base()}/server/rotate`],
        ] as const) {
          expect((await api(m, p, m === 'POST' ? { name: 'x', roles: ['admin'] } : undefined, token)).status).toBe(403);
        }
      }
    });

    it('failure mode: invalid role bindings → exit non-zero, Hub 422 INVALID_ROLE', async () => {
      const r = await stk(['apikey', 'create', '--project', s.project, '--env', s.env, '--name', 'badroles', '--roles', 'superuser']);
      expect(r.code).not.toBe(0);
      expect(r.output).toContain('422');
      expect(r.output).toContain('INVALID_ROLE');
      expect(r.output).toContain('Valid roles: admin, reader');
    });
  });

  describe('lifecycle', () => {
    it('revoke by id; revoking again is a no-op that says so; unknown key → 404', async () => {
      const { key, keyId } = await create('by-id', 'reader');
      expect((await both(key)).map((c) => c.status)).toEqual([200, 200]);
      const r = await stk(['apikey', 'revoke', '--project', s.project, '--env', s.env, '--key-id', keyId]);
      expect(r.code, r.output).toBe(0);
      expect(r.output).toContain(`Revoked API key ${keyId}`);
      expect((await both(key)).map((c) => c.status)).toEqual([401, 401]);
      const again = await stk(['apikey', 'revoke', '--project', s.project, '--env', s.env, '--key-id', keyId]);
      expect(again.code).toBe(0);
      expect(again.output).toContain('already revoked');
      const j = await api('POST', `${base()}/${keyId}/revoke`, {});
      expect(j.status).toBe(200);
      expect(j.json).toMatchObject({ keyId, alreadyRevoked: true, status: 'revoked' });
      const missing = await stk(['apikey', 'revoke', '--project', s.project, '--env', s.env, '--key-id', 'no-such-key']);
      expect(missing.code).toBe(1);
      expect(missing.output).toContain('404 NOT_FOUND');
      expect((await api('POST', `${base()}/ZZZZZZZZZZZZ/revoke`, {})).status).toBe(404);
    });

    it('422 INVALID_ROLE for each invalid-role class', async () => {
      const cases: Array<[unknown, RegExp]> = [
        [undefined, /roles are required/],
        [[], /roles are required/],
        ['', /roles are required/],
        [['admin', ' '], /empty role/],
        [['admin', 'admin'], /duplicate role admin/],
        [[' reader', 'reader '], /duplicate role reader/],
        [['bad-role'], /invalid role "bad-role"/],
        [['1st'], /invalid role "1st"/],
        [['public'], /reserved/],
        [['authenticated'], /reserved/],
        [['admin', 'ghost', 'phantom'], /unknown roles ghost, phantom.*Valid roles: admin, reader/],
      ];
      for (const [roles, msg] of cases) {
        const r = await api('POST', base(), { name: 'roles-case', roles });
        expect(r.status, JSON.stringify(roles)).toBe(422);
        expect(r.json.error.code).toBe('INVALID_ROLE');
        expect(r.json.error.message).toMatch(msg);
      }
      // roles are trimmed
      const ok = await api('POST', base(), { name: 'trimmed', roles: [' reader '] });
      expect(ok.status, ok.text).toBe(201);
      expect(ok.json.roles).toEqual(['reader']);
      // no release yet in a fresh env
      expect((await s.stk(['env', 'create', '--project', s.project, 'empty'])).code).toBe(0);
      const nr = await stk(['apikey', 'create', '--project', s.project, '--env', 'empty', '--name', 'early', '--roles', 'admin']);
      expect(nr.code).toBe(1);
      expect(nr.output).toContain('run `stk apply` first');
      expect(nr.output).toContain('422 INVALID_ROLE');
      // the CLI keeps empties so the Hub can reject them
      const cli = await stk(['apikey', 'create', '--project', s.project, '--env', s.env, '--name', 'commas', '--roles', 'admin,,reader']);
      expect(cli.code).toBe(1);
      expect(cli.output).toContain('empty role');
    });

    it('names: duplicate → 409, bad name → 400, missing flags → exit 2; unknown env → 404', async () => {
      await create('dup', 'reader');
      const d = await stk(['apikey', 'create', '--project', s.project, '--env', s.env, '--name', 'dup', '--roles', 'reader']);
      expect(d.code).toBe(1);
      expect(d.output).toContain('409 CONFLICT');
      expect((await api('POST', base(), { name: 'Bad Name', roles: ['reader'] })).status).toBe(400);
      const u = await stk(['apikey', 'create', '--project', s.project, '--env', s.env, '--name', 'x']);
      expect(u.code).toBe(2);
      expect((await api('GET', `/api/projects/${s.project}/envs/nope/apikeys`)).status).toBe(404);
      expect((await stk(['apikey', 'create', '--project', s.project, '--env', s.env, '--name', 'rl', '--roles', 'reader', '--rate-limit', 'fast'])).code).toBe(
        2,
      );
    });

    it('expiry: --expires-in works until the deadline, then 401 "API key expired" and list shows status: expired', async () => {
      const { key, keyId } = await create('short-lived', 'reader', ['--expires-in', '3s']);
      const c = await call(b1, key);
      expect(c.status).toBe(200);
      await waitFor(async () => (await call(b1, key)).status === 401, 15_000, 'key to expire');
      for (const r of await both(key)) expect(r.body.error.message).toBe('API key expired');
      const l = await stk(['apikey', 'list', '--project', s.project, '--env', s.env]);
      expect(
        l.stdout
          .split('\n')
          .find((x) => x.includes(keyId))!
          .split('\t')[3],
      ).toBe('expired');
      const past = await stk([
        'apikey',
        'create',
        '--project',
        s.project,
        '--env',
        s.env,
        '--name',
        'past',
        '--roles',
        'reader',
        '--expires-at',
        '2001-01-01T00:00:00Z',
      ]);
      expect(past.code).toBe(1);
      expect(past.output).toContain('400 BAD_REQUEST');
      // the Hub names the refused field as its API does (details.fields); the CLI says the flag the user typed
      expect(past.output).toContain('--expires-at must be in the future');
      expect(past.output).not.toContain('expiresAt');
      const far = await stk(['apikey', 'create', '--project', s.project, '--env', s.env, '--name', 'far', '--roles', 'reader', '--expires-in', '4000d']);
      expect(far.code).toBe(1);
      expect(far.output).toContain('--expires-in must be between 1s and 3650d');
      const farApi = await api('POST', base(), { name: 'far', roles: ['reader'], expiresIn: '4000d' });
      expect(farApi.status).toBe(400);
      expect(farApi.json.error.details).toEqual({ fields: [{ in: 'body', field: 'expiresIn', message: 'expiresIn must be between 1s and 3650d' }] });
      // a value the contract's schema refuses: the same details, the message as the schema check words it
      const typed = await api('POST', base(), { name: 'typed', roles: ['reader'], rateLimitPerMin: 'fast' });
      expect(typed.status).toBe(400);
      expect(typed.json.error.message).toMatch(/^body\.rateLimitPerMin: /);
      expect(typed.json.error.details.fields).toMatchObject([{ in: 'body', field: 'rateLimitPerMin' }]);
      const at = await api('POST', base(), { name: 'dated', roles: ['reader'], expiresAt: new Date(Date.now() + 86400_000).toISOString() });
      expect(at.status).toBe(201);
      expect(at.json.expiresAt).toMatch(/^\d{4}-/);
      expect((await api('POST', base(), { name: 'both', roles: ['reader'], expiresIn: '1d', expiresAt: at.json.expiresAt })).status).toBe(400);
    });

    it('rotation without grace: same id, name and roles; the new key works and the old one is rejected at once', async () => {
      const { key: old, keyId } = await create('rotate-now', 'reader');
      expect((await both(old)).map((c) => c.status)).toEqual([200, 200]);
      const r = await stk(['apikey', 'rotate', '--project', s.project, '--env', s.env, '--key-id', 'rotate-now']);
      expect(r.code, r.output).toBe(0);
      const fresh = KEY_LINE_RE.exec(r.stdout)![1]!;
      expect(fresh).not.toBe(old);
      expect(r.stdout).toContain(`Key ID: ${keyId}`);
      expect(r.output).toContain('stopped working now');
      expect((await both(fresh)).map((c) => c.status)).toEqual([200, 200]);
      expect((await both(old)).map((c) => c.status)).toEqual([401, 401]);
      const k = (await api('GET', `${base()}/${keyId}`)).json;
      expect(k).toMatchObject({ keyId, name: 'rotate-now', roles: ['reader'], status: 'active' });
      expect(k.rotatedAt).toBeTruthy();
    });

    it('rotation with grace: both secrets work until the deadline, then only the new one', async () => {
      const { key: old, keyId } = await create('rotate-grace', 'reader');
      const r = await api('POST', `${base()}/${keyId}/rotate`, { grace: '3s' });
      expect(r.status, r.text).toBe(200);
      expect(r.json.ack).toEqual({ bridges: 2, acked: 2, lagging: [] });
      const fresh = r.json.apiKey as string;
      expect(r.json.previousSecretValidUntil).toBeTruthy();
      expect((await both(old)).map((c) => c.status)).toEqual([200, 200]);
      expect((await both(fresh)).map((c) => c.status)).toEqual([200, 200]);
      await waitFor(async () => (await call(b2, old)).status === 401, 15_000, 'grace period to end');
      expect((await both(old)).map((c) => c.status)).toEqual([401, 401]);
      expect((await both(fresh)).map((c) => c.status)).toEqual([200, 200]);
      expect((await api('POST', `${base()}/${keyId}/rotate`, { grace: '8d' })).status).toBe(400);
      // a revoked key cannot be rotated
      await api('POST', `${base()}/${keyId}/revoke`, {});
      expect((await api('POST', `${base()}/${keyId}/rotate`, {})).status).toBe(409);
      expect((await both(fresh)).map((c) => c.status)).toEqual([401, 401]);
    });

    it('update: a role change is applied by every Bridge before the command returns', async () => {
      const { key } = await create('changing', 'admin');
      const insert = { path: 'db/users/insert', params: { data: { email: 'changing@example.com', name: 'C' } }, project: s.project, env: s.env };
      const before = await call(b1, key, insert);
      expect(before.status, JSON.stringify(before.body)).toBe(200);
      expect(before.body.data.email).toBe('changing@example.com');
      const r = await stk(['apikey', 'update', '--project', s.project, '--env', s.env, '--key-id', 'changing', '--roles', 'reader']);
      expect(r.code, r.output).toBe(0);
      expect(r.output).toContain('Bridges: 2/2 confirmed');
      for (const b of [b1, b2]) {
        const c = await call(b, key, { ...insert, params: { data: { email: `after-${b.port}@example.com` } } });
        expect(c.status).toBe(403);
        expect((await call(b, key)).status).toBe(200);
      }
    });
  });

  describe('Bridge verify path', () => {
    it('a malformed or mistyped key is rejected by its checksum before any lookup; unknown ids and wrong secrets are plain 401s', async () => {
      const { key } = await create('checksum', 'reader');
      const p = parseKey(key) as { keyId: string; secret: string; tag?: string };
      // one character of the secret changed: caught by the CRC, never reaches the key table
      const typo = key.slice(0, -10) + (key.at(-10) === 'a' ? 'b' : 'a') + key.slice(-9);
      const t = await call(b1, typo);
      expect(t.status).toBe(401);
      expect(t.body.error.message).toMatch(/checksum mismatch/);
      // truncated (a bad copy-paste): the message docs/api-keys.md promises
      const tr = await call(b1, key.slice(0, -1));
      expect(tr.status).toBe(401);
      expect(tr.body.error.message).toBe('invalid API key: checksum mismatch (mistyped or truncated?)');
      // not a Santokit key at all
      const other = await call(b1, 'sk_live_' + 'x'.repeat(40));
      expect(other.body.error.message).toMatch(/not a Santokit key/);
      // well-formed with a valid checksum: an unknown id, or a known id with a wrong secret
      const unknown = formatKey('ZZZZZZZZZZZZ', p.secret, p.tag);
      const wrong = formatKey(p.keyId, 'A'.repeat(22), p.tag);
      for (const k of [unknown, wrong]) {
        const r = await call(b1, k);
        expect(r.status).toBe(401);
        expect(r.body.error).toMatchObject({ code: 'UNAUTHORIZED', message: 'invalid API key' });
      }
      expect(checksumOf('x')).toHaveLength(6);
      // no credential, an end-user token, a binding mismatch
      expect((await call(b1, undefined)).status).toBe(401);
      const bearer = await call(b1, undefined, { headers: { authorization: 'Bearer abc.def.ghi' } });
      expect(bearer.status).toBe(401);
      expect(bearer.body.error.message).toMatch(/end-user tokens are not supported yet/);
      expect((await call(b1, key, { project: 'other' })).status).toBe(403);
      expect((await call(b1, key, { project: s.project, env: 'prod' })).status).toBe(403);
      expect((await call(b1, key, { project: s.project, env: s.env })).status).toBe(200);
    });

    it('per-key rate limit: 429 TOO_MANY_REQUESTS with Retry-After, then recovery; each Bridge enforces the full limit', async () => {
      const { key } = await create('limited', 'reader', ['--rate-limit', '60/min']);
      let first429: Awaited<ReturnType<typeof call>> | undefined;
      for (let i = 0; i < 70 && !first429; i++) {
        const r = await call(b1, key);
        if (r.status === 429) first429 = r;
        else expect(r.status).toBe(200);
      }
      expect(first429).toBeDefined();
      expect(first429!.body.error.code).toBe('TOO_MANY_REQUESTS');
      expect(first429!.body.error.message).toContain('60 requests/min');
      expect(Number(first429!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      // the other Bridge has its own bucket
      expect((await call(b2, key)).status).toBe(200);
      // 60/min refills one request per second
      await waitFor(async () => (await call(b1, key)).status === 200, 10_000, 'rate limit recovery');
    });

    it('invalid-key floods from one address → 429 for its invalid keys, never for a valid one', async () => {
      const b3 = await s.startBridge({ STK_INVALID_KEY_LIMIT_PER_MIN: '5' });
      const { key } = await create('flood-victim', 'reader');
      expect((await call(b3, key)).status).toBe(200);
      for (let i = 0; i < 5; i++) expect((await call(b3, 'stk_garbage_' + i)).status).toBe(401);
      const blocked = await call(b3, 'stk_garbage_more');
      expect(blocked.status).toBe(429);
      expect(blocked.body.error.message).toMatch(/too many invalid API keys/);
      expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      // the valid key from the same address is still served
      expect((await call(b3, key)).status).toBe(200);
      // checked from the headers, before the body is parsed: malformed JSON with an invalid key is a 429, not a 400
      const raw = await fetch(b3.url + '/call', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-santokit-api-key': 'stk_garbage_x' },
        body: '{"path": ',
      });
      expect(raw.status).toBe(429);
      // other Bridges are unaffected
      expect((await call(b1, key)).status).toBe(200);
      await b3.stop();
      s.bridges.splice(s.bridges.indexOf(b3), 1);
    });
  });

  describe('usage, dry run and audit', () => {
    it('revoke --dry-run shows last use, requests in the last 60 min and sources, and changes nothing', async () => {
      const { key, keyId } = await create('busy', 'reader');
      for (let i = 0; i < 3; i++) await both(key);
      let out = '';
      await waitFor(
        async () => {
          const r = await stk(['apikey', 'revoke', '--project', s.project, '--env', s.env, '--key-id', 'busy', '--dry-run']);
          out = r.output;
          return r.code === 0 && /Requests in the last 60 min: 6/.test(r.stdout);
        },
        20_000,
        'usage reports from both bridges',
      );
      expect(out).toContain('Dry run: nothing changed');
      expect(out).toMatch(/Last used: \d{4}-\d{2}-\d{2}T\d{2}:\d{2}:00\.000Z \(minute granularity\)/);
      expect(out).toMatch(/Sources: 127\.0\.0\.1 \(6 requests/);
      const j = await api('POST', `${base()}/${keyId}/revoke`, { dryRun: true });
      expect(j.json).toMatchObject({ dryRun: true, keyId, status: 'active', requestsLast60m: 6 });
      expect((await both(key)).map((c) => c.status)).toEqual([200, 200]);
      const list = await stk(['apikey', 'list', '--project', s.project, '--env', s.env, '--json']);
      const item = (JSON.parse(list.stdout) as Array<{ keyId: string; lastUsedAt: string | null; status: string }>).find((k) => k.keyId === keyId)!;
      expect(item.status).toBe('active');
      expect(item.lastUsedAt).toMatch(/:00\.000Z$/);
    });

    it('audit: apikey.create/rotate/revoke/update with actor, key id, name and roles, never a secret', async () => {
      const r = await api('GET', `/api/audit?project=${s.project}&limit=1000`);
      expect(r.status).toBe(200);
      const items = r.json.items as Array<{ action: string; actor: string; detail: Record<string, unknown> }>;
      for (const action of ['apikey.create', 'apikey.rotate', 'apikey.revoke', 'apikey.update']) {
        const e = items.find((i) => i.action === action);
        expect(e, action).toBeDefined();
        expect(e!.actor).toBe('owner@example.com');
        expect(e!.detail).toHaveProperty('keyId');
        expect(e!.detail).toHaveProperty('name');
      }
      const created = items.find((i) => i.action === 'apikey.create' && i.detail.name === 'server')!;
      expect(created.detail.roles).toEqual(['admin', 'reader']);
    });
  });

  it('at most 100 live keys per env: the next create → 409; revoking one makes room', async () => {
    const live = ((await api('GET', base())).json.items as Array<{ status: string }>).filter((k) => k.status === 'active').length;
    for (let i = live; i < 100; i++) {
      const r = await api('POST', base(), { name: `bulk-${i}`, roles: ['reader'] });
      expect(r.status, r.text).toBe(201);
    }
    const over = await stk(['apikey', 'create', '--project', s.project, '--env', s.env, '--name', 'one-too-many', '--roles', 'reader']);
    expect(over.code).toBe(1);
    expect(over.output).toContain('409 CONFLICT');
    expect(over.output).toContain('100 live API keys');
    expect((await api('POST', `${base()}/bulk-99/revoke`, {})).status).toBe(200);
    expect((await api('POST', base(), { name: 'one-too-many', roles: ['reader'] })).status).toBe(201);
  });

  it('list flags keys whose roles a later release no longer references', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stk-stale-'));
    cpSync(EXAMPLE_DIR, dir, { recursive: true });
    const perms = join(dir, 'config/permissions.yaml');
    // a release in which no rule mentions `reader` any more
    writeFileSync(perms, readFileSync(perms, 'utf8').replace(/^\s+- roles: \[reader\]\n(\s+(columns|condition):.*\n)*/gm, ''));
    expect(readFileSync(perms, 'utf8')).not.toContain('reader');
    const a = await s.stk(['apply', '--project', s.project, '--env', s.env, '--dir', dir]);
    expect(a.code, a.output).toBe(0);
    const l = await stk(['apikey', 'list', '--project', s.project, '--env', s.env]);
    expect(l.code).toBe(0);
    expect(l.stderr).toMatch(/key \S+ \("one-too-many"\): role\(s\) reader are no longer referenced by the current release/);
    const j = JSON.parse((await stk(['apikey', 'list', '--project', s.project, '--env', s.env, '--json'])).stdout) as Array<{
      name: string;
      staleRoles: string[];
    }>;
    expect(j.find((k) => k.name === 'one-too-many')!.staleRoles).toEqual(['reader']);
    expect(j.find((k) => k.name === 'changing')!.staleRoles).toEqual(['reader']);
    // new keys cannot ask for it any more
    const c = await stk(['apikey', 'create', '--project', s.project, '--env', s.env, '--name', 'late-reader', '--roles', 'reader']);
    expect(c.output).toContain('422 INVALID_ROLE');
    expect(c.output).toContain('Valid roles: admin');
  });

  it('the plaintext key appears only in its own create/rotate output: not in the Hub store, logs, or any other response', async () => {
    expect(plaintexts.length).toBeGreaterThan(10);
    const secrets = plaintexts.map((k) => (parseKey(k) as { secret: string }).secret);
    // internal sync responses too (they carry hashes, never secrets)
    const snap = await fetch(s.hub.url + '/internal/sync/snapshot', { headers: { 'x-santokit-service-token': s.hub.serviceToken } });
    remember('snapshot', await snap.text());
    // the store: raw file bytes and every table's rows
    const file = s.hub.dbUrl.replace(/^sqlite:\/\//, '');
    const raw = [file, file + '-wal']
      .filter(existsSync)
      .map((f) => readFileSync(f).toString('latin1'))
      .join('');
    const db = openSqlite(file, { readonly: true });
    let dump = '';
    try {
      for (const { name } of db.prepare("select name from sqlite_master where type = 'table'").all() as Array<{ name: string }>) {
        dump += JSON.stringify(db.prepare(`select * from "${name}"`).all());
      }
    } finally {
      db.close();
    }
    expect(dump).toContain('server'); // the dump is real
    const logs = s.hub.logs() + s.bridges.map((b) => b.logs()).join('');
    for (const [i, key] of plaintexts.entries()) {
      const secret = secrets[i]!;
      for (const [what, text] of [
        ['store file', raw],
        ['store tables', dump],
        ['logs', logs],
      ] as const) {
        expect(text.includes(key) || text.includes(secret), `${what} contains key #${i}`).toBe(false);
      }
      for (const t of transcript) {
        if (t.allowed === key) continue;
        expect(t.text.includes(secret), `${t.what} contains key #${i}`).toBe(false);
      }
    }
  });
});
