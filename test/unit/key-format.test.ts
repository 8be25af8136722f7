import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  API_KEY_RE,
  API_KEY_SCAN_RE,
  BASE62,
  CHECKSUM_LENGTH,
  KEY_ID_RE,
  checksumOf,
  crc32,
  envTag,
  formatKey,
  generateKey,
  parseKey,
  randomString,
} from '../../src/protocol/key-format.js';

describe('API key format', () => {
  it('crc32 matches the standard IEEE check value', () => {
    expect(crc32('123456789')).toBe(0xcbf43926);
    expect(crc32('')).toBe(0);
  });

  it('generates stk_<tag>_<id>_<secret><crc> made only of word characters', () => {
    const { key, keyId, secret, tag } = generateKey('prod');
    expect(tag).toBe('prod');
    expect(key).toMatch(/^stk_prod_[0-9A-HJKMNP-TV-Z]{12}_[A-Za-z0-9]{28}$/);
    expect(key).toMatch(/^\w+$/); // double-click selects the whole key
    expect(key).toMatch(/^\S+$/);
    expect(API_KEY_RE.test(key)).toBe(true);
    expect(KEY_ID_RE.test(keyId)).toBe(true);
    expect(secret).toHaveLength(22);
    expect(parseKey(key)).toEqual({ keyId, secret, tag: 'prod' });
  });

  it('the env tag is optional and derived from the env name', () => {
    expect(envTag('prod')).toBe('prod');
    expect(envTag('eu-west-1')).toBe('euwest1');
    expect(envTag('---')).toBeUndefined();
    expect(envTag('a'.repeat(40))).toBe('a'.repeat(16));
    const { key, keyId, secret } = generateKey(undefined);
    expect(key.startsWith('stk_' + keyId + '_')).toBe(true);
    expect(parseKey(key)).toEqual({ keyId, secret });
  });

  it('the secret carries at least 128 random bits and is uniform over base62', () => {
    expect(22 * Math.log2(62)).toBeGreaterThan(128);
    const counts = new Map<string, number>();
    const s = randomString(BASE62, 62_000);
    for (const ch of s) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    expect(counts.size).toBe(62);
    for (const n of counts.values()) expect(n).toBeGreaterThan(700); // ~1000 each; bias would show
    const ids = new Set(Array.from({ length: 2000 }, () => generateKey('dev').keyId));
    expect(ids.size).toBe(2000);
  });

  it('the checksum is fixed-width base62', () => {
    fc.assert(
      fc.property(fc.string(), (s) => {
        const c = checksumOf(s);
        return c.length === CHECKSUM_LENGTH && /^[A-Za-z0-9]+$/.test(c);
      }),
    );
  });

  it('rejects every single-character substitution by checksum (or format)', () => {
    const { key } = generateKey('dev');
    const alphabet = BASE62 + '_';
    for (let i = 0; i < key.length; i++) {
      for (const ch of alphabet) {
        if (ch === key[i]) continue;
        const typo = key.slice(0, i) + ch + key.slice(i + 1);
        expect(typeof parseKey(typo), typo).toBe('string');
      }
    }
  });

  it('a truncated or extended key is a checksum mismatch (docs/api-keys.md); whitespace, wrong prefix and non-strings are format errors', () => {
    const { key } = generateKey('dev');
    // what a bad copy-paste leaves: the Bridge answers "checksum mismatch (mistyped or truncated?)"
    for (let cut = 1; cut < key.length - 4; cut += 7) expect(parseKey(key.slice(0, -cut)), `cut ${cut}`).toBe('checksum');
    expect(parseKey(key + 'A')).toBe('checksum');
    expect(parseKey(key + '_x')).toBe('checksum');
    expect(parseKey(' ' + key)).toBe('format');
    expect(parseKey(key + '\n')).toBe('format');
    expect(parseKey(key.replace('stk_', 'sk_'))).toBe('format');
    expect(parseKey(key.toUpperCase())).toBe('format');
    expect(parseKey('')).toBe('format');
    expect(parseKey(undefined)).toBe('format');
    expect(parseKey(42)).toBe('format');
    expect(parseKey('stk_' + 'x'.repeat(10_000))).toBe('format');
  });

  it('a well-formed key with a wrong checksum is a checksum failure', () => {
    const { key } = generateKey('dev');
    const last = key.at(-1)!;
    const wrong = key.slice(0, -1) + (last === 'A' ? 'B' : 'A');
    expect(parseKey(wrong)).toBe('checksum');
  });

  it('property: every generated key parses back to its parts', () => {
    fc.assert(
      fc.property(fc.option(fc.stringMatching(/^[a-z0-9-]{1,30}$/), { nil: undefined }), (env) => {
        const g = generateKey(env);
        const p = parseKey(g.key);
        return typeof p === 'object' && p.keyId === g.keyId && p.secret === g.secret && p.tag === g.tag;
      }),
      { numRuns: 500 },
    );
  });

  it('the scanner regex finds keys embedded in text, and nothing else', () => {
    const a = generateKey('prod').key;
    const b = generateKey(undefined).key;
    const text = `export STK_KEY=${a}\nconst k = "${b}"; // and stk_not_a_key_at_all`;
    expect([...text.matchAll(API_KEY_SCAN_RE)].map((m) => m[0])).toEqual([a, b]);
  });

  it('formatKey validates its parts', () => {
    expect(() => formatKey('bad', 'x'.repeat(22))).toThrow();
    expect(() => formatKey('0123456789AB', 'short')).toThrow();
    expect(() => formatKey('0123456789AB', 'a'.repeat(22), 'UPPER')).toThrow();
    const k = formatKey('0123456789AB', 'a'.repeat(22), 'dev');
    expect(parseKey(k)).toEqual({ keyId: '0123456789AB', secret: 'a'.repeat(22), tag: 'dev' });
  });
});
