import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { ROOT, startBridge, startHub, TEST_OWNER, waitFor } from '../helpers/procs.js';
import { call } from './apikeys.setup.js';
import { loginToken, runStk, tempConfigDir } from '../helpers/cli.js';
import { createTestDatabase } from '../helpers/pg.js';
import { rememberSecret } from '../helpers/secrets.js';
import { HubApi } from '../helpers/hub-api.js';
import { startReceiver, verifyStandardWebhook, type Receiver, type Received } from '../helpers/webhook-receiver.js';

/**
 * Webhooks for key and release events, end to end: a real Hub process on a PostgreSQL store, the real
 * `stk`, a local receiver verifying every signature with its own implementation of the Standard
 * Webhooks spec. Events come from the changes themselves (audit entries, the release pointer, the
 * expiry scan, Bridges' usage reports), filtered per endpoint, never carrying a secret.
 */
const P = 'shop';
const E = 'dev';
const PW = rememberSecret('password', 'webhook-test-password-1');

describe('webhooks: key and release events, signed', () => {
  let recv: Receiver;
  let hub: Awaited<ReturnType<typeof startHub>>;
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  let data: Awaited<ReturnType<typeof createTestDatabase>>;
  let owner: string;
  let http: HubApi;
  let cfg: string;
  const hooks = { all: { id: '', secret: '' }, revokedOnly: { id: '', secret: '' } };
  const keys: string[] = [];
  const stk = (args: string[], token = owner) => runStk(args, { env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: token } });
  const must = async (args: string[]) => {
    const r = await stk(args);
    expect(r.code, `stk ${args.join(' ')}\n${r.output}`).toBe(0);
    return r;
  };
  const ofType = (path: string, type: string) => recv.at(path).filter((r) => r.json.type === type);
  const waitForType = (path: string, type: string, n = 1, what = `${type} at ${path}`) => waitFor(async () => ofType(path, type).length >= n, 10_000, what);
  const createKey = async (name: string, extra: string[] = []) => {
    const r = await must(['apikey', 'create', '--project', P, '--env', E, '--name', name, '--roles', 'reader', ...extra]);
    const key = rememberSecret('api-key', /API Key \(store securely\): (\S+)/.exec(r.stdout)?.[1])!;
    keys.push(key);
    return { key, keyId: /Key ID: (\S+)/.exec(r.stdout)![1]! };
  };
  const join_ = async (email: string, role: string, project: string) => {
    const inv = await http.request('POST', `/api/projects/${project}/invites`, { email, role });
    expect(inv.status, inv.text).toBe(201);
    const acc = await http.as(null).request('POST', '/api/invites/accept', { email, code: rememberSecret('invite-code', inv.json.inviteCode), password: PW });
    expect(acc.status, acc.text).toBe(200);
    return loginToken(hub.url, email, PW);
  };

  beforeAll(async () => {
    recv = await startReceiver();
    store = await createTestDatabase('whstore');
    data = await createTestDatabase('whdata');
    hub = await startHub({
      dbUrl: store.url,
      env: {
        // only the receiver's port on loopback: any other loopback target stays refused
        STK_WEBHOOK_ALLOW_HOSTS: `127.0.0.1:${recv.port}`,
        STK_WEBHOOK_POLL_MS: '100',
        STK_WEBHOOK_SCAN_MS: '200',
        STK_WEBHOOK_BACKOFF_BASE_MS: '200',
      },
    });
    owner = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
    http = new HubApi(hub.url, owner);
    cfg = tempConfigDir();
    await must(['project', 'create', P]);
    await must(['project', 'create', 'blog']);
    await must(['env', 'create', '--project', P, E]);
    await must(['connections', 'set', '--project', P, '--env', E, '--name', 'main', '--engine', 'postgres', '--db-url', data.url]);
    // every event to /a; only revocations to /b
    const a = await http.request('POST', `/api/projects/${P}/webhooks`, {
      url: `${recv.url}/a`,
      events: ['apikey.created', 'apikey.rotated', 'apikey.revoked', 'apikey.updated', 'apikey.expiring', 'apikey.rate_limited', 'release.applied'],
    });
    expect(a.status, a.text).toBe(201);
    hooks.all = { id: a.json.webhookId, secret: rememberSecret('webhook-secret', a.json.secret) };
    const b = await http.request('POST', `/api/projects/${P}/webhooks`, { url: `${recv.url}/b`, events: ['apikey.revoked'] });
    expect(b.status, b.text).toBe(201);
    hooks.revokedOnly = { id: b.json.webhookId, secret: rememberSecret('webhook-secret', b.json.secret) };
    await must(['apply', '--project', P, '--env', E, '--dir', join(ROOT, 'examples/basic')]);
  }, 60_000);
  afterAll(async () => {
    await hub?.stop();
    await recv?.close();
    await store?.drop();
    await data?.drop();
  });

  it('the secret is whsec_ + base64 of 32 bytes, shown once: the list never has it, the store only encrypted', async () => {
    expect(hooks.all.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(hooks.all.secret.slice(6), 'base64')).toHaveLength(32);
    const list = await http.request('GET', `/api/projects/${P}/webhooks`);
    expect(list.status).toBe(200);
    expect(list.text).not.toContain(hooks.all.secret.slice(6));
    expect(list.json.items.map((w: any) => [w.url, w.events.length, w.status])).toEqual([
      [`${recv.url}/a`, 7, 'active'],
      [`${recv.url}/b`, 1, 'active'],
    ]);
  });

  it('release.applied on apply: signed per Standard Webhooks (an independent verifier), a wrong secret or a changed byte fails', async () => {
    await waitForType('/a', 'release.applied');
    const [d] = ofType('/a', 'release.applied') as [Received];
    expect(d.headers['webhook-id']).toMatch(/^msg_[0-9A-Z]{26}$/);
    expect(d.headers['content-type']).toBe('application/json');
    expect(verifyStandardWebhook(hooks.all.secret, d.headers, d.body)).toBe(true);
    expect(verifyStandardWebhook(hooks.revokedOnly.secret, d.headers, d.body)).toBe(false);
    expect(verifyStandardWebhook(hooks.all.secret, d.headers, d.body.replace('"shop"', '"shoq"'))).toBe(false);
    expect(verifyStandardWebhook(hooks.all.secret, { ...d.headers, 'webhook-id': 'msg_other' }, d.body)).toBe(false);
    expect(d.json.data).toMatchObject({ project: P, env: E, via: 'apply', previousReleaseId: null, actor: { type: 'operator', email: TEST_OWNER.email } });
    expect(d.json.data.releaseId).toEqual(expect.any(String));
    // nothing about releases for the endpoint that asked for revocations only
    expect(recv.at('/b')).toHaveLength(0);
  });

  it('a key created, updated, rotated, revoked: one event each, ids/names/roles/actor, never the key; /b gets only the revocation', async () => {
    const { key, keyId } = await createKey('server', ['--expires-in', '3d']);
    expect((await http.request('PATCH', `/api/projects/${P}/envs/${E}/apikeys/server`, { roles: ['reader', 'admin'] })).status).toBe(200);
    const rot = await http.request('POST', `/api/projects/${P}/envs/${E}/apikeys/server/rotate`, { grace: '0' });
    expect(rot.status, rot.text).toBe(200);
    keys.push(rememberSecret('api-key', rot.json.apiKey as string));
    expect((await http.request('POST', `/api/projects/${P}/envs/${E}/apikeys/server/revoke`, {})).status).toBe(200);
    for (const t of ['apikey.created', 'apikey.updated', 'apikey.rotated', 'apikey.revoked']) await waitForType('/a', t);
    await waitForType('/b', 'apikey.revoked');
    const byType = (t: string) => ofType('/a', t).filter((r) => r.json.data.keyId === keyId);
    for (const t of ['apikey.created', 'apikey.updated', 'apikey.rotated', 'apikey.revoked']) {
      const [d, dup] = byType(t);
      expect(dup, `${t} once`).toBeUndefined();
      expect(verifyStandardWebhook(hooks.all.secret, d!.headers, d!.body)).toBe(true);
      expect(d!.json.data).toMatchObject({ project: P, env: E, keyId, name: 'server', actor: { type: 'operator', email: TEST_OWNER.email } });
      expect(Date.parse(d!.json.timestamp)).toBeGreaterThan(Date.now() - 60_000);
    }
    expect(byType('apikey.created')[0]!.json.data.roles).toEqual(['reader']);
    expect(byType('apikey.updated')[0]!.json.data.roles).toEqual(['reader', 'admin']);
    const b = recv.at('/b');
    expect(b.map((r) => [r.json.type, r.json.data.keyId])).toEqual([['apikey.revoked', keyId]]);
    expect(verifyStandardWebhook(hooks.revokedOnly.secret, b[0]!.headers, b[0]!.body)).toBe(true);
    // the plaintext keys (the created one and the rotated one) appear in no delivery
    for (const r of recv.received) for (const k of keys) expect(r.body).not.toContain(k.slice(-20));
    expect(key).toBeTruthy();
  });

  it('apikey.suspended / apikey.resumed (stk apikey suspend|resume), with the reason', async () => {
    const s = await http.request('POST', `/api/projects/${P}/webhooks`, { url: `${recv.url}/s`, events: ['apikey.suspended', 'apikey.resumed'] });
    expect(s.status, s.text).toBe(201);
    const secret = rememberSecret('webhook-secret', s.json.secret as string);
    const { keyId } = await createKey('paused');
    expect((await http.request('POST', `/api/projects/${P}/envs/${E}/apikeys/paused/suspend`, { reason: 'incident 42' })).status).toBe(200);
    expect((await http.request('POST', `/api/projects/${P}/envs/${E}/apikeys/paused/resume`, {})).status).toBe(200);
    await waitFor(async () => recv.at('/s').length >= 2, 10_000, 'suspend and resume events');
    expect(recv.at('/s').map((r) => [r.json.type, r.json.data.keyId, r.json.data.reason ?? null])).toEqual([
      ['apikey.suspended', keyId, 'incident 42'],
      ['apikey.resumed', keyId, null],
    ]);
    for (const r of recv.at('/s')) expect(verifyStandardWebhook(secret, r.headers, r.body)).toBe(true);
    expect((await http.request('DELETE', `/api/projects/${P}/webhooks/${s.json.webhookId}`)).status).toBe(200);
  });

  it('apikey.expiring: 7 days before (once, however many scans run), a key expiring within a day gets the 1-day notice only', async () => {
    const soon = await createKey('soon', ['--expires-in', '12h']);
    const week = await createKey('week', ['--expires-in', '5d']);
    const exp = (keyId: string) => ofType('/a', 'apikey.expiring').filter((r) => r.json.data.keyId === keyId);
    await waitFor(async () => exp(soon.keyId).length >= 1 && exp(week.keyId).length >= 1, 10_000, 'expiring notices');
    await new Promise((r) => setTimeout(r, 1000)); // five more scans
    expect(exp(soon.keyId).map((r) => r.json.data.within)).toEqual(['1d']);
    expect(exp(week.keyId).map((r) => r.json.data.within)).toEqual(['7d']);
    expect(exp(week.keyId)[0]!.json.data).toMatchObject({ name: 'week', roles: ['reader'], project: P, env: E, actor: { type: 'system' } });
    expect(verifyStandardWebhook(hooks.all.secret, exp(week.keyId)[0]!.headers, exp(week.keyId)[0]!.body)).toBe(true);
  });

  it('apikey.rate_limited: the first 429 of a key in an hour, as a real Bridge reports it, once', async () => {
    const { key, keyId } = await createKey('busy', ['--rate-limit', '1/min']);
    const bridge = await startBridge({ hubUrl: hub.url, serviceToken: hub.serviceToken, env: { STK_BRIDGE_ID: 'wh-bridge', STK_USAGE_REPORT_SECONDS: '1' } });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) statuses.push((await call(bridge, key, { project: P, env: E })).status);
      expect(statuses.filter((s) => s === 429).length, String(statuses)).toBeGreaterThanOrEqual(2);
      const rl = () => ofType('/a', 'apikey.rate_limited').filter((r) => r.json.data.keyId === keyId);
      await waitFor(async () => rl().length >= 1, 10_000, 'rate_limited');
      // more 429s in the same hour, reported again: no second event
      for (let i = 0; i < 2; i++) expect((await call(bridge, key, { project: P, env: E })).status).toBe(429);
      await new Promise((r) => setTimeout(r, 2500));
      expect(rl()).toHaveLength(1);
      const hour = new Date().toISOString().slice(0, 13) + ':00:00.000Z';
      expect(rl()[0]!.json.data).toMatchObject({ name: 'busy', roles: ['reader'], project: P, env: E, hour, actor: { type: 'system' } });
      expect(verifyStandardWebhook(hooks.all.secret, rl()[0]!.headers, rl()[0]!.body)).toBe(true);
    } finally {
      await bridge.stop();
    }
  });

  it('stk webhooks add / list / test / deliveries / remove', async () => {
    const add = await must(['webhooks', 'add', '--project', P, '--url', `${recv.url}/cli`, '--events', 'apikey.revoked,apikey.leaked']);
    const secret = rememberSecret('webhook-secret', /Signing secret \(store securely\): (whsec_\S+)/.exec(add.stdout)?.[1]);
    const id = /Webhook ID: (wh_\S+)/.exec(add.stdout)?.[1];
    expect(secret && id, add.output).toBeTruthy();
    const list = await must(['webhooks', 'list', '--project', P]);
    expect(list.stdout).toContain(`${id}\t${recv.url}/cli\tapikey.revoked,apikey.leaked\tactive`);
    const test = await must(['webhooks', 'test', '--project', P, id!]);
    expect(test.stderr).toMatch(/Test delivery msg_\S+ answered 200/);
    const [t] = recv.at('/cli');
    expect(t!.json).toMatchObject({ type: 'webhook.test', data: { project: P, webhookId: id } });
    expect(verifyStandardWebhook(secret!, t!.headers, t!.body)).toBe(true);
    const dels = JSON.parse((await must(['webhooks', 'deliveries', '--project', P, '--webhook', id!, '--json'])).stdout);
    expect(dels).toEqual([
      expect.objectContaining({
        deliveryId: t!.headers['webhook-id'],
        type: 'webhook.test',
        status: 'succeeded',
        attempts: 1,
        lastResponseStatus: 200,
        nextAttemptAt: null,
      }),
    ]);
    const all = await must(['webhooks', 'deliveries', '--project', P, '--status', 'succeeded']);
    expect(all.stdout.split('\n').filter(Boolean).length).toBeGreaterThanOrEqual(8);
    await must(['webhooks', 'remove', '--project', P, id!]);
    expect((await must(['webhooks', 'list', '--project', P])).stdout).not.toContain(id!);
    // an unknown event is named, with the list
    const bad = await stk(['webhooks', 'add', '--project', P, '--url', `${recv.url}/x`, '--events', 'apikey.created,apikey.deleted']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('unknown event type "apikey.deleted"');
  });

  it('the audit log records add/test/remove with the host only (a URL may carry a token)', async () => {
    const r = await http.request('GET', `/api/audit?project=${P}&action=webhook.*`);
    expect(r.status).toBe(200);
    expect(r.json.items.map((i: any) => i.action).sort()).toEqual([
      'webhook.add',
      'webhook.add',
      'webhook.add',
      'webhook.add',
      'webhook.remove',
      'webhook.remove',
      'webhook.test',
    ]);
    expect(r.text).not.toContain('/cli');
    expect(r.json.items.find((i: any) => i.action === 'webhook.remove').detail.host).toBe(`127.0.0.1:${recv.port}`);
  });

  it("a viewer of the project and another project's admin can neither add nor list nor read deliveries", async () => {
    const viewer = await join_('viewer@example.com', 'viewer', P);
    const otherAdmin = await join_('blog-admin@example.com', 'admin', 'blog');
    for (const token of [viewer, otherAdmin]) {
      const add = await http.as(token).request('POST', `/api/projects/${P}/webhooks`, { url: `${recv.url}/evil`, events: ['apikey.created'] });
      expect(add.status, add.text).toBe(403);
      expect((await http.as(token).request('GET', `/api/projects/${P}/webhooks`)).status).toBe(403);
      expect((await http.as(token).request('GET', `/api/projects/${P}/webhooks/deliveries`)).status).toBe(403);
      expect((await http.as(token).request('DELETE', `/api/projects/${P}/webhooks/${hooks.all.id}`)).status).toBe(403);
    }
    // blog's admin manages blog's webhooks, and cannot reach shop's through them
    const own = await http.as(otherAdmin).request('POST', `/api/projects/blog/webhooks`, { url: `${recv.url}/blog`, events: ['apikey.created'] });
    expect(own.status, own.text).toBe(201);
    rememberSecret('webhook-secret', own.json.secret);
    expect((await http.as(otherAdmin).request('DELETE', `/api/projects/blog/webhooks/${hooks.all.id}`)).status).toBe(404);
    expect((await http.as(otherAdmin).request('POST', `/api/projects/blog/webhooks/${hooks.all.id}/test`)).status).toBe(404);
    expect((await http.request('GET', `/api/projects/${P}/webhooks`)).json.items).toHaveLength(2);
  });

  it('targets: https only (http to a listed host), no loopback/private/metadata address or name unless listed, no credentials in the URL', async () => {
    const add = (url: string) => http.request('POST', `/api/projects/${P}/webhooks`, { url, events: ['apikey.created'] });
    const refused: Array<[string, RegExp]> = [
      [`http://127.0.0.1:${recv.port + 1}/x`, /127\.0\.0\.1:\d+ is not allowed: it is a loopback address; .*STK_WEBHOOK_ALLOW_HOSTS/],
      ['https://127.0.0.1/x', /is not allowed: it is a loopback address/],
      ['https://[::1]:8443/x', /is not allowed: it is a loopback address/],
      ['https://localhost/x', /is not allowed: it is a name for this machine/],
      ['https://169.254.169.254/latest/meta-data', /link-local address/],
      ['https://metadata.google.internal/x', /cloud metadata service name/],
      ['https://10.1.2.3/x', /a private network address/],
      ['https://[::ffff:192.168.1.1]/x', /a private network address/],
      ['http://hooks.example.com/x', /url must use https:/],
      ['https://user:pw@hooks.example.com/x', /must not carry a user or password/],
      ['ftp://hooks.example.com/x', /unsupported url scheme/],
      // WHATWG URL reads an integer host as IPv4: refused as the address it is
      ['https://2130706433/x', /url host 127\.0\.0\.1:443 is not allowed: it is a loopback address/],
      ['https://-bad-.example/x', /url host must be a DNS name or an IP address/],
      ['not a url', /url must not contain whitespace/],
    ];
    for (const [url, why] of refused) {
      const r = await add(url);
      expect(r.status, url).toBe(400);
      expect(r.json.error.message, url).toMatch(why);
      expect(r.json.error.message).not.toContain('pw@');
    }
    expect((await http.request('GET', `/api/projects/${P}/webhooks`)).json.items).toHaveLength(2);
  });
});
