/**
 * Reading a process's `STK_*` variables: each process (Hub, Bridge) declares one zod schema of every
 * variable it reads, with its default; `readEnv` checks them all at start and reports every bad one at
 * once, naming the variable, what it must be, and (unless it is a secret) what it got. An unset or
 * empty variable takes its default; a value that does not parse is an error, never NaN or a silent
 * default.
 */
import { z } from 'zod';
import { parseDuration } from './duration.js';
import { HostPolicy } from './net-policy.js';

type Parse<T> = (s: string) => T;
/** a value that does not fit: the message says what the variable must be */
class Unfit extends Error {}

const shown = (s: string) => JSON.stringify(s.length > 40 ? s.slice(0, 40) + '…' : s);

/**
 * A variable: unset or empty → `dflt`; else `parse(trimmed)`, which throws `Unfit` (what the variable
 * must be; the value is quoted after it unless secret) or another error (its message names the problem).
 */
function variable<T, D extends T | undefined>(dflt: D, parse: Parse<T>, o: { secret?: boolean; trim?: boolean } = {}) {
  return z
    .string()
    .optional()
    .transform((raw, ctx): T | D => {
      const v = o.trim === false ? raw : raw?.trim();
      if (v === undefined || v === '') return dflt;
      try {
        return parse(v);
      } catch (e) {
        const quote = e instanceof Unfit && !o.secret;
        ctx.addIssue({ code: 'custom', message: (e as Error).message + (quote ? ` (got ${shown(v)})` : '') });
        return z.NEVER;
      }
    });
}

function wholeNumber(s: string, min: number, max: number, rule: string): number {
  if (!/^\d+$/.test(s)) throw new Unfit(rule);
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new Unfit(rule);
  return n;
}

const TRUE = new Set(['1', 'true', 'yes', 'on']);
const FALSE = new Set(['0', 'false', 'no', 'off']);

/** Builders for the variables of a process's schema. */
export const env = {
  /** free text */
  text: <D extends string | undefined>(dflt: D, o: { secret?: boolean } = {}) => variable<string, D>(dflt, (s) => s, o),
  /** a secret: never quoted back in an error; `trim: false` keeps surrounding spaces (a password) */
  secret: <D extends string | undefined>(dflt: D, o: { check?: (s: string) => void; trim?: boolean } = {}) =>
    variable<string, D>(
      dflt,
      (s) => {
        o.check?.(s);
        return s;
      },
      { secret: true, trim: o.trim },
    ),
  /** `1/true/yes/on` or `0/false/no/off` */
  flag: (dflt = false) =>
    variable(dflt, (s) => {
      const v = s.toLowerCase();
      if (TRUE.has(v)) return true;
      if (FALSE.has(v)) return false;
      throw new Unfit('must be true or false (1/0, yes/no, on/off)');
    }),
  /** a TCP port, 0 (any free one) to 65535 */
  port: <D extends number | undefined>(dflt: D) => variable<number, D>(dflt, (s) => wholeNumber(s, 0, 65535, 'must be a port number from 0 to 65535')),
  /** a whole number in [min, max] */
  int: (dflt: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
    variable(dflt, (s) =>
      wholeNumber(s, min, max, max === Number.MAX_SAFE_INTEGER ? `must be a whole number ≥ ${min}` : `must be a whole number from ${min} to ${max}`),
    ),
  /** a duration (`30s`, `15m`, `12h`, `90d`, or seconds) → milliseconds, at least `minMs` */
  durationMs: (dflt: string, minMs = 0) =>
    variable(parseDuration(dflt) * 1000, (s) => {
      let ms: number;
      try {
        ms = parseDuration(s) * 1000;
      } catch {
        throw new Unfit('must be a duration such as 30s, 15m, 12h or 90d (a plain number is seconds)');
      }
      if (ms < minMs) throw new Unfit(`must be at least ${minMs / 1000}s`);
      return ms;
    }),
  /** comma-separated, empty items dropped */
  list: (dflt: string[], check?: (item: string) => void) =>
    variable(dflt, (s) => {
      const items = s
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean);
      for (const i of items) check?.(i);
      return items;
    }),
  /** one of `values` */
  choice: <T extends string>(dflt: T, values: readonly T[]) =>
    variable<T, T>(dflt, (s) => {
      if (!(values as readonly string[]).includes(s)) throw new Unfit(`must be one of ${values.join(', ')}`);
      return s as T;
    }),
  /** a value with its own parser, whose error message says what is wrong (it is not quoted back) */
  parsed: <T>(dflt: T, parse: (s: string) => T) => variable<T, T>(dflt, parse),
  /** STK_CONNECTION_ALLOW_HOSTS (src/common/net-policy.ts) */
  hostPolicy: () =>
    variable(HostPolicy.NONE, (s) => {
      try {
        return HostPolicy.parse(s);
      } catch (e) {
        throw new Error((e as Error).message.replace(/^STK_CONNECTION_ALLOW_HOSTS: /, ''));
      }
    }),
};

/**
 * Checks `source` against `schema`; every bad variable is reported in one error (`fail`'s), e.g.
 * `STK_HUB_PORT: must be a port number from 0 to 65535 (got "abc")`.
 */
export function readEnv<S extends z.ZodObject>(schema: S, source: NodeJS.ProcessEnv, fail: (message: string) => Error): z.output<S> {
  const r = schema.safeParse(source);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  throw fail(problems.length === 1 ? problems[0]! : `${problems.length} settings are wrong: ${problems.join('; ')}`);
}
