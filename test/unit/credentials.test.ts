import { describe, expect, it, vi } from 'vitest';
import { createHmac, randomBytes } from 'node:crypto';

// the real functions, counted (the timing test checks which work each verification path does)
const crypto = vi.hoisted(() => ({
  createHmac: undefined as unknown as ReturnType<typeof vi.fn>,
  timingSafeEqual: undefined as unknown as ReturnType<typeof vi.fn>,
}));
vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:crypto')>();
  crypto.createHmac = vi.fn(real.createHmac);
  crypto.timingSafeEqual = vi.fn(real.timingSafeEqual);
  return { ...real, createHmac: crypto.createHmac, timingSafeEqual: crypto.timingSafeEqual };
});
import { AppError } from '../../src/protocol/errors.js';
import { formatKey, generateKey } from '../../src/protocol/key-format.js';
import type { SyncKeyRecord } from '../../src/protocol/sync.js';
import { ApiKeyVerifier, FailureLimiter, KeyRateLimiter, KeyTable, UsageCounter, verifyKey } from '../../src/bridge/credentials/index.js';
import { SECRET_CURRENT, SECRET_CURRENT_IN_GRACE, SECRET_NONE, SECRET_PREVIOUS } from '../../src/bridge/credentials/key-table.js';
import { topAdd } from '../../src/bridge/credentials/usage.js';

const pepper = randomBytes(32);
const hash = (secret: string) => createHmac('sha256', pepper).update(secret).digest('hex');

function record(over: Partial<SyncKeyRecord> & { secret: string; keyId: string }): SyncKeyRecord {
  const { secret, ...rest } = over;
  return {
    project: 'shop',
    env: 'dev',
    name: 'k',
    roles: ['reader'],
    secretHash: hash(secret),
    prevSecretHash: null,
    prevExpiresAt: null,
    status: 'active',
    expiresAt: null,
    rateLimitPerMin: null,
    ...rest,
  };
}

function setup(recs: Array<{ over?: Partial<SyncKeyRecord> }> = [{}], opts = { rateLimitPerApiKey: 1000, invalidKeyLimitPerMin: 100 }) {
  const keys = recs.map(({ over }) => {
    const g = generateKey('dev');
    return { ...g, rec: record({ keyId: g.keyId, secret: g.secret, ...over }) };
  });
  const table = new KeyTable();
  table.replaceAll(
    pepper,
    keys.map((k) => k.rec),
  );
  const usage = new UsageCounter();
  const state = {
    synced: () => true,
    stale: false,
    isExpired() {
      return this.stale;
    },
  };
  const v = new ApiKeyVerifier(table, usage, { synced: () => state.synced(), isExpired: () => state.stale }, opts);
  return { keys, table, usage, state, v };
}

const req = (key?: string, extra: Record<string, string> = {}, ip = '10.0.0.1') => ({
  headers: { ...(key === undefined ? {} : { 'x-santokit-api-key': key }), ...extra },
  ip,
});

function expectError(fn: () => unknown, status: number, message?: RegExp): AppError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(AppError);
    expect((e as AppError).status).toBe(status);
    if (message) expect((e as AppError).message).toMatch(message);
    return e as AppError;
  }
  throw new Error('expected an error');
}

