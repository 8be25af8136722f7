/**
 * Output helpers: human tables on a TTY, tab-separated when piped, JSON with --json.
 * Text that may come from a server (names, messages, table cells) goes through `terminalSafe`, so
 * a Hub or a database behind it cannot send escape sequences to the operator's terminal.
 */
import { cleanText } from '../protocol/text.js';

/** Server-provided text made safe to print: no escape sequences or control characters (see protocol/text.ts). */
export const terminalSafe = (s: unknown, multiline = true) => cleanText(s, { multiline, max: 100_000 });
/** Human output (tables, relative times): stdout is a terminal, or STK_FORCE_TTY=1 (tests, `watch`). */
export const isTTY = () => Boolean(process.stdout.isTTY) || process.env.STK_FORCE_TTY === '1';
/** Color on `stream` (stdout unless said): only a terminal, and never with NO_COLOR or TERM=dumb; stdout and stderr are checked apart. */
export const useColor = (stream: NodeJS.WriteStream = process.stdout) => Boolean(stream.isTTY) && !process.env.NO_COLOR && process.env.TERM !== 'dumb';

const paint =
  (code: string) =>
  (s: string, stream: NodeJS.WriteStream = process.stdout) =>
    useColor(stream) ? `\x1b[${code}m${s}\x1b[0m` : s;
export const green = paint('32');
export const yellow = paint('33');
export const red = paint('31');
export const bold = paint('1');
export const dim = paint('2');

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export interface Column<T> {
  header: string;
  get: (row: T) => string | number | null | undefined;
}

/** A table on a TTY (header, aligned); tab-separated without header when piped. */
export function printTable<T>(rows: T[], columns: Column<T>[], opts: { empty?: string } = {}): void {
  if (rows.length === 0) {
    if (opts.empty) process.stderr.write(opts.empty + '\n');
    return;
  }
  // one line per row, cells without tabs or newlines (they would break the columns and the TSV)
  const cells = rows.map((r) => columns.map((c) => terminalSafe(c.get(r) ?? '', false)));
  if (!isTTY()) {
    for (const line of cells) process.stdout.write(line.join('\t') + '\n');
    return;
  }
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((l) => l[i]!.length)));
  const fmt = (l: string[]) =>
    l
      .map((v, i) => (i === l.length - 1 ? v : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  process.stdout.write(bold(fmt(columns.map((c) => c.header))) + '\n');
  for (const l of cells) process.stdout.write(fmt(l) + '\n');
}

/** A confirmation (`✓ …`): on stderr, so stdout carries only the result (../style: clig.dev, Vercel). */
export function success(msg: string): void {
  process.stderr.write(`${green('✓', process.stderr)} ${terminalSafe(msg)}\n`);
}

export function warn(msg: string): void {
  process.stderr.write(`${yellow('!', process.stderr)} ${terminalSafe(msg)}\n`);
}

/** "3 minutes ago" on a TTY, ISO otherwise. */
export function when(iso: string | null | undefined): string {
  if (!iso) return isTTY() ? 'never' : '';
  if (!isTTY()) return iso;
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  const fut = s < 0;
  const a = Math.abs(s);
  const [n, u] =
    a < 60 ? [a, 'second'] : a < 3600 ? [Math.floor(a / 60), 'minute'] : a < 86400 ? [Math.floor(a / 3600), 'hour'] : [Math.floor(a / 86400), 'day'];
  const t = `${n} ${u}${n === 1 ? '' : 's'}`;
  return fut ? `in ${t}` : `${t} ago`;
}
