import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { AppError } from '../../src/protocol/errors.js';
import { describeConnectError, maskDbUrl, parseDbUrl, scrubSecrets } from '../../src/hub/services/connections.js';
import { HostPolicy, parseIp, refusedReason } from '../../src/common/net-policy.js';
import { ConfigError, loadHubConfig } from '../../src/hub/config.js';
import { cleanText } from '../../src/protocol/text.js';

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
    expect(parseDbUrl('postgres://app:pw@db.example.com:6543/shop')).toEqual({
      host: 'db.example.com',
      hostKind: 'name',
      port: 6543,
      user: 'app',
      database: 'shop',
      password: 'pw',
      sslmode: undefined,
      applicationName: undefined,
    });
    expect(parseDbUrl('postgresql://app@db/shop?sslmode=require')).toMatchObject({
      host: 'db',
      port: 5432,
      user: 'app',
      database: 'shop',
      password: '',
      sslmode: 'require',
    });
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
    expect(describeConnectError(Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:6432'), { code: 'ECONNREFUSED' }), target)).toBe(
      'connection refused at db.internal:6432',
    );
    expect(describeConnectError(Object.assign(new Error('getaddrinfo ENOTFOUND db.internal'), { code: 'ENOTFOUND' }), target)).toBe(
      'host not found: db.internal',
    );
    expect(describeConnectError(new Error('Connection terminated due to connection timeout'), target)).toBe(
      'connection timed out after 5s at db.internal:6432',
    );
    expect(describeConnectError(new AggregateError([Object.assign(new Error('x'), { code: 'ECONNREFUSED' })]), target)).toBe(
      'connection refused at db.internal:6432',
    );
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

describe('STK_CONNECTION_ALLOW_HOSTS and cleanText', () => {
  it('parses hosts, addresses, CIDRs and ports; refuses anything else naming the entry', () => {
    const p = HostPolicy.parse(' 127.0.0.1:55432 , db.local, 10.0.0.0/8, [::1]:5432, fd00::/8, ::1 ');
    const ip = (s: string) => parseIp(s)!;
    expect(p.allowsAddress(ip('127.0.0.1'), 55432)).toBe(true);
    expect(p.allowsAddress(ip('127.0.0.1'), 5432)).toBe(false);
    expect(p.allowsAddress(ip('::ffff:127.0.0.1'), 55432)).toBe(true);
    expect(p.allowsAddress(ip('10.200.0.1'), 1)).toBe(true);
    expect(p.allowsAddress(ip('11.0.0.1'), 1)).toBe(false);
    expect(p.allowsAddress(ip('fd12::1'), 1)).toBe(true);
    expect(p.allowsName('DB.LOCAL.', 1)).toBe(true);
    expect(p.allowsName('other.local', 1)).toBe(false);
    for (const bad of ['/tmp', '%2Ftmp', '10.0.0.0/33', '127.1', 'host:0', 'host:99999', '[::1', 'a b', '0x7f000001', 'fe80::1%eth0']) {
      expect(() => HostPolicy.parse(bad), bad).toThrow(/STK_CONNECTION_ALLOW_HOSTS/);
    }
    expect(() =>
      loadHubConfig({ STK_SECRET_KEY: 'a'.repeat(64), STK_SERVICE_TOKEN: 'x'.repeat(20), STK_CONNECTION_ALLOW_HOSTS: '/var/run/postgresql' }),
    ).toThrow(ConfigError);
    expect(HostPolicy.parse('').empty).toBe(true);
  });

  it('refused address ranges, whatever the spelling', () => {
    for (const a of [
      '127.0.0.1',
      '0.0.0.0',
      '169.254.169.254',
      '::1',
      '::',
      '::ffff:127.0.0.1',
      '::ffff:a9fe:a9fe',
      '64:ff9b::7f00:1',
      '2002:a9fe:a9fe::',
      'fe80::1',
      'fd00:ec2::254',
      '224.0.0.1',
    ]) {
      expect(refusedReason(parseIp(a)!), a).not.toBeNull();
    }
    for (const a of ['10.0.0.1', '192.168.1.1', '172.16.0.1', '8.8.8.8', '2001:db8::1', 'fd12::1', '::ffff:10.0.0.1'])
      expect(refusedReason(parseIp(a)!), a).toBeNull();
    for (const a of ['127.1', '0177.0.0.1', '2130706433', '0x7f.0.0.1', 'fe80::1%eth0']) expect(parseIp(a), a).toBeNull();
  });

  it('cleanText removes escape sequences whole, control characters and bidi overrides, and bounds the length', () => {
    expect(cleanText('a\u001b[31mred\u001b[0m\u001b]0;title\u0007\u001b]8;;http://x\u001b\\link\u001b]8;;\u001b\\ \u009b2J\u202eb\u0000c')).toBe('aredlink bc');
    expect(cleanText('one\r\ntwo\tthree')).toBe('one two three');
    expect(cleanText('one\r\ntwo\rthree', { multiline: true })).toBe('one\ntwo\nthree');
    // an unterminated string command cannot swallow what follows the next control character
    expect(cleanText('x\u001b]0;never ends\r(SQLSTATE 28000)')).toBe('x (SQLSTATE 28000)');
    expect(cleanText('é ✓ plain')).toBe('é ✓ plain');
    expect(cleanText('x'.repeat(50), { max: 10 })).toBe('x'.repeat(9) + '…');
  });
});
