import { parse as parseCel, type ASTNode } from '@marcbachmann/cel-js';
import { IDENT_RE } from '../../../protocol/names.js';
import { OPS, type ConditionTerm, type Op, type PermissionRule, type PermissionsIR, type SchemaIR, type TableIR } from '../../../protocol/release.js';
import { Problems, isPlainObject, own, parseYaml, show, unknownKeys } from './problems.js';

/**
 * `config/permissions.yaml` → PermissionsIR, validated against the schema. CEL conditions are parsed
 * with a real CEL parser and compiled to equality terms; only this subset is accepted:
 *
 *   resource.<col> == request.auth.sub
 *   resource.<col> == "literal" | 123 | 1.5 | true      (either side order)
 *   <term> && <term> && …
 *
 * Everything else (`!=`, `||`, `in`, functions, unknown columns, type mismatches) is rejected here,
 * at apply time, naming the table, op and rule.
 */
export const PERMISSIONS_FILE = 'config/permissions.yaml';
const RULE_KEYS = ['roles', 'condition', 'columns'] as const;
const MAX_CONDITION_LENGTH = 2000;
const MAX_TERMS = 20;

export function parsePermissions(content: string | null, schema: SchemaIR, file = PERMISSIONS_FILE): PermissionsIR {
  const out = new Map<string, Partial<Record<Op, PermissionRule[]>>>();
  if (content === null || content.trim() === '') return { tables: {} };
  const problems: Problems = new Problems();
  const parsed = parseYaml(file, content, problems);
  if (!parsed.ok) problems.fail('invalid permissions');
  const doc = parsed.value;
  if (doc === null || doc === undefined) return { tables: {} };
  if (!isPlainObject(doc)) {
    problems.add(`${file}: expected a mapping with "tables:"`);
    problems.fail('invalid permissions');
  }
  for (const k of unknownKeys(doc, ['version', 'tables'])) problems.add(`${file}: unknown top-level key ${show(k)} (allowed: version, tables)`);
  const version = own(doc, 'version');
  if (version !== undefined && version !== 1) problems.add(`${file}: unsupported version ${show(version)} (only version: 1)`);
  const tables = own(doc, 'tables');
  if (tables !== undefined && tables !== null && !isPlainObject(tables)) problems.add(`${file}: "tables" must be a mapping of table name to operations`);
  else if (tables) {
    for (const [tname, ops] of Object.entries(tables)) {
      const table = Object.hasOwn(schema.tables, tname) ? schema.tables[tname] : undefined;
      if (!table) {
        problems.add(`${file}: tables.${tname}: unknown table ${show(tname)} (not in the schema)`);
        continue;
      }
      if (!isPlainObject(ops)) {
        problems.add(`${file}: tables.${tname}: expected a mapping of operation (${OPS.join(', ')}) to rules`);
        continue;
      }
      const compiled: Partial<Record<Op, PermissionRule[]>> = {};
      for (const [op, rules] of Object.entries(ops)) {
        if (!(OPS as readonly string[]).includes(op)) {
          problems.add(`${file}: tables.${tname}.${op}: unknown operation ${show(op)} (use ${OPS.join(', ')})`);
          continue;
        }
        const list = rules === null || rules === undefined ? [] : Array.isArray(rules) ? rules : [rules];
        const res: PermissionRule[] = [];
        list.forEach((raw, i) => {
          const r = parseRule(raw, table, `${file}: tables.${tname}.${op} rule #${i + 1}`, problems);
          if (r) res.push(r);
        });
        compiled[op as Op] = res;
      }
      out.set(tname, compiled);
    }
  }
  problems.failIfAny('invalid permissions');
  return { tables: Object.fromEntries(out) };
}