describe('verifyKey', () => {
  it('accepts the current secret and returns the entry with a prebuilt principal', () => {
    const { keys, table } = setup();
    const r = verifyKey(table, keys[0]!.key, Date.now());
    expect(typeof r).toBe('object');
    if (typeof r === 'object') expect(r.principal).toEqual({ kind: 'apikey', sub: keys[0]!.keyId, roles: ['reader'], project: 'shop', env: 'dev' });
  });

  it('rejects malformed and mistyped keys before touching the key table', () => {
    const { keys, table } = setup();
    const get = vi.spyOn(table, 'get');
    const k = keys[0]!.key;
    expect(verifyKey(table, 'nope', Date.now())).toBe('format');
    expect(verifyKey(table, k.slice(0, -2), Date.now())).toBe('checksum'); // truncated: docs/api-keys.md promises "checksum mismatch"
    const typo = k.slice(0, -8) + (k.at(-8) === 'x' ? 'y' : 'x') + k.slice(-7);
    expect(verifyKey(table, typo, Date.now())).toBe('checksum');
    expect(get).not.toHaveBeenCalled();
    expect(verifyKey(table, k, Date.now())).not.toBeTypeOf('string');
    expect(get).toHaveBeenCalledTimes(1);
  });

  it('unknown id and wrong secret', () => {
    const { keys, table } = setup();
    expect(verifyKey(table, formatKey('ZZZZZZZZZZZZ', keys[0]!.secret, 'dev'), Date.now())).toBe('unknown');
    expect(verifyKey(table, formatKey(keys[0]!.keyId, 'B'.repeat(22), 'dev'), Date.now())).toBe('secret');
  });

  it('an unknown key id costs the same HMAC and constant-time compare as a wrong secret (no timing oracle)', () => {
    const { keys, table } = setup();
    // the compare is the entries' own constant-time secretMatches (in place, no allocation): an unknown
    // id is compared against a stand-in entry of the same class
    const compare = vi.spyOn(Object.getPrototypeOf(table.get(keys[0]!.keyId)!) as { secretMatches: () => boolean }, 'secretMatches');
    crypto.createHmac.mockClear();
    expect(verifyKey(table, formatKey('ZZZZZZZZZZZZ', 'B'.repeat(22), 'dev'), Date.now())).toBe('unknown');
    const unknown = [crypto.createHmac.mock.calls.length, compare.mock.calls.length];
    crypto.createHmac.mockClear();
    compare.mockClear();
    expect(verifyKey(table, formatKey(keys[0]!.keyId, 'B'.repeat(22), 'dev'), Date.now())).toBe('secret');
    const known = [crypto.createHmac.mock.calls.length, compare.mock.calls.length];
    compare.mockRestore();
    expect(unknown).toEqual([1, 1]);
    expect(unknown).toEqual(known);
  });

  it('revoked and expired keys fail only when the secret is right', () => {
    const now = Date.now();
    const { keys, table } = setup([
      { over: { status: 'revoked' } },
      { over: { expiresAt: new Date(now - 1).toISOString() } },
      { over: { expiresAt: new Date(now + 60_000).toISOString() } },
    ]);
    expect(verifyKey(table, keys[0]!.key, now)).toBe('revoked');
    expect(verifyKey(table, formatKey(keys[0]!.keyId, 'C'.repeat(22)), now)).toBe('secret');
    expect(verifyKey(table, keys[1]!.key, now)).toBe('expired');
    expect(typeof verifyKey(table, keys[2]!.key, now)).toBe('object');
    expect(verifyKey(table, keys[2]!.key, now + 60_001)).toBe('expired');
  });

  it('suspended keys fail only when the secret is right; a status the Bridge does not know is refused like revoked', () => {
    const now = Date.now();
    const { keys, table } = setup([{ over: { status: 'suspended' } }, { over: { status: 'retired' as never } }]);
    expect(verifyKey(table, keys[0]!.key, now)).toBe('suspended');
    expect(verifyKey(table, formatKey(keys[0]!.keyId, 'C'.repeat(22)), now)).toBe('secret');
    expect(verifyKey(table, keys[1]!.key, now)).toBe('revoked');
    // resume: the same secret works again
    table.upsert(keys[0]!.keyId, { ...keys[0]!.rec, status: 'active' });
    expect(typeof verifyKey(table, keys[0]!.key, now)).toBe('object');
  });

  it('the in-place hash compare: every byte counts, in every slab position (current and previous hash)', () => {
    const now = Date.now();
    const table = new KeyTable();
    const ks = Array.from({ length: 3000 }, () => generateKey('dev')); // > one 64 KB slab of hashes
    const prev = generateKey('dev');
    table.replaceAll(pepper, [
      ...ks.map((k) => record({ keyId: k.keyId, secret: k.secret })),
      record({ keyId: prev.keyId, secret: 'D'.repeat(22), prevSecretHash: hash(prev.secret), prevExpiresAt: new Date(now + 1000).toISOString() }),
    ]);
    for (const k of [ks[0]!, ks[2047]!, ks[2048]!, ks[2999]!]) {
      const e = table.get(k.keyId)!;
      const h = createHmac('sha256', pepper).update(k.secret).digest();
      expect(e.secretMatches(h, now)).toBe(SECRET_CURRENT);
      for (const i of [0, 1, 15, 31]) {
        const bad = Buffer.from(h);
        bad[i] = bad[i]! ^ 0x01;
        expect(e.secretMatches(bad, now), `byte ${i}`).toBe(SECRET_NONE);
      }
    }
    const e = table.get(prev.keyId)!;
    const h = createHmac('sha256', pepper).update(prev.secret).digest();
    expect(e.secretMatches(h, now)).toBe(SECRET_PREVIOUS);
    expect(e.secretMatches(createHmac('sha256', pepper).update('D'.repeat(22)).digest(), now)).toBe(SECRET_CURRENT_IN_GRACE);
    expect(e.secretMatches(createHmac('sha256', pepper).update('D'.repeat(22)).digest(), now + 1000)).toBe(SECRET_CURRENT);
    expect(e.secretMatches(h, now + 1000)).toBe(SECRET_NONE);
    h[31] = h[31]! ^ 0x80;
    expect(e.secretMatches(h, now)).toBe(SECRET_NONE);
  });

  it('rotation grace: the previous secret works until its deadline', () => {
    const now = Date.now();
    const old = generateKey('dev');
    const fresh = generateKey('dev', old.keyId);
    const table = new KeyTable();
    table.replaceAll(pepper, [
      record({ keyId: old.keyId, secret: fresh.secret, prevSecretHash: hash(old.secret), prevExpiresAt: new Date(now + 1000).toISOString() }),
    ]);
    expect(typeof verifyKey(table, fresh.key, now)).toBe('object');
    expect(typeof verifyKey(table, old.key, now)).toBe('object');
    expect(verifyKey(table, old.key, now + 1000)).toBe('secret');
    expect(typeof verifyKey(table, fresh.key, now + 1000)).toBe('object');
  });

  it('a key change replaces the entry; null removes it; a malformed record is skipped', () => {
    const { keys, table } = setup();
    const k = keys[0]!;
    table.upsert(k.keyId, { ...k.rec, status: 'revoked' });
    expect(verifyKey(table, k.key, Date.now())).toBe('revoked');
    table.upsert(k.keyId, null);
    expect(verifyKey(table, k.key, Date.now())).toBe('unknown');
    table.upsert(k.keyId, { ...k.rec, secretHash: 'not-hex' });
    expect(table.get(k.keyId)).toBeUndefined();
  });
});

