/**
 * Login throttling beyond one address (issue 12, finding 6): wrong passwords for one account from 60
 * real loopback addresses (each request leaves from its own 127.0.0.x, no forwarded headers) are cut
 * off by the per-account limit; the owner still logs in from an address they used before; an unknown
 * email is throttled the same way (no existence oracle); failed-login audit rows are bounded and never
 * hold what was typed into the email field when it is no operator's email (a pasted password).
 */
import { readFileSync, existsSync } from 'node:fs';
import { request } from 'node:http';
import { openSqlite, type TestSqlite } from '../helpers/sqlite.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHub, TEST_OWNER } from '../helpers/procs.js';
import { loginToken } from '../helpers/cli.js';
import { rememberSecret } from '../helpers/secrets.js';

type Hub = Awaited<ReturnType<typeof startHub>>;

/** POST /api/auth/login from a given local address (a fresh connection each time). */
function loginFrom(
  hub: Hub,
  localAddress: string,
  email: string,
  password: string,
): Promise<{ status: number; retryAfter: number | null; code: string | null }> {
  const body = JSON.stringify({ email, password });
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: hub.port,
        localAddress,
        method: 'POST',
        path: '/api/auth/login',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        let data = '';
        res.on('data', (d) => (data += d));
        res.on('end', () => {
          let code: string | null = null;
          try {
            code = JSON.parse(data)?.error?.code ?? null;
          } catch {
            /* not JSON */
          }
          const ra = res.headers['retry-after'];
          resolve({ status: res.statusCode ?? 0, retryAfter: ra === undefined ? null : Number(ra), code });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Runs `fn` over `items` with at most `n` in flight. */
async function pool<T, R>(items: T[], n: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

const tally = (rs: Array<{ status: number }>) => {
  const m: Record<number, number> = {};
  for (const r of rs) m[r.status] = (m[r.status] ?? 0) + 1;
  return m;
};

describe('security: login throttling per account, bounded failure state and audit', () => {
  let hub: Hub;
  let db: TestSqlite;
  const started = Date.now();
  const lines: string[] = [];
  /** 401s seen so far: each is a failure that reached the password hash */
  let failures = 0;
  beforeAll(async () => {
    hub = await startHub();
    // the owner has logged in from 127.0.0.1 before the attack
    await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
    db = openSqlite(hub.dbUrl.replace(/^sqlite:\/\//, ''), { readonly: true });
  });
  afterAll(async () => {
    db?.close();
    await hub?.stop();
    for (const l of lines) console.log(`[security] login throttle: ${l}`);
  });

  it('600 wrong passwords for the owner from 60 addresses → 10 reach the hash, 590 × 429; the owner still logs in from home', async () => {
    const attempts = Array.from({ length: 600 }, (_, i) => ({ from: `127.0.0.${2 + (i % 60)}`, pw: `wrong-password-${i}` }));
    const t0 = Date.now();
    const rs = await pool(attempts, 30, (a) => loginFrom(hub, a.from, TEST_OWNER.email, a.pw));
    const ms = Date.now() - t0;
    const s = tally(rs);
    failures += s[401] ?? 0;
    const refused = rs.filter((r) => r.status === 429);
    // from a new address even the right password waits for the lock; from the address the owner used, it works
    const elsewhere = await loginFrom(hub, '127.0.0.99', TEST_OWNER.email, TEST_OWNER.password);
    const home = await loginFrom(hub, '127.0.0.1', TEST_OWNER.email, TEST_OWNER.password);
    lines.push(
      `600 wrong passwords for one account from 60 addresses in ${(ms / 1000).toFixed(1)} s → ${s[401] ?? 0} × 401, ${s[429] ?? 0} × 429 (Retry-After ${refused[0]?.retryAfter}s); right password from a new address → ${elsewhere.status}, from the owner's usual address → ${home.status}`,
    );
    expect(s[401]).toBe(10);
    expect(s[429]).toBe(590);
    expect(refused.every((r) => r.code === 'TOO_MANY_REQUESTS' && r.retryAfter !== null && r.retryAfter > 0 && r.retryAfter <= 300)).toBe(true);
    expect(elsewhere.status).toBe(429);
    expect(home.status).toBe(200);
  }, 120_000);

  it('an email that belongs to nobody is throttled the same way (no oracle for which accounts exist)', async () => {
    const rs = await pool(
      Array.from({ length: 120 }, (_, i) => `127.0.1.${1 + (i % 40)}`),
      20,
      (from) => loginFrom(hub, from, 'ghost@example.com', 'whatever-password'),
    );
    const s = tally(rs);
    failures += s[401] ?? 0;
    lines.push(`120 attempts for an unknown email from 40 addresses → ${s[401] ?? 0} × 401, ${s[429] ?? 0} × 429`);
    expect(s).toEqual({ 401: 10, 429: 110 });
  }, 60_000);

  it('failed-login audit rows are bounded and keep a keyed hash instead of what was typed for an unknown email', async () => {
    const pasted = rememberSecret('password', 'Pasted-Into-Email-Field-Secret-42!');
    expect((await loginFrom(hub, '127.0.2.1', pasted, 'x')).status).toBe(401);
    failures++;
    // many distinct unknown emails from many addresses: each reaches the hash once
    const spray = Array.from({ length: 150 }, (_, i) => ({ from: `127.0.3.${1 + (i % 15)}`, email: `spray-${i}@example.com` }));
    const rs = await pool(spray, 20, (a) => loginFrom(hub, a.from, a.email, 'nope-nope'));
    expect(tally(rs)).toEqual({ 401: 150 });
    failures += 150;
    const rows = db.prepare("select actor_email, detail_json from audit_log where action = 'operator.login_failed'").all() as Array<{
      actor_email: string | null;
      detail_json: string;
    }>;
    const windows = 1 + Math.floor((Date.now() - started) / 60_000);
    lines.push(
      `${failures} failed logins → ${rows.length} audit rows (at most 60 a minute; ${windows} minute window(s)), typed text of unknown emails stored as a keyed hash only`,
    );
    expect(rows.length).toBeLessThanOrEqual(60 * windows);
    expect(rows.length).toBeLessThan(failures);
    // the owner's failures name the owner; an unknown email is a hash, never the text
    expect(rows.filter((r) => r.actor_email === TEST_OWNER.email).length).toBeGreaterThan(0);
    for (const r of rows.filter((x) => x.actor_email !== TEST_OWNER.email)) {
      expect(r.actor_email).toBeNull();
      expect(JSON.parse(r.detail_json).typedEmailHash).toMatch(/^[0-9a-f]{24}$/);
    }
    // not in the audit log, and not anywhere in the store's files
    const all = JSON.stringify(db.prepare('select * from audit_log').all());
    expect(all).not.toContain(pasted);
    expect(all).not.toContain(pasted.toLowerCase());
    expect(all).not.toContain('ghost@example.com');
    const file = hub.dbUrl.replace(/^sqlite:\/\//, '');
    for (const f of [file, `${file}-wal`]) if (existsSync(f)) expect(readFileSync(f).includes(Buffer.from(pasted.toLowerCase()))).toBe(false);
  }, 60_000);
});
