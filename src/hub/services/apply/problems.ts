import { parseDocument } from 'yaml';
import { badRequest } from '../../../protocol/errors.js';

/**
 * Collects every validation error of one apply so the operator sees them all at once.
 * `fail()` throws one 400 whose message lists the first few and whose details hold all of them.
 */
export class Problems {
  readonly list: string[] = [];
  static readonly MAX = 100;

  add(message: string): void {
    if (this.list.length < Problems.MAX) this.list.push(message);
  }

  get any(): boolean {
    return this.list.length > 0;
  }

  fail(what: string): never {
    const shown = this.list.slice(0, 5).join('; ');
    const more = this.list.length > 5 ? ` (and ${this.list.length - 5} more)` : '';
    throw badRequest(`${what}: ${shown}${more}`, { errors: this.list });
  }

  failIfAny(what: string): void {
    if (this.any) this.fail(what);
  }
}

/** A value as a short, printable quote for messages. */
export function show(v: unknown): string {
  let s: string;
  try {
    s = typeof v === 'string' ? JSON.stringify(v) : v === undefined ? 'nothing' : (JSON.stringify(v) ?? String(v));
  } catch {
    s = String(v);
  }
  return s.length > 80 ? s.slice(0, 77) + '…' : s;
}

export const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);

/** Own keys only: a YAML key such as `__proto__` or `constructor` never reaches a prototype. */
export const own = (o: Record<string, unknown>, k: string): unknown => (Object.hasOwn(o, k) ? o[k] : undefined);

export function unknownKeys(o: Record<string, unknown>, allowed: readonly string[]): string[] {
  return Object.keys(o).filter((k) => !allowed.includes(k));
}

/** Parses one YAML document; syntax errors (with line and column) go to `problems`. */
export function parseYaml(file: string, content: string, problems: Problems): { ok: true; value: unknown } | { ok: false } {
  let doc;
  try {
    doc = parseDocument(content, { uniqueKeys: true, prettyErrors: true, strict: true });
  } catch (e) {
    problems.add(`${file}: invalid YAML: ${(e as Error).message.split('\n')[0]}`);
    return { ok: false };
  }
  if (doc.errors.length) {
    for (const e of doc.errors.slice(0, 3)) problems.add(`${file}: invalid YAML: ${e.message.split('\n')[0]}`);
    return { ok: false };
  }
  try {
    return { ok: true, value: doc.toJS({ maxAliasCount: 100 }) };
  } catch (e) {
    problems.add(`${file}: invalid YAML: ${(e as Error).message.split('\n')[0]}`);
    return { ok: false };
  }
}
