import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loginToken } from '../helpers/cli.js';
import { createTestDatabase } from '../helpers/pg.js';
import { startHub, waitFor, type Proc } from '../helpers/procs.js';
import { rememberSecret } from '../helpers/secrets.js';
import { KEY_LINE_RE, startStack, type Hub, type Stack } from './apikeys.setup.js';

/**
 * Rotation that retires the old secret (issue 16 part 5) on real processes: two Hubs on one PostgreSQL
 * store (migration 0012 there; both run the grace sweep), two Bridges following the first, the real CLI.
 * During a grace period the Bridges count requests per secret with the previous secret's client
 * addresses; `stk apikey show` reports them; `--grace auto` ends the grace period once the previous
 * secret has been unused for STK_APIKEY_GRACE_QUIET (2 s here), exactly once, audited.
 */
const QUIET_MS = 2000;

describe('API key rotation grace: per-secret counts, end-grace, --grace auto', () => {
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  let s: Stack;
  let b1: Proc;
  let b2: Proc;
  let hub2: Hub;
  let viewerToken: string;
  const base = () => `/api/projects/${s.project}/envs/${s.env}/apikeys`;
  const scope = () => ['--project', s.project, '--env', s.env];

  /** POST /call from a given loopback source address (the Bridge sees it as the client address) */
  const callFrom = (b: Proc, key: string, local = '127.0.0.1') =>
    new Promise<number>((resolve, reject) => {
      const r = request(
        `${b.url}/call`,
        { method: 'POST', localAddress: local, headers: { 'content-type': 'application/json', 'x-santokit-api-key': key } },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        },
      );
      r.on('error', reject);
      r.end(JSON.stringify({ path: 'db/users/select', params: {} }));
    });
  const rotate = async (name: string, grace: string) => {
    const r = await s.stk(['apikey', 'rotate', name, ...scope(), '--grace', grace]);
    expect(r.code, r.output).toBe(0);
    return { key: rememberSecret('api-key', KEY_LINE_RE.exec(r.stdout)?.[1])!, out: r };
  };
  /** what `stk apikey show --json` prints (the CLI's output is checked once per test; polling goes to the Hub directly) */
  const show = async (name: string) => {
    const r = await s.api('GET', `${base()}/${name}/usage`);
    expect(r.status, r.text).toBe(200);
    return r.json;
  };
  const graceAudit = async (keyId: string) => {
    const a = await s.api('GET', `/api/audit?project=${s.project}&action=apikey.grace_end`);
    return (a.json.items as Array<{ action: string; detail: any; actor: string | null; actorType: string }>).filter((e) => e.detail.keyId === keyId);
  };

  beforeAll(async () => {
    store = await createTestDatabase('hubstore');
    const hubEnv = { STK_REVOKE_ACK_TIMEOUT_MS: '2000', STK_APIKEY_GRACE_QUIET: `${QUIET_MS / 1000}s` };
    s = await startStack({ bridges: 0, hub: { dbUrl: store.url, env: hubEnv }, bridgeEnv: { STK_USAGE_REPORT_SECONDS: '0.3' } });
    b1 = await s.startBridge();
    b2 = await s.startBridge();
    // a second Hub on the same store: it runs the sweep too (no Bridge follows it)
    hub2 = await startHub({ dbUrl: store.url, secretKey: s.hub.secretKey, serviceToken: s.hub.serviceToken, env: hubEnv });
    const inv = await s.api('POST', `/api/projects/${s.project}/invites`, { email: 'viewer@example.com', role: 'viewer' });
    expect(inv.status, inv.text).toBe(201);
    const acc = await fetch(s.hub.url + '/api/invites/accept', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'viewer@example.com', code: inv.json.inviteCode, password: 'member-password-1' }),
    });
    expect(acc.status).toBe(200);
    viewerToken = await loginToken(s.hub.url, 'viewer@example.com', 'member-password-1');
  }, 60_000);
  afterAll(async () => {
    await hub2?.stop();
    await s?.stop();
    await store?.drop();
  });

  it('a fixed grace: show counts requests per secret with the previous secret’s addresses; end-grace stops the old secret on every Bridge, audited', async () => {
    const { key: old, keyId } = await s.createKey('svc', 'reader');
    const { key: fresh, out } = await rotate('svc', '1h');
    expect(out.output).toMatch(/the previous secret works until \d{4}-/);
    // 3 + 1 requests with the previous secret from two addresses on two Bridges, 2 with the new one
    for (let i = 0; i < 3; i++) expect(await callFrom(b1, old, '127.0.0.2')).toBe(200);
    expect(await callFrom(b2, old, '127.0.0.3')).toBe(200);
    expect(await callFrom(b1, fresh)).toBe(200);
    expect(await callFrom(b2, fresh)).toBe(200);
    let u: any;
    await waitFor(async () => (u = await show('svc')).grace?.previous.requests === 4 && u.grace.current.requests === 2, 15_000, 'the per-secret counts');
    expect(u.key.grace).toEqual({ previousSecretValidUntil: expect.any(String), auto: false });
    expect(u.grace).toMatchObject({ auto: false, endedAt: null, endReason: null, unattributedLastAt: null, endsAfter: null });
    expect(u.grace.previous.sources).toEqual([
      { address: '127.0.0.2', requests: 3, lastSeenAt: expect.any(String) },
      { address: '127.0.0.3', requests: 1, lastSeenAt: expect.any(String) },
    ]);
    expect(Date.parse(u.grace.previous.lastUsedAt)).toBeGreaterThanOrEqual(Date.parse(u.grace.rotatedAt));
    expect(JSON.parse((await s.stk(['apikey', 'show', 'svc', ...scope(), '--json'])).stdout).grace).toEqual(u.grace);
    console.log(
      `[grace] counted per secret on 2 Bridges: previous ${u.grace.previous.requests} (${u.grace.previous.sources.map((x: any) => `${x.address} ×${x.requests}`).join(', ')}), current ${u.grace.current.requests}`,
    );
    const human = await s.stk(['apikey', 'show', 'svc', ...scope()]);
    expect(human.stdout).toContain(`Rotation grace period (rotated ${u.grace.rotatedAt}): the previous secret works until ${u.grace.until}`);
    expect(human.stdout).toContain('previous secret: 4 requests, last used ');
    expect(human.stdout).toContain('current secret:  2 requests');
    expect(human.stdout).toMatch(/127\.0\.0\.2 +3 requests, last /);
    const listed = JSON.parse((await s.stk(['apikey', 'list', ...scope(), '--json'])).stdout).find((k: { keyId: string }) => k.keyId === keyId);
    expect(listed.grace).toEqual({ previousSecretValidUntil: u.grace.until, auto: false });

    // a viewer cannot end it
    const denied = await s.api('POST', `${base()}/svc/end-grace`, {}, viewerToken);
    expect(denied.status, denied.text).toBe(403);
    const end = await s.stk(['apikey', 'end-grace', 'svc', ...scope()]);
    expect(end.code, end.output).toBe(0);
    expect(end.output).toContain(`Ended the grace period of API key ${keyId} ("svc")`);
    expect(end.output).toContain('Bridges: 2/2 confirmed');
    expect([await callFrom(b1, old), await callFrom(b2, old)]).toEqual([401, 401]);
    expect([await callFrom(b1, fresh), await callFrom(b2, fresh)]).toEqual([200, 200]);
    const again = await s.stk(['apikey', 'end-grace', 'svc', ...scope(), '--json']);
    expect(again.code, again.output).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual({ keyId, name: 'svc', roles: ['reader'], alreadyEnded: true, ack: null });
    const entries = await graceAudit(keyId);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ actor: 'owner@example.com', detail: { keyId, trigger: 'operator', graceMode: 'fixed', previousRequests: 4 } });
    // after the end, requests with the (only) current secret are plain ones: nothing is taken for the previous secret
    let after: any;
    await waitFor(async () => (after = await show('svc')).byStatus[0].requests >= 8, 15_000, 'the requests after the end');
    expect(after.grace).toMatchObject({ endReason: 'operator', endedAt: expect.any(String), unattributedLastAt: null, previous: { requests: 4 } });
  });

  it('--grace auto: not ended while the previous secret is in use; ended by itself (once, by one of two Hubs) after it is quiet; then 401', async () => {
    const { key: old, keyId } = await s.createKey('auto-svc', 'reader');
    const { key: fresh, out } = await rotate('auto-svc', 'auto');
    expect(out.output).toMatch(/the previous secret works until it has had no request for 2 s, at most until \d{4}-/);
    const rotatedAt = Date.now();
    // the previous secret stays in use for longer than the quiet period: the grace period holds
    let lastOld = 0;
    while (Date.now() - rotatedAt < QUIET_MS + 1500) {
      expect(await callFrom(b1, old, '127.0.0.4')).toBe(200);
      lastOld = Date.now();
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(await callFrom(b2, old, '127.0.0.4')).toBe(200);
    lastOld = Date.now();
    const mid = await show('auto-svc');
    expect(mid.key.grace).toMatchObject({ auto: true });
    expect(mid.grace).toMatchObject({ auto: true, endedAt: null });
    expect(mid.grace.previous.requests).toBeGreaterThan(4);
    expect(Date.parse(mid.grace.endsAfter)).toBeGreaterThan(rotatedAt + QUIET_MS);
    const human = await s.stk(['apikey', 'show', 'auto-svc', ...scope()]);
    expect(human.stdout).toContain('auto: ends once the previous secret is unused, at the earliest ');

    // quiet now: the Hub ends it, every Bridge refuses the previous secret
    expect(await callFrom(b1, fresh)).toBe(200);
    // (watched through the Hub: a request with the old secret would be traffic that keeps it open)
    await waitFor(async () => (await s.api('GET', `${base()}/auto-svc`)).json.grace === null, 20_000, 'the automatic end');
    expect([await callFrom(b1, old), await callFrom(b2, old)]).toEqual([401, 401]);
    const endedAfter = Date.now() - lastOld;
    expect(endedAfter).toBeGreaterThanOrEqual(QUIET_MS);
    expect([await callFrom(b1, fresh), await callFrom(b2, fresh)]).toEqual([200, 200]);
    const done = await show('auto-svc');
    expect(done.key.grace).toBeNull();
    expect(done.grace).toMatchObject({ auto: true, endReason: 'quiet', endedAt: expect.any(String) });
    expect(Date.parse(done.grace.endedAt) - Date.parse(done.grace.previous.lastUsedAt)).toBeGreaterThanOrEqual(QUIET_MS);
    expect(done.grace.previous.sources[0]).toMatchObject({ address: '127.0.0.4' });
    // two Hubs swept the same store: one end, one audit entry, by the system
    await new Promise((r) => setTimeout(r, 500));
    const entries = await graceAudit(keyId);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({
      actor: null,
      actorType: 'system',
      detail: { keyId, name: 'auto-svc', roles: ['reader'], trigger: 'quiet', graceMode: 'auto', previousRequests: done.grace.previous.requests },
    });
    expect(entries[0]!.detail.reason).toMatch(/^no request with the previous secret for 2 s \(since .*\), every Bridge reported$/);
    const rot = await s.api('GET', `/api/audit?project=${s.project}&action=apikey.rotate`);
    expect(rot.json.items.find((e: { detail: any }) => e.detail.keyId === keyId).detail).toMatchObject({ graceMode: 'auto', graceQuietSeconds: 2 });
    console.log(`[grace] auto end ${endedAfter} ms after the last request with the previous secret (quiet period ${QUIET_MS} ms)`);
  });

  it('--grace auto with a Bridge that does not report (frozen): the grace period holds until it reports again', async () => {
    const { key: old } = await s.createKey('held', 'reader');
    await rotate('held', 'auto');
    expect(await callFrom(b1, old)).toBe(200);
    b2.child.kill('SIGSTOP');
    try {
      await new Promise((r) => setTimeout(r, QUIET_MS + 1500));
      // b2 may hold requests it has not reported: the Hub keeps the grace period (b1 alone would have ended it by now)
      expect((await s.api('GET', `${base()}/held`)).json.grace).toMatchObject({ auto: true });
    } finally {
      b2.child.kill('SIGCONT');
    }
    await waitFor(async () => (await s.api('GET', `${base()}/held`)).json.grace === null, 20_000, 'the end once b2 reported');
    expect([await callFrom(b1, old), await callFrom(b2, old)]).toEqual([401, 401]);
  });

  it('bad --grace values: exit 2 naming the flag (CLI), 400 from the Hub; nothing rotated', async () => {
    const { key } = await s.createKey('badgrace', 'reader');
    for (const v of ['autox', 'auto5m', '-1h', 'soon']) {
      const r = await s.stk(['apikey', 'rotate', 'badgrace', ...scope(), '--grace', v]);
      expect(r.code, `${v}: ${r.output}`).toBe(2);
      expect(r.output).toContain(`invalid --grace "${v}": use a duration like 0, 30m, 12h or 7d, or auto`);
    }
    const over = await s.stk(['apikey', 'rotate', 'badgrace', ...scope(), '--grace', '8d']);
    expect(over.code, over.output).toBe(1);
    expect(over.output).toContain('grace must be between 0 and 7d, or auto');
    for (const grace of ['AUTO ', 'auto:1h', true, -5]) {
      const r = await s.api('POST', `${base()}/badgrace/rotate`, { grace });
      expect(r.status, `${JSON.stringify(grace)}: ${r.text}`).toBe(400);
      expect(r.json.error.code).toMatch(/BAD_REQUEST|VALIDATION/);
      expect(r.json.error.message).toMatch(/grace/);
    }
    // the key was never rotated: its one secret works, no grace
    expect(await callFrom(b1, key)).toBe(200);
    expect((await show('badgrace')).grace).toBeNull();
    // end-grace on a key without one: nothing to do; an unknown key: 404
    const none = await s.api('POST', `${base()}/badgrace/end-grace`, {});
    expect(none.json).toMatchObject({ alreadyEnded: true, ack: null });
    expect((await s.api('POST', `${base()}/no-such-key/end-grace`, {})).status).toBe(404);
  });
});
