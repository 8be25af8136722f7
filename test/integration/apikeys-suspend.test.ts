import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loginToken } from '../helpers/cli.js';
import { createTestDatabase } from '../helpers/pg.js';
import { type Proc } from '../helpers/procs.js';
import { call, connectedBridges, startStack, type Stack } from './apikeys.setup.js';

/**
 * `stk apikey suspend|resume` on real processes: a Hub on a PostgreSQL store (migration 0009 there),
 * two Bridges, the real CLI. Suspend returns once both Bridges refuse the key, resume once both accept
 * the same secret again; audited; project:admin only.
 */
describe('API key suspend / resume', () => {
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  let s: Stack;
  let b1: Proc;
  let b2: Proc;
  let viewerToken: string;
  let otherAdminToken: string;
  const base = () => `/api/projects/${s.project}/envs/${s.env}/apikeys`;
  const scope = () => ['--project', s.project, '--env', s.env];
  const both = (key: string) => Promise.all([call(b1, key), call(b2, key)]);

  beforeAll(async () => {
    store = await createTestDatabase('hubstore');
    s = await startStack({ bridges: 2, hub: { dbUrl: store.url, env: { STK_REVOKE_ACK_TIMEOUT_MS: '1500' } } });
    [b1, b2] = s.bridges as [Proc, Proc];
    const join = async (project: string, email: string, role: string) => {
      const inv = await s.api('POST', `/api/projects/${project}/invites`, { email, role });
      expect(inv.status, inv.text).toBe(201);
      const acc = await fetch(s.hub.url + '/api/invites/accept', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email, code: inv.json.inviteCode, password: 'member-password-1' }),
      });
      expect(acc.status).toBe(200);
      return loginToken(s.hub.url, email, 'member-password-1');
    };
    viewerToken = await join(s.project, 'viewer@example.com', 'viewer');
    expect((await s.api('POST', '/api/projects', { name: 'elsewhere' })).status).toBe(201);
    otherAdminToken = await join('elsewhere', 'admin@elsewhere.example.com', 'admin');
  });
  afterAll(async () => {
    await s?.stop();
    await store?.drop();
  });

  it('suspend → the next /call is 401 "API key suspended" on every Bridge; list/show say suspended; resume → the same secret works', async () => {
    const { apiKey: key, keyId } = (await s.api('POST', base(), { name: 'incident', roles: ['reader'] })).json as { apiKey: string; keyId: string };
    expect((await both(key)).map((r) => r.status)).toEqual([200, 200]);

    const sus = await s.stk(['apikey', 'suspend', 'incident', ...scope(), '--reason', 'seen in a gist']);
    expect(sus.code, sus.output).toBe(0);
    expect(sus.output).toContain(`Suspended API key ${keyId} ("incident")`);
    expect(sus.output).toContain('Bridges: 2/2 confirmed');
    // the very next request on each Bridge
    const after = await both(key);
    expect(after.map((r) => r.status)).toEqual([401, 401]);
    for (const r of after) expect(r.body.error).toMatchObject({ code: 'UNAUTHORIZED', message: 'API key suspended' });

    const piped = await s.stk(['apikey', 'list', ...scope(), '--status', 'suspended']);
    expect(piped.stdout.split('\n').filter(Boolean)).toEqual([expect.stringMatching(new RegExp(`^${keyId}\tincident\treader\tsuspended\t`))]);
    const item = (await s.api('GET', base())).json.items.find((k: { keyId: string }) => k.keyId === keyId);
    expect(item).toMatchObject({ status: 'suspended' });
    expect(typeof item.suspendedAt).toBe('string');
    const show = await s.stk(['apikey', 'show', keyId, ...scope()]);
    expect(show.stdout).toContain(`status: suspended since ${item.suspendedAt}`);

    // twice: idempotent, nothing sent to the Bridges (ack null), exit 0
    const again = await s.api('POST', `${base()}/${keyId}/suspend`, {});
    expect(again.status, again.text).toBe(200);
    expect(again.json).toEqual({
      keyId,
      name: 'incident',
      roles: ['reader'],
      status: 'suspended',
      suspendedAt: item.suspendedAt,
      alreadySuspended: true,
      ack: null,
    });

    const res = await s.stk(['apikey', 'resume', 'incident', ...scope(), '--json']);
    expect(res.code, res.output).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({ keyId, status: 'active', alreadyActive: false, ack: { bridges: 2, acked: 2, lagging: [] } });
    expect((await both(key)).map((r) => r.status)).toEqual([200, 200]);
    const res2 = await s.api('POST', `${base()}/incident/resume`, {});
    expect(res2.json).toMatchObject({ alreadyActive: true, ack: null, status: 'active' });

    // audited like revoke, with the reason
    const audit = await s.api('GET', `/api/audit?project=${s.project}&action=apikey.*`);
    const mine = (audit.json.items as Array<{ action: string; detail: any; actor: string }>).filter((e) => e.detail.keyId === keyId);
    expect(mine.map((e) => e.action)).toEqual(['apikey.resume', 'apikey.suspend', 'apikey.create']);
    expect(mine[1]!.detail).toEqual({ keyId, name: 'incident', roles: ['reader'], reason: 'seen in a gist' });
    expect(mine[0]!.detail).toEqual({ keyId, name: 'incident', roles: ['reader'], suspendedAt: item.suspendedAt });
    expect(mine[0]!.actor).toBe('owner@example.com');
  });

  it('a suspended key can be revoked; a revoked key cannot be suspended or resumed (409)', async () => {
    const key = (await s.api('POST', base(), { name: 'frozen', roles: ['reader'] })).json.apiKey as string;
    expect((await s.api('POST', `${base()}/frozen/suspend`, {})).json).toMatchObject({ status: 'suspended', ack: { acked: 2 } });
    expect((await call(b2, key)).body.error.message).toBe('API key suspended');
    // revoked while suspended: resume and suspend are refused with 409 from then on
    const rev = await s.api('POST', `${base()}/frozen/revoke`, {});
    expect(rev.json).toMatchObject({ status: 'revoked', alreadyRevoked: false });
    expect((await call(b1, key)).body.error.message).toBe('API key revoked');
    for (const action of ['suspend', 'resume']) {
      const c = await s.api('POST', `${base()}/frozen/${action}`, {});
      expect(c.status, c.text).toBe(409);
      expect(c.json.error.code).toBe('CONFLICT');
      expect(c.json.error.message).toMatch(/is revoked and cannot be (suspended|resumed)/);
    }
    const cli = await s.stk(['apikey', 'suspend', 'frozen', ...scope()]);
    expect(cli.code).not.toBe(0);
    expect(cli.output).toMatch(/409|revoked and cannot be suspended/);
  });

  it('a Bridge that does not confirm the suspend in time is named and the CLI exits 1; it refuses the key once it catches up', async () => {
    const key = (await s.api('POST', base(), { name: 'laggy', roles: ['reader'] })).json.apiKey as string;
    const ids = await connectedBridges(s.hub);
    b2.child.kill('SIGSTOP');
    let r;
    try {
      r = await s.stk(['apikey', 'suspend', 'laggy', ...scope()]);
    } finally {
      b2.child.kill('SIGCONT');
    }
    expect(r.code, r.output).toBe(1);
    expect(r.output).toMatch(/suspended .*laggy.*, but 1 of 2 Bridge\(s\) did not confirm in time/);
    expect(ids.some((id) => r.output.includes(id))).toBe(true);
    expect((await call(b1, key)).status).toBe(401);
    let last = 0;
    for (let i = 0; i < 100 && last !== 401; i++) {
      last = (await call(b2, key)).status;
      if (last !== 401) await new Promise((res) => setTimeout(res, 100));
    }
    expect(last).toBe(401);
  });

  it('a viewer, another project’s admin and no token get 403/401 on suspend and resume; an unknown key is 404; an oversized reason is 400', async () => {
    const key = (await s.api('POST', base(), { name: 'guarded', roles: ['reader'] })).json.apiKey as string;
    for (const action of ['suspend', 'resume']) {
      for (const token of [viewerToken, otherAdminToken]) {
        const r = await s.api('POST', `${base()}/guarded/${action}`, {}, token);
        expect(r.status, `${action}: ${r.text}`).toBe(403);
        expect(r.json.error.code).toBe('FORBIDDEN');
      }
      const anon = await fetch(`${s.hub.url}${base()}/guarded/${action}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      expect(anon.status).toBe(401);
      expect((await s.api('POST', `${base()}/no-such-key/${action}`, {})).status).toBe(404);
    }
    const cli = await s.stk(['apikey', 'suspend', 'guarded', ...scope()], viewerToken);
    expect(cli.code).not.toBe(0);
    expect(cli.output).toContain('403');
    const big = await s.api('POST', `${base()}/guarded/suspend`, { reason: 'x'.repeat(501) });
    expect(big.status).toBe(400);
    // none of that changed anything
    expect((await both(key)).map((r) => r.status)).toEqual([200, 200]);
  });
});
