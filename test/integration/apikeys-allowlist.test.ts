import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Proc } from '../helpers/procs.js';
import { call, startStack, type Stack } from './apikeys.setup.js';

/**
 * Per-key IP/CIDR allowlists on real processes: a Hub, a Bridge behind a trusted proxy
 * (STK_TRUST_PROXY=loopback: the client is the X-Forwarded-For address) and one without (the TCP peer,
 * X-Forwarded-For ignored), the real CLI. A request from elsewhere → 403 FORBIDDEN that never says
 * which addresses are allowed; a change is applied by both Bridges before the command returns.
 */
describe('API key IP allowlists', () => {
  let s: Stack;
  let proxied: Proc;
  let direct: Proc;
  const base = () => `/api/projects/${s.project}/envs/${s.env}/apikeys`;
  const scope = () => ['--project', s.project, '--env', s.env];
  const from = (b: Proc, key: string, xff: string) => call(b, key, { headers: { 'x-forwarded-for': xff } });
  /** POST /call from the TCP source address `local` (any 127/8 address works on loopback) */
  const fromSource = (b: Proc, key: string, local: string) =>
    new Promise<{ status: number; body: any }>((resolve, reject) => {
      const body = JSON.stringify({ path: 'db/users/select', params: {} });
      const r = request(
        `${b.url}/call`,
        { method: 'POST', localAddress: local, headers: { 'content-type': 'application/json', 'x-santokit-api-key': key } },
        (res) => {
          let t = '';
          res.on('data', (c) => (t += c));
          res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(t) }));
        },
      );
      r.on('error', reject);
      r.end(body);
    });
  const denied = (r: { status: number; body: any }) => {
    expect(r.status).toBe(403);
    expect(r.body.error).toMatchObject({ code: 'FORBIDDEN', message: 'client address not allowed for this API key' });
  };

  beforeAll(async () => {
    s = await startStack({ bridges: 0 });
    proxied = await s.startBridge({ STK_TRUST_PROXY: 'loopback' });
    direct = await s.startBridge();
  });
  afterAll(async () => {
    await s?.stop();
  });

  it('--allow-ip with IPv4 and IPv6 ranges: allowed addresses are served, others get 403 naming nothing; shown in list and show', async () => {
    const c = await s.stk(['apikey', 'create', 'office', ...scope(), '--roles', 'reader', '--allow-ip', '203.0.113.0/24, 2001:db8::/32', '--json']);
    expect(c.code, c.output).toBe(0);
    const k = JSON.parse(c.stdout);
    expect(k).toMatchObject({ allowedIps: ['203.0.113.0/24', '2001:db8::/32'], ack: { bridges: 2, acked: 2, lagging: [] } });
    const key = k.apiKey as string;
    expect((await from(proxied, key, '203.0.113.9')).status).toBe(200);
    expect((await from(proxied, key, '2001:db8::5')).status).toBe(200);
    expect((await from(proxied, key, '2001:0DB8:0:0::ffff')).status).toBe(200);
    // an IPv4-mapped IPv6 client address matches the IPv4 rule
    expect((await from(proxied, key, '::ffff:203.0.113.9')).status).toBe(200);
    for (const outside of ['203.0.114.1', '198.51.100.1', '2001:db9::1', '::1']) {
      const r = await from(proxied, key, outside);
      denied(r);
      expect(JSON.stringify(r.body)).not.toMatch(/203\.0\.113|2001:db8/);
    }
    // without STK_TRUST_PROXY the header is ignored: the client is the TCP peer (127.0.0.1)
    denied(await from(direct, key, '203.0.113.9'));
    // a wrong secret is still a 401 (the allowlist is checked only for a valid key)
    expect((await from(proxied, key.slice(0, -3) + 'AAA', '198.51.100.1')).status).toBe(401);

    const list = await s.stk(['apikey', 'list', ...scope()]);
    expect(list.stdout).toMatch(new RegExp(`^${k.keyId}\\toffice\\treader\\tactive\\t.*\\t203\\.0\\.113\\.0/24,2001:db8::/32$`, 'm'));
    const show = await s.stk(['apikey', 'show', 'office', ...scope()]);
    expect(show.stdout).toContain('allowed from: 203.0.113.0/24, 2001:db8::/32');
  });

  it('update --allow-ip / --no-allow-ip: applied on both Bridges before the command returns (source address 127.0.0.1 vs 127.0.0.2); audited', async () => {
    const k = (await s.api('POST', base(), { name: 'local', roles: ['reader'] })).json;
    expect((await fromSource(direct, k.apiKey, '127.0.0.2')).status).toBe(200);
    const u = await s.stk(['apikey', 'update', 'local', ...scope(), '--allow-ip', '127.0.0.1']);
    expect(u.code, u.output).toBe(0);
    expect(u.output).toContain('allowed from 127.0.0.1');
    expect(u.output).toContain('Bridges: 2/2 confirmed');
    expect((await fromSource(direct, k.apiKey, '127.0.0.1')).status).toBe(200);
    denied(await fromSource(direct, k.apiKey, '127.0.0.2'));
    // behind the trusted proxy the forwarded address counts, not the proxy's
    denied(await from(proxied, k.apiKey, '127.0.0.2'));
    expect((await from(proxied, k.apiKey, '127.0.0.1')).status).toBe(200);

    const clear = await s.stk(['apikey', 'update', 'local', ...scope(), '--no-allow-ip', '--json']);
    expect(clear.code, clear.output).toBe(0);
    expect(JSON.parse(clear.stdout)).toMatchObject({ allowedIps: null, ack: { acked: 2 } });
    expect((await fromSource(direct, k.apiKey, '127.0.0.2')).status).toBe(200);

    const audit = await s.api('GET', `/api/audit?project=${s.project}&action=apikey.update`);
    const mine = (audit.json.items as Array<{ detail: any }>).filter((e) => e.detail.keyId === k.keyId).map((e) => e.detail.allowedIps);
    expect(mine).toEqual([null, ['127.0.0.1']]);
  });

  it('bad entries → 422 INVALID_IP_ALLOWLIST naming the entry; at most 100; nothing is created or changed', async () => {
    const bad: Array<[unknown, RegExp]> = [
      [['10.0.0.0/33'], /"10\.0\.0\.0\/33".*0 to 32/],
      [['2001:db8::/129'], /"2001:db8::\/129".*0 to 128/],
      [['fe80::1%eth0'], /"fe80::1%eth0"/],
      [['10.0.0.1', 'example.com'], /"example\.com": not an IPv4 or IPv6 address/],
      [['1.2.3.04'], /"1\.2\.3\.04"/],
      [['10.0.0.0/8', ''], /empty allowlist entry/],
      [[], /the allowlist is empty/],
      [42, /must be an array/],
      [Array.from({ length: 101 }, (_, i) => `10.0.${i}.1`), /at most 100/],
    ];
    for (const [allowedIps, msg] of bad) {
      const r = await s.api('POST', base(), { name: 'bad', roles: ['reader'], allowedIps });
      expect(r.status, JSON.stringify(allowedIps).slice(0, 80)).toBe(422);
      expect(r.json.error.code).toBe('INVALID_IP_ALLOWLIST');
      expect(r.json.error.message).toMatch(msg);
    }
    expect((await s.api('GET', `${base()}/bad`)).status).toBe(404);
    const hundred = Array.from({ length: 100 }, (_, i) => `10.0.${i}.0/24`);
    const ok = await s.api('POST', base(), { name: 'hundred', roles: ['reader'], allowedIps: hundred });
    expect(ok.status, ok.text).toBe(201);
    expect(ok.json.allowedIps).toHaveLength(100);
    const cli = await s.stk(['apikey', 'update', 'hundred', ...scope(), '--allow-ip', '10.0.0.0/8,300.1.1.1']);
    expect(cli.code).toBe(1);
    expect(cli.output).toContain('"300.1.1.1"');
    expect(cli.output).toContain('422');
    expect((await s.api('GET', `${base()}/hundred`)).json.allowedIps).toEqual(hundred);
  });
});
