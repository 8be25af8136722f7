/**
 * A release → the TypeScript `Database` that `santokit/client` checks calls against (`stk gen types`).
 *
 * The release is compiled and each role's permissions evaluated by the Bridge's own code
 * (release-cache/compile.ts, permissions/), so what the types allow is what the Bridge decides:
 * relations are the ones `expand` resolves, a role's grant on a table is the first rule that matches
 * a key holding only that role, with that rule's readable and writable columns.
 */
import { authorize, canRead, canWrite } from '../bridge/permissions/index.js';
import { compileRelease, type CompiledColumn, type CompiledTable } from '../bridge/release-cache/compile.js';
import { OPS, referencedRoles, type ReleaseIR, type TypeSpec } from '../protocol/release.js';
import type { Principal } from '../bridge/context.js';

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
/** a property name as TypeScript source (names are identifiers already; anything else is quoted) */
const prop = (name: string) => (IDENT.test(name) ? name : JSON.stringify(name));
const lit = (s: string) => (/^[\w$-]*$/.test(s) ? `'${s}'` : JSON.stringify(s));
const union = (names: readonly string[]) => (names.length ? names.map(lit).join(' | ') : 'never');

/** A column's values in TypeScript: as the Bridge answers them (`row`), or the non-null values it accepts (`input`). */
function valueType(spec: TypeSpec, uses: Set<string>, as: 'row' | 'input'): string {
  switch (spec.type) {
    case 'string':
    case 'bytes':
      return 'string';
    case 'bigint':
    case 'decimal':
      return as === 'row' ? 'string' : 'string | number';
    case 'timestamp':
      return as === 'row' ? 'string' : 'string | Date';
    case 'int':
    case 'float':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'json':
      uses.add('Json');
      return 'Json';
    case 'array': {
      if (!spec.items) {
        uses.add('Json');
        return 'Json[]';
      }
      const item = valueType(spec.items, uses, as);
      return as === 'row' ? `Array<${item}>` : `ReadonlyArray<${item}>`;
    }
  }
}

function tableTypes(t: CompiledTable, uses: Set<string>, ind: string): string {
  const cols = t.columns;
  const row = cols.map((c) => `${prop(c.name)}: ${valueType(c.spec, uses, 'row')}${c.nullable ? ' | null' : ''}`);
  const input = cols.map((c) => `${prop(c.name)}: ${valueType(c.spec, uses, 'input')}`);
  // the primary key is sent only for `generate: client`; required = NOT NULL without a default
  const insert = cols
    .filter((c) => !c.isPk || t.generate === 'client')
    .map((c) => `${prop(c.name)}${c.isPk || (!c.nullable && !c.hasDefault) ? '' : '?'}: ${valueType(c.spec, uses, 'input')}${c.nullable ? ' | null' : ''}`);
  const kinds = cols.map((c) => `${prop(c.name)}: ${lit(c.spec.type)}`);
  const rels = [...t.relations.values()].map((r) => `${prop(r.as)}: ${lit(r.target.name)}`);
  const obj = (fields: string[]) => (fields.length ? `{ ${fields.join('; ')} }` : '{}');
  return [
    `${ind}${prop(t.name)}: {`,
    `${ind}  Key: ${lit(t.pk.name)};`,
    `${ind}  Row: ${obj(row)};`,
    `${ind}  Input: ${obj(input)};`,
    `${ind}  Insert: ${obj(insert)};`,
    `${ind}  Kinds: ${obj(kinds)};`,
    `${ind}  Relations: ${obj(rels)};`,
    `${ind}};`,
  ].join('\n');
}

/** What a key holding only `role` (none: `public`) may do on each table, as the Bridge decides it. */
function grants(tables: ReadonlyMap<string, CompiledTable>, principal: Principal, ind: string): string[] {
  const out: string[] = [];
  const names = (cols: readonly CompiledColumn[]) => union(cols.map((c) => c.name));
  for (const t of tables.values()) {
    const g: string[] = [];
    for (const op of OPS) {
      const d = authorize(principal, t, op);
      if (!d.ok) continue;
      const rule = d.rule;
      if (op === 'select') {
        g.push(`select: ${names(rule.readable)}`);
        const rels = [...t.relations.values()].filter((r) => canRead(rule, r.column) && authorize(principal, r.target, 'select').ok);
        if (rels.length) g.push(`expand: ${union(rels.map((r) => r.as))}`);
      } else if (op === 'delete') g.push('delete: true');
      else g.push(`${op}: ${names(t.columns.filter((c) => !c.isPk && canWrite(rule, c)))}`);
    }
    if (g.length) out.push(`${ind}${prop(t.name)}: { ${g.join('; ')} };`);
  }
  return out;
}

export interface TypegenTarget {
  project: string;
  env: string;
}

/** The module `stk gen types` writes: `export type Database = {…}` (and `Role`), for `createClient<Database>`. */
export function renderTypes(release: ReleaseIR, target: TypegenTarget): string {
  const compiled = compileRelease(release);
  const uses = new Set<string>();
  const tables = [...compiled.tables.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const byName = new Map(tables.map((t) => [t.name, t]));
  const tableBlock = tables.map((t) => tableTypes(t, uses, '    ')).join('\n');
  const roles = [...referencedRoles(release.permissions), 'public'];
  const roleBlock = roles
    .map((role) => {
      const principal: Principal = { kind: 'apikey', sub: '', roles: role === 'public' ? [] : [role], project: target.project, env: target.env };
      const lines = grants(byName, principal, '      ');
      return lines.length ? `    ${prop(role)}: {\n${lines.join('\n')}\n    };` : `    ${prop(role)}: {};`;
    })
    .join('\n');
  const ref = release.ref ? `, ref ${release.ref.replace(/\*\//g, '* /').replace(/[\r\n]/g, ' ')}` : '';
  return [
    '/**',
    ` * Santokit types for ${target.project}/${target.env}: release ${release.releaseId}${ref} (${release.createdAt}).`,
    ' * Written by `stk gen types`; do not edit. Run it again after `stk apply` changes the schema or permissions.',
    ' *',
    ` *   const stk = createClient<Database, 'reader'>({ url, apiKey });  // the key's roles; \`public\`: none of them`,
    ' */',
    ...(uses.has('Json') ? ["import type { Json } from 'santokit/client';", ''] : []),
    'export type Database = {',
    '  tables: {',
    tableBlock,
    '  };',
    '  roles: {',
    roleBlock,
    '  };',
    '};',
    '',
    `export type Role = keyof Database['roles'];`,
    '',
  ].join('\n');
}