function parseRule(raw: unknown, table: TableIR, w: string, problems: Problems): PermissionRule | undefined {
  if (!isPlainObject(raw)) {
    problems.add(`${w}: expected {roles: [...], condition?, columns?}`);
    return undefined;
  }
  for (const k of unknownKeys(raw, RULE_KEYS)) problems.add(`${w}: unknown key ${show(k)} (allowed: ${RULE_KEYS.join(', ')})`);
  let ok = true;
  const roles = own(raw, 'roles');
  if (!Array.isArray(roles) || roles.length === 0) {
    problems.add(`${w}: "roles" is required: a non-empty list such as [admin] or [authenticated]`);
    ok = false;
  } else {
    for (const r of roles) {
      if (typeof r !== 'string' || !IDENT_RE.test(r)) {
        problems.add(`${w}: invalid role ${show(r)}: use letters, digits and '_'`);
        ok = false;
      }
    }
  }
  const columnNames = [table.primaryKey.name, ...table.columns.map((c) => c.name)];
  let columns: string[] | null = null;
  const rawCols = own(raw, 'columns');
  if (rawCols !== undefined && rawCols !== null) {
    if (!Array.isArray(rawCols) || !rawCols.every((c) => typeof c === 'string')) {
      problems.add(`${w}: "columns" must be a list of column names or ["*"]`);
      ok = false;
    } else if (rawCols.includes('*')) {
      if (rawCols.length > 1) {
        problems.add(`${w}: "columns": "*" cannot be combined with other names`);
        ok = false;
      }
    } else {
      for (const c of rawCols as string[]) {
        if (!columnNames.includes(c)) {
          problems.add(`${w}: unknown column ${show(c)} in "columns" (table ${table.name} has ${columnNames.join(', ')})`);
          ok = false;
        }
      }
      columns = [...new Set(rawCols as string[])];
    }
  }
  let condition: PermissionRule['condition'];
  const rawCond = own(raw, 'condition');
  if (rawCond !== undefined && rawCond !== null) {
    if (typeof rawCond !== 'string' || rawCond.trim() === '') {
      problems.add(`${w}: "condition" must be a CEL string such as "resource.owner_id == request.auth.sub"`);
      ok = false;
    } else {
      const c = compileCondition(rawCond, table);
      if ('error' in c) {
        problems.add(`${w}: condition ${show(rawCond)}: ${c.error}`);
        ok = false;
      } else condition = { source: rawCond, terms: c.terms };
    }
  }
  if (!ok) return undefined;
  const rule: PermissionRule = { roles: [...new Set(roles as string[])], columns };
  if (condition) rule.condition = condition;
  return rule;
}

const SUBSET = 'supported: resource.<column> == request.auth.sub, resource.<column> == "<literal>", joined with &&';

/** Compiles one CEL condition to equality terms, or explains why it is outside the supported subset. */
export function compileCondition(source: string, table: TableIR): { terms: ConditionTerm[] } | { error: string } {
  if (source.length > MAX_CONDITION_LENGTH) return { error: `longer than ${MAX_CONDITION_LENGTH} characters` };
  let ast: ASTNode;
  try {
    ast = parseCel(source).ast;
  } catch (e) {
    return { error: `CEL syntax error: ${(e as Error).message.split('\n')[0]}` };
  }
  const conj: ASTNode[] = [];
  const flatten = (n: ASTNode) => {
    if (n.op === '&&') {
      flatten(n.args[0]);
      flatten(n.args[1]);
    } else conj.push(n);
  };
  flatten(ast);
  if (conj.length > MAX_TERMS) return { error: `at most ${MAX_TERMS} terms` };
  const terms: ConditionTerm[] = [];
  for (const n of conj) {
    if (n.op !== '==') return { error: `${describe(n)} is not supported (${SUBSET})` };
    const [a, b] = n.args;
    const ca = resourceColumn(a);
    const cb = resourceColumn(b);
    if (ca !== undefined && cb !== undefined) return { error: `comparing two resource columns is not supported (${SUBSET})` };
    const col = ca ?? cb;
    const other = ca !== undefined ? b : a;
    if (col === undefined) return { error: `each comparison needs resource.<column> on one side (${SUBSET})` };
    const type = columnType(table, col);
    if (!type) return { error: `unknown column resource.${col} (table ${table.name})` };
    if (isAuthSub(other)) {
      if (type !== 'string') return { error: `resource.${col} is ${type}; request.auth.sub is a string and can only be compared with string columns` };
      terms.push({ column: col, equals: { kind: 'authSub' } });
      continue;
    }
    const lit = literal(other);
    if ('error' in lit) return { error: lit.error };
    const mismatch = literalMismatch(type, lit.value);
    if (mismatch) return { error: `resource.${col} is ${type}: ${mismatch}` };
    terms.push({ column: col, equals: { kind: 'literal', value: lit.value } });
  }
  return { terms };
}

