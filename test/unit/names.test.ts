import { describe, expect, it } from 'vitest';
import { NAME_RE, NAME_RULE, nameError } from '../../src/protocol/names.js';
import { envTag } from '../../src/protocol/key-format.js';

describe('names of projects, envs, connections and keys', () => {
  it.each(['shop', 'shop_1a2b3c4d', 'apikey_1a2b3c4d', 'prod-eu', 'a', '0', '9lives', 'a_b-c_d', 'x'.repeat(63)])('accepts %s', (n) => {
    expect(nameError('project', n)).toBeNull();
  });

  it.each([
    '',
    'Shop',
    'SHOP',
    '_shop',
    'shop_',
    '-shop',
    'shop-',
    'x'.repeat(64),
    '..',
    '.',
    'a/b',
    'a\\b',
    '%2e',
    'a.b',
    'a b',
    'a\u0000b',
    'shöp',
    'ﬁle',
    'a\nb',
  ])('refuses %j with the rule', (n) => {
    expect(nameError('env', n)).toBe(
      `invalid env name ${JSON.stringify(n)}: ${NAME_RULE}${NAME_RE.test(n.toLowerCase()) ? ` (names are lowercase: ${JSON.stringify(n.toLowerCase())})` : ''}`,
    );
  });

  it('an upper-case name is refused with its lowercase form; non-strings are refused without one', () => {
    expect(nameError('project', 'Shop_1A2B')).toContain('(names are lowercase: "shop_1a2b")');
    expect(nameError('project', 'SH OP')).not.toContain('names are lowercase');
    for (const v of [undefined, null, 42, ['shop'], { name: 'shop' }]) expect(nameError('project', v)).toContain(NAME_RULE);
  });

  it('the rule text says what the regex does', () => {
    expect(NAME_RULE).toBe("use 1-63 lowercase letters, digits, '_' or '-', starting and ending with a letter or digit");
  });

  it("an env name with '_' or '-' still gives a key env tag of [a-z0-9] only", () => {
    expect(envTag('dev_eu-1')).toBe('deveu1');
    expect(envTag('prod_1a2b3c4d')).toBe('prod1a2b3c4d');
    expect(envTag('___')).toBeUndefined();
  });
});