describe('ApiKeyVerifier.authenticate', () => {
  it('returns the principal and counts usage per key and address', () => {
    const { keys, v, usage } = setup();
    const p = v.authenticate(req(keys[0]!.key));
    expect(p.sub).toBe(keys[0]!.keyId);
    v.authenticate(req(keys[0]!.key, {}, '10.0.0.2'));
    const rep = usage.drain('b1')!;
    expect(rep.keys).toHaveLength(1);
    expect(rep.keys[0]!.minutes.reduce((a, m) => a + m.count, 0)).toBe(2);
    expect(rep.keys[0]!.sources.map((s) => s.address).sort()).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(usage.drain('b1')).toBeNull();
  });

  it('no credential → 401; a Bearer token → 401 "not supported yet"', () => {
    const { v } = setup();
    expectError(() => v.authenticate(req()), 401, /credential required/);
    expectError(() => v.authenticate(req(undefined, { authorization: 'Bearer x' })), 401, /end-user tokens are not supported yet/);
  });

  it('a hint header that contradicts the key binding → 403', () => {
    const { keys, v } = setup();
    expectError(() => v.authenticate(req(keys[0]!.key, { 'x-santokit-project': 'other' })), 403);
    expectError(() => v.authenticate(req(keys[0]!.key, { 'x-santokit-env': 'prod' })), 403);
    expect(v.authenticate(req(keys[0]!.key, { 'x-santokit-project': 'shop', 'x-santokit-env': 'dev' })).project).toBe('shop');
  });

  it('max-stale → 503; not yet synced and unknown key → 503', () => {
    const { keys, v, state } = setup();
    state.stale = true;
    expectError(() => v.authenticate(req(keys[0]!.key)), 503, /max-stale/);
    const t = new KeyTable();
    const cold = new ApiKeyVerifier(
      t,
      new UsageCounter(),
      { synced: () => false, isExpired: () => false },
      { rateLimitPerApiKey: 10, invalidKeyLimitPerMin: 10 },
    );
    expectError(() => cold.authenticate(req(keys[0]!.key)), 503, /not loaded API keys/);
  });

  it('IP allowlist: only listed addresses and ranges (IPv4, IPv6, IPv4-mapped), 403 otherwise without spending the rate limit; no list = any address', () => {
    const { keys, v, usage } = setup([{ over: { allowedIps: ['203.0.113.0/24', '2001:db8::/32', '198.51.100.7', 'not-an-ip'] } }, {}], {
      rateLimitPerApiKey: 5,
      invalidKeyLimitPerMin: 100,
    });
    const [listed, open] = [keys[0]!.key, keys[1]!.key];
    for (const ip of ['203.0.113.1', '198.51.100.7', '2001:db8::1', '::ffff:203.0.113.200'])
      expect(v.authenticate(req(listed, {}, ip)).sub).toBe(keys[0]!.keyId);
    for (let i = 0; i < 5; i++) {
      for (const ip of ['203.0.114.1', '198.51.100.8', '2001:db9::1', '', 'garbage']) {
        expectError(() => v.authenticate(req(listed, {}, ip)), 403, /^client address not allowed for this API key$/);
      }
    }
    // 4 served + 25 refused: the 5th request from a listed address is still within the limit of 5, the 6th is not
    expect(v.authenticate(req(listed, {}, '203.0.113.1')).sub).toBe(keys[0]!.keyId);
    expectError(() => v.authenticate(req(listed, {}, '203.0.113.1')), 429);
    expect(v.counts.ip_denied).toBe(25);
    const counted = usage.drain('b')!.keys.find((k) => k.keyId === keys[0]!.keyId)!;
    expect(counted.minutes.reduce((n, m) => n + (m.rejected?.[403] ?? 0), 0)).toBe(25);
    expect(v.authenticate(req(open, {}, '192.0.2.1')).sub).toBe(keys[1]!.keyId);
  });

  it('per-key rate limit → 429 with Retry-After, per-key override', () => {
    const { keys, v } = setup([{ over: { rateLimitPerMin: 3 } }, {}], { rateLimitPerApiKey: 5, invalidKeyLimitPerMin: 100 });
    for (let i = 0; i < 3; i++) v.authenticate(req(keys[0]!.key));
    const e = expectError(() => v.authenticate(req(keys[0]!.key)), 429, /3 requests\/min/);
    expect(Number(e.headers!['retry-after'])).toBeGreaterThanOrEqual(1);
    for (let i = 0; i < 5; i++) v.authenticate(req(keys[1]!.key));
    expectError(() => v.authenticate(req(keys[1]!.key)), 429, /5 requests\/min/);
  });

  it('invalid keys from one address → 429 past the limit, while a valid key from that address is served; revoked/expired do not count', () => {
    const { keys, v, table } = setup([{}, { over: { status: 'revoked' } }], { rateLimitPerApiKey: 1000, invalidKeyLimitPerMin: 3 });
    for (let i = 0; i < 5; i++) expectError(() => v.authenticate(req(keys[1]!.key)), 401, /revoked/);
    table.upsert(keys[1]!.keyId, { ...keys[1]!.rec, status: 'suspended' });
    for (let i = 0; i < 5; i++) expectError(() => v.authenticate(req(keys[1]!.key)), 401, /^API key suspended$/);
    for (let i = 0; i < 3; i++) expectError(() => v.authenticate(req('garbage')), 401);
    const e = expectError(() => v.authenticate(req('garbage')), 429, /too many invalid API keys/);
    expect(Number(e.headers!['retry-after'])).toBeGreaterThanOrEqual(1);
    // a wrong secret for a real key id is an invalid key too
    expectError(() => v.authenticate(req(formatKey(keys[0]!.keyId, 'B'.repeat(22), 'dev'))), 429);
    // the valid key from the flooding address is verified and served, again and again
    for (let i = 0; i < 5; i++) expect(v.authenticate(req(keys[0]!.key)).sub).toBe(keys[0]!.keyId);
    expectError(() => v.authenticate(req('garbage')), 429);
    // another address gets 401 for its own first invalid key
    expectError(() => v.authenticate(req('garbage', {}, '10.9.9.9')), 401);
  });
});

