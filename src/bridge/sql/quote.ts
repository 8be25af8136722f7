/**
 * The ONE identifier-quoting function of the Bridge. Every table and column name that reaches SQL
 * text goes through here, and only names taken from the release schema ever do: caller-given names
 * are looked up in the compiled schema first (unknown → 400) and never quoted themselves.
 */
export function quoteIdent(name: string): string {
  if (typeof name !== 'string' || name.length === 0) throw new Error('identifier must be a non-empty string');
  if (name.includes('\u0000')) throw new Error('identifier must not contain NUL');
  return '"' + name.replace(/"/g, '""') + '"';
}
