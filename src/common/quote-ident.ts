/**
 * The one identifier-quoting function for all SQL text Santokit writes (the Hub's apply, the Bridge's
 * compiled releases). Only names from a validated schema reach it: caller-given names are looked up in
 * the compiled schema first and never quoted themselves. Every relation is qualified with its schema
 * (`"public"."users"`), so a database whose search_path puts another schema first (e.g. the default
 * `"$user", public` and a schema named after the connecting role) cannot redirect a statement.
 */

/** The schema santokit's tables live in: what apply creates and introspects, and what the Bridge reads. */
export const TABLE_SCHEMA = 'public';

/** `"name"` with embedded quotes doubled; NUL and the empty name are refused (PostgreSQL cannot store them). */
export function quoteIdent(name: string): string {
  if (typeof name !== 'string' || name.length === 0) throw new Error('invalid SQL identifier: must be a non-empty string');
  if (name.includes('\u0000')) throw new Error('invalid SQL identifier: must not contain NUL');
  return '"' + name.replace(/"/g, '""') + '"';
}

/** `"public"."<table>"` */
export const qualified = (table: string): string => `${quoteIdent(TABLE_SCHEMA)}.${quoteIdent(table)}`;
