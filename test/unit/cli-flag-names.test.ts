import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { withFlagNames } from '../../src/cli/client.js';
import { flagOf } from '../../src/cli/commands/common.js';

/** `stk apikey update`'s flags, as commander sees them */
const update = new Command('update')
  .option('--key-id <id>')
  .option('--expires-in <duration>')
  .option('--expires-at <time>')
  .option('--no-expiry')
  .option('--rate-limit <n>');
const flagFor = (field: string) => flagOf(update, field);
const fields = (...names: string[]) => ({ fields: names.map((field) => ({ in: 'body', field, message: 'm' })) });

describe('CLI: a refused API field is named by the flag the user typed', () => {
  it('maps API fields to the command’s flags (commander naming, and fields sent under another name)', () => {
    expect(flagOf(update, 'expiresIn')).toBe('--expires-in');
    expect(flagOf(update, 'expiresAt')).toBe('--expires-at');
    expect(flagOf(update, 'rateLimitPerMin')).toBe('--rate-limit');
    expect(flagOf(update, 'expiry')).toBe('--no-expiry');
    expect(flagOf(update, 'grace')).toBeUndefined();
    expect(flagOf(update, 'toString')).toBeUndefined();
  });

  it('rewrites the service’s wording and the schema check’s `body.field:` form', () => {
    expect(withFlagNames('expiresIn must be between 1s and 3650d', fields('expiresIn'), flagFor)).toBe('--expires-in must be between 1s and 3650d');
    expect(withFlagNames('pass expiresIn or expiresAt, not both', fields('expiresIn', 'expiresAt'), flagFor)).toBe(
      'pass --expires-in or --expires-at, not both',
    );
    expect(withFlagNames('body.rateLimitPerMin: expected number', fields('rateLimitPerMin'), flagFor)).toBe('--rate-limit: expected number');
  });

  it('leaves alone what is not a refused field with a flag: other words, longer names, fields without a flag, no details', () => {
    expect(withFlagNames('expiresInSeconds and xexpiresIn stay; expiresIn goes', fields('expiresIn'), flagFor)).toBe(
      'expiresInSeconds and xexpiresIn stay; --expires-in goes',
    );
    expect(withFlagNames('grace must be between 0 and 7d', fields('grace'), flagFor)).toBe('grace must be between 0 and 7d');
    expect(withFlagNames('expiresIn must be a duration', undefined, flagFor)).toBe('expiresIn must be a duration');
    expect(withFlagNames('expiresIn must be a duration', { fields: 'expiresIn' }, flagFor)).toBe('expiresIn must be a duration');
    // a field name is text from the Hub: regular-expression characters in it are literal
    expect(withFlagNames('a.b and axb', fields('a.b'), (f) => (f === 'a.b' ? '--ab' : undefined))).toBe('--ab and axb');
  });
});