function resourceColumn(n: ASTNode): string | undefined {
  if (n.op !== '.') return undefined;
  const [obj, field] = n.args;
  return obj.op === 'id' && obj.args === 'resource' ? field : undefined;
}

function isAuthSub(n: ASTNode): boolean {
  if (n.op !== '.' || n.args[1] !== 'sub') return false;
  const auth = n.args[0];
  if (auth.op !== '.' || auth.args[1] !== 'auth') return false;
  const req = auth.args[0];
  return req.op === 'id' && req.args === 'request';
}

function literal(n: ASTNode): { value: string | number | boolean } | { error: string } {
  let neg = false;
  if (n.op === '-_') {
    neg = true;
    n = n.args;
  }
  if (n.op !== 'value') return { error: `${describe(n)} is not supported on the right of == (${SUBSET})` };
  const v = n.args;
  if (typeof v === 'string' && !neg) return { value: v };
  if (typeof v === 'boolean' && !neg) return { value: v };
  if (typeof v === 'bigint') {
    const x = neg ? -v : v;
    if (x > BigInt(Number.MAX_SAFE_INTEGER) || x < BigInt(Number.MIN_SAFE_INTEGER)) return { error: 'integer literal beyond ±2^53 is not supported' };
    return { value: Number(x) };
  }
  if (typeof v === 'number' && Number.isFinite(v)) return { value: neg ? -v : v };
  if (v === null) return { error: 'comparing with null is not supported (use nullable columns in the schema instead)' };
  return { error: `this literal type is not supported (${SUBSET})` };
}

type CondType = 'string' | 'integer' | 'number' | 'boolean' | 'timestamp' | 'unsupported';

function columnType(table: TableIR, col: string): string | undefined {
  if (col === table.primaryKey.name) return table.primaryKey.type === 'bigint' ? 'bigint' : 'string';
  return table.columns.find((c) => c.name === col)?.type;
}

function condType(t: string): CondType {
  switch (t) {
    case 'string':
      return 'string';
    case 'int':
    case 'bigint':
      return 'integer';
    case 'float':
    case 'decimal':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'timestamp':
      return 'timestamp';
    default:
      return 'unsupported';
  }
}

function literalMismatch(type: string, v: string | number | boolean): string | null {
  switch (condType(type)) {
    case 'string':
      return typeof v === 'string' ? null : 'compare it with a string literal';
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v) ? null : 'compare it with a whole number';
    case 'number':
      return typeof v === 'number' ? null : 'compare it with a number';
    case 'boolean':
      return typeof v === 'boolean' ? null : 'compare it with true or false';
    case 'timestamp':
      return typeof v === 'string' && !Number.isNaN(Date.parse(v)) ? null : 'compare it with an ISO-8601 date-time string';
    default:
      return 'conditions on json, array and bytes columns are not supported';
  }
}

function describe(n: ASTNode): string {
  switch (n.op) {
    case '||':
      return '"||"';
    case '!=':
    case '<':
    case '<=':
    case '>':
    case '>=':
    case 'in':
    case '+':
    case '-':
    case '*':
    case '/':
    case '%':
      return `operator "${n.op}"`;
    case '!_':
      return 'negation "!"';
    case 'call':
    case 'rcall':
      return `function ${n.args[0]}()`;
    case '?:':
      return 'the conditional operator';
    case 'value':
      return 'a bare literal';
    default:
      return `expression "${n.input.slice(n.start, n.end).slice(0, 60)}"`;
  }
}
