/**
 * Permission evaluation: pure functions over a compiled table, no I/O.
 *
 * First rule whose roles match wins: `public` matches any authenticated caller, `authenticated` only
 * end-user principals, any other role must be held by the principal. The winning rule's condition
 * becomes SQL filter terms ANDed with the caller's where; its `columns` allow-list shapes what the
 * caller may read and write. No matching rule → deny (403).
 */
import type { Op } from '../../protocol/release.js';
import type { Principal } from '../context.js';
import type { CompiledColumn, CompiledRule, CompiledTable } from '../release-cache/compile.js';
import type { Cond } from '../sql/build.js';
import { INVALID } from '../sql/values.js';

export type Decision = { ok: true; rule: CompiledRule } | { ok: false; reason: string };

function roleMatches(rule: CompiledRule, principal: Principal): boolean {
  if (rule.matchesAny) return true;
  if (rule.matchesEndUser && principal.kind === 'enduser') return true;
  const held = principal.roles;
  for (let i = 0; i < rule.roles.length; i++) if (held.includes(rule.roles[i]!)) return true;
  return false;
}

/** The rule that governs `op` on `table` for this principal. Dev principals (auth disabled) get the unrestricted rule. */
export function authorize(principal: Principal, table: CompiledTable, op: Op): Decision {
  if (principal.kind === 'dev') return { ok: true, rule: table.devRule };
  const rules = table.rules[op];
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i]!;
    if (roleMatches(rule, principal)) return { ok: true, rule };
  }
  return {
    ok: false,
    reason:
      rules.length === 0
        ? `no permission rule allows ${op} on table '${table.name}'`
        : `no permission rule of table '${table.name}' allows ${op} for this credential's roles`,
  };
}

/** The value a rule term requires for this principal: parameter text, or null when nothing can match. */
export function termValue(term: CompiledRule['terms'][number], principal: Principal): string | null {
  if (term.kind === 'literal') return term.value;
  let v = term.col.conv(principal.sub);
  // a numeric subject (e.g. an end-user id) compared with a numeric column
  if (v === INVALID && /^-?\d{1,15}$/.test(principal.sub)) v = term.col.conv(Number(principal.sub));
  return v === INVALID ? null : v;
}

/** Appends the rule's row filter (its compiled condition) to `out`. */
export function appendRuleFilter(rule: CompiledRule, principal: Principal, out: Cond[]): void {
  for (let i = 0; i < rule.terms.length; i++) {
    const term = rule.terms[i]!;
    const value = termValue(term, principal);
    out.push(value === null ? { k: 'false' } : { k: 'cmp', col: term.col, op: '=', value });
  }
}

/** Is this column readable under the rule? */
export function canRead(rule: CompiledRule, col: CompiledColumn): boolean {
  return rule.allowed === null || rule.allowed.has(col.name);
}

/**
 * May the caller write this column under the rule? The primary key of a `client`-generated table is
 * always writable on insert (a row cannot exist without it); the caller supplies nothing else outside
 * the allow-list.
 */
export function canWrite(rule: CompiledRule, col: CompiledColumn): boolean {
  return rule.allowed === null || rule.allowed.has(col.name) || col.isPk;
}