describe('limits', () => {
  it('token bucket: bursts the whole minute, then refills at limit/60 s', () => {
    const l = new KeyRateLimiter();
    const t0 = 1_000_000;
    for (let i = 0; i < 60; i++) expect(l.take('k', 60, t0)).toBe(0);
    const wait = l.take('k', 60, t0);
    expect(wait).toBeGreaterThan(0);
    expect(wait).toBeLessThanOrEqual(1000);
    expect(l.take('k', 60, t0 + 1000)).toBe(0);
    expect(l.take('k', 60, t0 + 1000)).toBeGreaterThan(0);
    // a changed limit starts a fresh bucket
    expect(l.take('k', 120, t0 + 1000)).toBe(0);
  });

  it('failure windows expire after a minute and the tracker stays bounded', () => {
    const f = new FailureLimiter(2, 60_000, 10);
    expect(f.fail('a', 0)).toBe(0);
    expect(f.fail('a', 1)).toBe(0);
    expect(f.fail('a', 2)).toBe(59_998);
    // a new window starts once the minute is over
    expect(f.fail('a', 60_000)).toBe(0);
    for (let i = 0; i < 50; i++) f.fail('ip' + i, 100_000);
    expect(f.size).toBeLessThanOrEqual(10);
    expect(f.fail('ip49', 100_001)).toBe(0);
  });

  it("rotation grace: requests are counted per secret, with the previous secret's addresses; keys without a grace report no grace block", () => {
    const now = Date.now();
    const old = generateKey('dev');
    const fresh = generateKey('dev', old.keyId);
    const plain = generateKey('dev');
    const until = now + 60_000;
    const { v, usage, table } = setup();
    table.upsert(old.keyId, record({ keyId: old.keyId, secret: fresh.secret, prevSecretHash: hash(old.secret), prevExpiresAt: new Date(until).toISOString() }));
    table.upsert(plain.keyId, record({ keyId: plain.keyId, secret: plain.secret }));
    v.authenticate(req(old.key, {}, '10.0.0.7'));
    v.authenticate(req(old.key, {}, '10.0.0.7'));
    v.authenticate(req(old.key, {}, '10.0.0.8'));
    v.authenticate(req(fresh.key, {}, '10.0.0.9'));
    v.authenticate(req(plain.key));
    const rep = usage.drain('b')!;
    expect(rep.perSecret).toBe(true);
    const k = rep.keys.find((x) => x.keyId === old.keyId)!;
    expect(k.minutes.reduce((a, m) => a + m.count, 0)).toBe(4);
    expect(k.plainLastUsedAt).toBeNull();
    expect(k.grace).toMatchObject({ prevUntil: new Date(until).toISOString(), current: 1, previous: 3 });
    expect(k.grace!.previousSources.sort((a, b) => b.count - a.count)).toEqual([
      { address: '10.0.0.7', count: 2 },
      { address: '10.0.0.8', count: 1 },
    ]);
    expect(Date.parse(k.grace!.previousLastUsedAt!)).toBeGreaterThan(0);
    const p = rep.keys.find((x) => x.keyId === plain.keyId)!;
    expect(p.grace).toBeUndefined();
    expect(p.plainLastUsedAt).toBe(p.lastUsedAt);
  });

  it('grace counts survive a failed report; counts of an older grace period become plain (possibly the previous secret)', () => {
    const u = new UsageCounter();
    const now = Date.now();
    u.count('K1', '1.2.3.4', now, SECRET_PREVIOUS, now + 1000);
    u.count('K1', undefined, now, SECRET_CURRENT_IN_GRACE, now + 1000);
    const rep = u.drain('b')!;
    u.count('K1', '1.2.3.4', now + 5, SECRET_PREVIOUS, now + 1000);
    u.restore(rep);
    const again = u.drain('b')!.keys[0]!;
    expect(again.grace).toMatchObject({ current: 1, previous: 2, previousSources: [{ address: '1.2.3.4', count: 2 }] });
    expect(again.plainLastUsedAt).toBeNull();
    // rotated again (a new deadline): the earlier grace's requests are reported as plain ones
    u.restore({ bridgeId: 'b', perSecret: true, keys: [again] });
    u.count('K1', undefined, now + 9, SECRET_CURRENT_IN_GRACE, now + 5000);
    const third = u.drain('b')!.keys[0]!;
    expect(third.grace).toMatchObject({ current: 1, previous: 0, previousSources: [] });
    expect(third.plainLastUsedAt).toBe(new Date(now + 5).toISOString());
  });

  it('topAdd keeps at most k addresses and every heavy one (Space-Saving)', () => {
    const m = new Map<string, number>();
    for (let i = 0; i < 1000; i++) topAdd(m, `10.0.${i % 250}.${i}`, 1, 10);
    for (let i = 0; i < 300; i++) topAdd(m, '192.0.2.1', 1, 10);
    expect(m.size).toBe(10);
    expect([...m.values()].reduce((a, b) => a + b, 0)).toBe(1300);
    const top = [...m].sort((a, b) => b[1] - a[1])[0]!;
    expect(top[0]).toBe('192.0.2.1');
    expect(top[1]).toBeGreaterThanOrEqual(300);
  });

  it('usage survives a failed report (restore merges it back)', () => {
    const u = new UsageCounter();
    const now = Date.now();
    u.count('K1', '1.2.3.4', now);
    u.count('K1', '1.2.3.4', now);
    const rep = u.drain('b')!;
    u.count('K1', '5.6.7.8', now);
    u.restore(rep);
    const again = u.drain('b')!;
    expect(again.keys[0]!.minutes.reduce((a, m) => a + m.count, 0)).toBe(3);
    expect(again.keys[0]!.sources).toEqual(
      expect.arrayContaining([
        { address: '1.2.3.4', count: 2 },
        { address: '5.6.7.8', count: 1 },
      ]),
    );
    expect(again.keys[0]!.minutes[0]!.minute).toMatch(/:00\.000Z$/);
  });
});
