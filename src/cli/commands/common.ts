import type { Command } from 'commander';
import { HubClient } from '../client.js';
import { UsageError } from '../errors.js';
import { parseDuration } from '../../common/duration.js';
import { shellWord } from '../../common/shell-quote.js';

export { shellWord };

/** Global options (e.g. --hub) merged with the command's own. */
export function opts<T = Record<string, unknown>>(cmd: Command): T & { hub?: string; json?: boolean } {
  return cmd.optsWithGlobals() as T & { hub?: string; json?: boolean };
}

export function client(cmd: Command, anonymous = false): HubClient {
  return new HubClient({ hub: opts(cmd).hub, anonymous, flagFor: (field) => flagOf(cmd, field) });
}

/** API fields a command sends under another name than its flag's */
const SENT_AS: Record<string, string> = { rateLimitPerMin: 'rateLimit' };

/** The flag of `cmd` whose value the Hub received as `field` (commander's naming: `--expires-in` is `expiresIn`). */
export function flagOf(cmd: Command, field: string): string | undefined {
  const attr = Object.hasOwn(SENT_AS, field) ? SENT_AS[field] : field;
  return cmd.options.find((o) => o.long !== undefined && o.attributeName() === attr)?.long;
}

/**
 * The `stk` command line that runs `args` again against the same Hub (a `--hub` given on this
 * command line is repeated), quoted for a POSIX shell: one line to copy and paste.
 */
export function commandLine(cmd: Command, args: string[]): string {
  const hub = opts(cmd).hub;
  return ['stk', ...(hub ? ['--hub', hub] : []), ...args].map(shellWord).join(' ');
}

export function example(cmd: Command, ...lines: string[]): Command {
  return cmd.addHelpText('after', '\nExamples:\n' + lines.map((l) => `  $ ${l}`).join('\n'));
}

/**
 * One name from a positional argument or its flag (`stk apikey create server` = `--name server`), so
 * every command takes both spellings. Neither → usage error naming both; two different → usage error.
 */
export function oneOf(positional: string | undefined, flagValue: string | undefined, flag: string, what: string): string {
  if (positional !== undefined && flagValue !== undefined && positional !== flagValue) {
    throw new UsageError(`${what} given twice: ${JSON.stringify(positional)} and ${flag} ${JSON.stringify(flagValue)}`);
  }
  const v = positional ?? flagValue;
  if (v === undefined || v === '') throw new UsageError(`${what} is required: pass it as an argument or with ${flag}`);
  return v;
}

/** A duration flag (`--expires-in 90d`), checked before anything is sent: a bad value names the flag (exit 2). */
export function durationFlag(flag: string, v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  try {
    parseDuration(v);
  } catch {
    throw new UsageError(`invalid ${flag} ${JSON.stringify(v.slice(0, 40))}: use a duration like 30m, 12h or 90d`);
  }
  return v;
}

/** An ISO-8601 timestamp flag (`--expires-at 2027-01-31T00:00:00Z`). */
export function timestampFlag(flag: string, v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{4}-\d{2}-\d{2}/.test(v) || !Number.isFinite(Date.parse(v))) {
    throw new UsageError(`invalid ${flag} ${JSON.stringify(v.slice(0, 40))}: use an ISO-8601 time like 2027-01-31T00:00:00Z`);
  }
  return v;
}
