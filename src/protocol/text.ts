/**
 * Text that came from elsewhere (a remote database server, a client, another Hub) made safe to show:
 * terminal escape sequences removed whole (CSI, OSC, DCS/APC/PM/SOS strings and two-byte escapes, also
 * their 8-bit C1 forms), every other control character and the Unicode bidirectional overrides
 * dropped, carriage returns and (unless `multiline`) line breaks and tabs turned into a space, and the
 * length bounded. The Hub and the Bridge clean every error message they send (protocol/errors.ts
 * `envelope`), the CLI cleans every message it prints; both use this one function.
 */
export interface CleanTextOptions {
  /** keep `\n` and `\t` (default: false, the result is one line) */
  multiline?: boolean;
  /** at most this many characters (default 2000); longer text ends in `…` */
  max?: number;
}

// CSI (ESC [ or 8-bit CSI) with its parameters; OSC/DCS/SOS/PM/APC strings up to their terminator
// (BEL, ESC \ or ST) — an unterminated one ends at the next control character, so it cannot swallow
// the rest of the message; any other two-byte escape
const ESCAPES =
  // eslint-disable-next-line no-control-regex
  /(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?|(?:\x1b[\]P^_X]|[\x90\x98\x9d\x9e\x9f])[^\x00-\x1f\x7f-\x9f]*(?:\x07|\x1b\\|\x9c)?|\x1b[\x20-\x2f]*[\x30-\x7e]?/g;
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;

// anything cleanText would change (besides the length)
// eslint-disable-next-line no-control-regex
const SUSPECT = /[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/;

export function cleanText(text: unknown, opts: CleanTextOptions = {}): string {
  const max = opts.max ?? 2000;
  let s = typeof text === 'string' ? text : String(text ?? '');
  if (s.length <= max && !SUSPECT.test(s)) return s; // the common case: nothing to do
  // bound the work before the regexes run (a hostile server may send megabytes)
  if (s.length > max * 4 + 64) s = s.slice(0, max * 4 + 64);
  s = s.replace(ESCAPES, '').replace(/\r\n?/g, opts.multiline ? '\n' : ' ');
  if (!opts.multiline) s = s.replace(/[\n\t]/g, ' ');
  s = s.replace(CONTROLS, '');
  if (s.length > max) s = s.slice(0, Math.max(0, max - 1)) + '…';
  return s;
}
