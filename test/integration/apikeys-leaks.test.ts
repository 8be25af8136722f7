import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatKey, newKeyId, newSecret, parseKey } from '../../src/protocol/key-format.js';
import { loginToken } from '../helpers/cli.js';
import { createTestDatabase } from '../helpers/pg.js';
import { waitFor } from '../helpers/procs.js';
import { rememberSecret } from '../helpers/secrets.js';
import { call, startStack, type Stack } from './apikeys.setup.js';

/**
 * `POST /api/leaks` on real processes (a Hub on a PostgreSQL store, a Bridge, the real CLI): leak-report
 * tokens, the project's policy, a full check of each reported key (a wrong secret does nothing), one
 * action per key, and the same answer whatever was reported.
 */
describe('POST /api/leaks', () => {
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  let s: Stack;
  let otherAdmin: string;
  const PW = rememberSecret('password', 'leaks-password-1');
  /** a well-formed, checksummed key nobody ever issued */
  const neverIssued = () => rememberSecret('api-key', formatKey(newKeyId(), newSecret(), 'dev'));
  const report = async (body: unknown, token?: string | null, raw?: string) => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    const r = await fetch(`${s.hub.url}/api/leaks`, { method: 'POST', headers, body: raw ?? JSON.stringify(body) });
    const text = await r.text();
    return { status: r.status, text, json: JSON.parse(text) as any };
  };
  /** a key through the Hub API (faster than a CLI run; the CLI's create has its own tests) */
  const createKey = async (name: string) => {
    const r = await s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apikeys`, { name, roles: ['reader'] });
    expect(r.status, r.text).toBe(201);
    return { key: r.json.apiKey as string, keyId: r.json.keyId as string };
  };
  const auditOf = async (action: string) =>
    ((await s.api('GET', `/api/audit?project=${s.project}&action=${action}&limit=1000`)).json.items ?? []) as Array<{ detail: any; actorType: string }>;

  beforeAll(async () => {
    store = await createTestDatabase('leakstore');
    s = await startStack({ bridges: 1, hub: { dbUrl: store.url } });
    const join = async (email: string, project: string, role: string) => {
      const inv = await s.api('POST', `/api/projects/${project}/invites`, { email, role });
      expect(inv.status, inv.text).toBe(201);
      const code = rememberSecret('invite-code', inv.json.inviteCode);
      const a = await s.api('POST', '/api/invites/accept', { email, code, password: PW }, null as unknown as string);
      expect(a.status, a.text).toBe(200);
      return loginToken(s.hub.url, email, PW);
    };
    expect((await s.api('POST', '/api/projects', { name: 'other' })).status).toBe(201);
    otherAdmin = await join('leaks-other@example.com', 'other', 'admin');
  });
  afterAll(async () => {
    await s?.stop();
    await store?.drop();
  });

  let token: string;

  beforeAll(async () => {
    const t = await s.stk(['leaks', 'token', 'create', 'scanner', '-q']);
    expect(t.code, t.output).toBe(0);
    token = rememberSecret('leak-token', t.stdout.trim());
    expect(token).toMatch(/^stkl_/);
  });

  /** Reports are checked after the answer, one after another: a sentinel acted on means everything before it was checked. */
  const settle = async () => {
    const sentinel = await createKey(`sentinel-${newKeyId().toLowerCase()}`);
    expect((await report([{ token: sentinel.key, type: 'santokit_api_key', url: 'https://example.com/sentinel', source: 'test' }], token)).status).toBe(202);
    await waitFor(async () => (await auditOf('apikey.leaked')).some((e) => e.detail.keyId === sentinel.keyId), 10_000, 'sentinel report processed');
  };

  it('without a token, with a wrong one: 401; too big: 413; too many keys: 400', async () => {
    const k = await createKey('auth-probe');
    const body = [{ token: k.key, url: 'https://example.com/x', source: 'content' }];
    expect((await report(body, null)).status).toBe(401);
    expect((await report(body, 'stkl_' + 'A'.repeat(43))).status).toBe(401);
    expect((await report(body, s.owner)).status).toBe(401); // a session is not a leak-report token
    const big = JSON.stringify([{ token: k.key, url: 'https://example.com/' + 'x'.repeat(70 * 1024) }]);
    expect((await report(null, token, big)).status).toBe(413);
    expect(
      (
        await report(
          Array.from({ length: 101 }, () => ({ token: k.key })),
          token,
        )
      ).status,
    ).toBe(400);
    await settle();
    expect((await call(s.bridges[0]!, k.key)).status).toBe(200);
  });

  it('the default policy suspends a reported key: the next /call is 401 API key suspended', async () => {
    const b = s.bridges[0]!;
    const shown = await s.stk(['leaks', 'policy', 'show', '--project', s.project]);
    expect(shown.stdout).toContain(`${s.project}: suspend (the default)`);
    const k = await createKey('default-policy');
    expect((await call(b, k.key)).status).toBe(200);
    const a = await report([{ token: k.key, type: 'santokit_api_key', url: 'https://example.com/default', source: 'content' }], token);
    expect(a.status).toBe(202);
    expect(a.json).toEqual({ received: 1 });
    await waitFor(async () => (await call(b, k.key)).status === 401, 10_000, 'the leaked key suspended');
    expect((await call(b, k.key)).body.error.message).toContain('API key suspended');
    const suspended = (await auditOf('apikey.suspend')).filter((e) => e.detail.keyId === k.keyId);
    expect(suspended).toHaveLength(1);
    expect(suspended[0]!.detail.reason).toContain('leak reported to POST /api/leaks with the leak-report token scanner');
    expect((await auditOf('apikey.leaked')).find((e) => e.detail.keyId === k.keyId)!.detail).toMatchObject({ policy: 'suspend', action: 'suspend' });
    // reversible: resumed by an admin, it works again with the same secret
    expect((await s.stk(['apikey', 'resume', '--project', s.project, '--env', s.env, '--key-id', k.keyId])).code).toBe(0);
    expect((await call(b, k.key)).status).toBe(200);
  });

  it('a valid key is acted on per policy; a wrong secret or an unknown key does nothing; every answer is the same', async () => {
    const b = s.bridges[0]!;
    expect((await s.stk(['leaks', 'policy', 'set', 'revoke', '--project', s.project])).code).toBe(0);
    const victim = await createKey('victim');
    const parsed = parseKey(victim.key) as { keyId: string; tag?: string };
    // the victim's id with another secret (checksum valid): someone who knows only the id
    const forged = rememberSecret('api-key', formatKey(parsed.keyId, newSecret(), parsed.tag));
    const answers = [];
    answers.push(await report([{ token: forged, type: 'santokit_api_key', url: 'https://example.com/forged', source: 'content' }], token));
    answers.push(await report([{ token: neverIssued(), url: 'https://example.com/unknown', source: 'content' }], token));
    answers.push(await report([{ token: 'stk_not_a_key', url: 'https://example.com/garbage', source: 'content' }], token));
    await settle();
    expect((await call(b, victim.key)).status).toBe(200); // the forged report suspended nobody
    expect((await auditOf('apikey.leaked')).filter((e) => e.detail.keyId === parsed.keyId)).toEqual([]);

    answers.push(await report({ keys: [victim.key], url: `https://example.com/repo/blob/main/.env?k=${victim.key}`, source: 'commit' }, token));
    await waitFor(async () => (await call(b, victim.key)).status === 401, 10_000, 'the leaked key revoked');
    for (const a of answers) {
      expect(a.status).toBe(202);
      expect(a.json).toEqual({ received: 1 });
    }
    const leaked = (await auditOf('apikey.leaked')).filter((e) => e.detail.keyId === parsed.keyId);
    expect(leaked).toHaveLength(1);
    expect(leaked[0]!.detail).toMatchObject({ name: 'victim', policy: 'revoke', action: 'revoke', source: 'commit', reportedBy: { tokenName: 'scanner' } });
    // where it was found is kept, the key in it is not
    expect(leaked[0]!.detail.url).toBe('https://example.com/repo/blob/main/.env?k=[key]');
    const revoked = (await auditOf('apikey.revoke')).filter((e) => e.detail.keyId === parsed.keyId);
    expect(revoked).toHaveLength(1);
    expect(revoked[0]!.detail).toMatchObject({ reason: expect.stringContaining('leak reported'), reportedBy: { tokenName: 'scanner' } });

    // reported again (twice at once): no second action, no second audit entry
    await Promise.all([report([{ token: victim.key }], token), report([{ token: victim.key }], token)]);
    await settle();
    expect((await auditOf('apikey.leaked')).filter((e) => e.detail.keyId === parsed.keyId)).toHaveLength(1);
    expect((await auditOf('apikey.revoke')).filter((e) => e.detail.keyId === parsed.keyId)).toHaveLength(1);
  });

  it('policy notify: audited, the key keeps working; a revoked leak token gets 401', async () => {
    const b = s.bridges[0]!;
    const set = await s.stk(['leaks', 'policy', 'set', 'notify', '--project', s.project, '--json']);
    expect(JSON.parse(set.stdout)).toMatchObject({ project: s.project, policy: 'notify', isDefault: false });
    const k = await createKey('notify-me');
    expect((await report([{ token: k.key, url: 'https://gist.example.com/1', source: 'gist' }], token)).status).toBe(202);
    await waitFor(async () => (await auditOf('apikey.leaked')).some((e) => e.detail.keyId === k.keyId), 10_000, 'notify audit');
    expect((await call(b, k.key)).status).toBe(200);
    expect((await auditOf('apikey.leaked')).find((e) => e.detail.keyId === k.keyId)!.detail).toMatchObject({ action: 'notify', source: 'gist' });

    // only the project's admins see or set its policy
    expect((await s.api('GET', `/api/projects/${s.project}/leak-policy`, undefined, otherAdmin)).status).toBe(403);
    expect((await s.api('PUT', `/api/projects/${s.project}/leak-policy`, { policy: 'notify' }, otherAdmin)).status).toBe(403);
    // tokens are the org admins'
    expect((await s.api('GET', '/api/leaks/tokens', undefined, otherAdmin)).status).toBe(403);

    const list = await s.stk(['leaks', 'token', 'list', '--json']);
    const listed = JSON.parse(list.stdout);
    expect(listed).toEqual([expect.objectContaining({ name: 'scanner', status: 'active' })]);
    expect(listed[0].lastUsedAt).not.toBeNull();
    expect(list.stdout).not.toContain(token);
    expect((await s.stk(['leaks', 'token', 'revoke', 'scanner'])).code).toBe(0);
    expect((await report([{ token: k.key }], token)).status).toBe(401);
  });
});
