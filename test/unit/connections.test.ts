import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { AppError } from '../../src/protocol/errors.js';
import { describeConnectError, maskDbUrl, parseDbUrl, scrubSecrets } from '../../src/hub/services/connections.js';

function badRequestMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(AppError);
    expect((e as AppError).code).toBe('BAD_REQUEST');
    return (e as AppError).message;
  }
  throw new Error('expected a BAD_REQUEST');
}

describe('parseDbUrl', () => {
  it('accepts postgres:// and postgresql:// with a host, defaulting the port', () => {
    expect(parseDbUrl('postgres://app:pw@db.example.com:6543/shop')).toEqual({ host: 'db.example.com', hostKind: 'name', port: 6543, user: 'app', database: 'shop', password: 'pw', sslmode: undefined, applicationName: undefined });
    expect(parseDbUrl('postgresql://app@db/shop?sslmode=require')).toMatchObject({ host: 'db', port: 5432, user: 'app', database: 'shop', password: '', sslmode: 'require' });
    expect(parseDbUrl('postgres://u:p%40ss@[::1]:5432/x')).toMatchObject({ host: '::1', hostKind: 'ip', password: 'p@ss' });
  });

  it.each([
    ['mysql://root:hunter2secret@db/app', /scheme/],
    ['postgres:///app?user=root&password=hunter2secret', /host/],
    ['not a url hunter2secret', /whitespace/],
    ['hunter2secret', /not a valid URL/],
    ['postgres://u:hunter2secret@db/app?host=/tmp', /query parameter "host"/],
    ['postgres://u:hunter2secret@db/app?sslrootcert=/etc/passwd', /query parameter "sslrootcert"/],
    ['postgres://u:hunter2secret@db/app?password=x', /query parameter "password"/],
    ['postgres://u:hunter2secret@db/app?sslmode=bogus', /sslmode/],
    ['postgres://u:hunter2secret@db/a/b', /single database/],
  ])('rejects %s without echoing it', (url, why) => {
    const msg = badRequestMessage(() => parseDbUrl(url));
    expect(msg).toMatch(why);
    expect(msg).not.toContain('hunter2secret');
    expect(msg).not.toContain(url);
  });

  it('rejects non-strings, empty and oversized input', () => {
    expect(badRequestMessage(() => parseDbUrl(undefined))).toMatch(/required/);
    expect(badRequestMessage(() => parseDbUrl(42))).toMatch(/required/);
    expect(badRequestMessage(() => parseDbUrl(''))).toMatch(/required/);
    expect(badRequestMessage(() => parseDbUrl('postgres://h/' + 'x'.repeat(3000)))).toMatch(/longer than/);
  });
});

describe('maskDbUrl', () => {
  it('shows user, host, port and database with the password masked', () => {
    expect(maskDbUrl('postgres://app:s3cret@db.example.com:5433/shop')).toBe('postgres://app:****@db.example.com:5433/shop');
    expect(maskDbUrl('postgresql://app:s3cret@db/shop?sslmode=require&application_name=x')).toBe('postgresql://app:****@db:5432/shop?sslmode=require');
    expect(maskDbUrl('postgres://app@db/shop')).toBe('postgres://app@db:5432/shop');
    expect(maskDbUrl('postgres://db')).toBe('postgres://db:5432/');
  });

  it('never contains the password, whatever it is', () => {
    const password = fc.string({ minLength: 6, maxLength: 40 }).map((s) => `Zq9${s}`);
    fc.assert(
      fc.property(password, (pw) => {
        const url = `postgres://app:${encodeURIComponent(pw)}@db.example.com:5432/shop`;
        const parsed = parseDbUrl(url);
        expect(parsed.password).toBe(pw);
        const masked = maskDbUrl(url);
        expect(masked).toBe('postgres://app:****@db.example.com:5432/shop');
      }),
    );
  });
});

describe('describeConnectError', () => {
  const target = parseDbUrl('postgres://app:Sup3rSecret!@db.internal:6432/shop');
  const raw = 'postgres://app:Sup3rSecret!@db.internal:6432/shop';

  it('names network failures by host and port', () => {
    expect(describeConnectError(Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:6432'), { code: 'ECONNREFUSED' }), target)).toBe('connection refused at db.internal:6432');
    expect(describeConnectError(Object.assign(new Error('getaddrinfo ENOTFOUND db.internal'), { code: 'ENOTFOUND' }), target)).toBe('host not found: db.internal');
    expect(describeConnectError(new Error('Connection terminated due to connection timeout'), target)).toBe('connection timed out after 5s at db.internal:6432');
    expect(describeConnectError(new AggregateError([Object.assign(new Error('x'), { code: 'ECONNREFUSED' })]), target)).toBe('connection refused at db.internal:6432');
    expect(describeConnectError(undefined, target)).toBe('could not connect to db.internal:6432');
  });

  it("keeps PostgreSQL's own reason with its SQLSTATE", () => {
    const e = Object.assign(new Error('password authentication failed for user "app"'), { code: '28P01' });
    expect(describeConnectError(e, target)).toBe('password authentication failed for user "app" (SQLSTATE 28P01)');
  });

  it('scrubs the password (raw or encoded) and any URL from other messages', () => {
    const e = new Error(`weird failure for ${raw} with Sup3rSecret! and ${encodeURIComponent('Sup3rSecret!')}`);
    const out = describeConnectError(e, target, raw);
    expect(out).not.toContain('Sup3rSecret');
    expect(out).not.toContain('postgres://');
    expect(scrubSecrets('see https://x.example/a?b=c', { password: '' })).toBe('see <url>');
  });
});
