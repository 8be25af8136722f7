/** How deep a request body's JSON may nest (objects and arrays), on Hub and Bridge. */
export const MAX_JSON_DEPTH = 64;

/**
 * Whether the JSON text `s` opens more than `max` nested objects/arrays, found before it is parsed (so
 * a deeply nested body is refused without being built). Malformed text is left to the parser: this
 * only answers "too deep".
 *
 * Nearly every body has at most `max` opening brackets in all, which bounds its depth: they are
 * counted with `indexOf` (~0.1 µs for a typical `/call` body, under 1 ms for 10 MB of text). Only a
 * body with more gets the full scan, which follows the nesting and skips strings.
 */
export function jsonTooDeep(s: string, max = MAX_JSON_DEPTH): boolean {
  // every level needs an opening and a closing bracket
  if (s.length <= 2 * max) return false;
  let count = 0;
  let a = s.indexOf('{');
  let b = s.indexOf('[');
  while (a >= 0 || b >= 0) {
    if (++count > max) return deeperThan(s, max);
    if (a >= 0 && (b < 0 || a < b)) a = s.indexOf('{', a + 1);
    else b = s.indexOf('[', b + 1);
  }
  return false;
}

/** The full scan: nesting depth, strings skipped with `indexOf`, stops at the first bracket past `max`. */
function deeperThan(s: string, max: number): boolean {
  const n = s.length;
  let depth = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22 /* " */) {
      // to the closing quote: one not preceded by an odd number of backslashes
      for (;;) {
        const j = s.indexOf('"', i + 1);
        if (j < 0) return false;
        let k = j - 1;
        while (s.charCodeAt(k) === 0x5c /* \ */) k--;
        i = j;
        if ((j - 1 - k) % 2 === 0) break;
      }
    } else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      if (++depth > max) return true;
    } else if (c === 0x5d /* ] */ || c === 0x7d /* } */) depth--;
  }
  return false;
}
