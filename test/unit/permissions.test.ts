import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../src/protocol/errors.js';
import { parseSchema } from '../../src/hub/services/apply/schema.js';
import { compileCondition, parsePermissions } from '../../src/hub/services/apply/permissions.js';
import { referencedRoles } from '../../src/protocol/release.js';

const schema = parseSchema([
  {
    file: 'schema/app.yaml',
    content: `version: 1
tables:
  users:
    columns:
      email: { type: string, unique: true }
      age: { type: int, nullable: true }
      score: { type: float, nullable: true }
      active: { type: boolean, default: true }
      joined: { type: timestamp, default: now }
      profile: { type: json, nullable: true }
  counters:
    id: { generate: auto_increment }
    columns:
      label: { type: string }
`,
  },
]);
const users = schema.tables.users!;

function rejectPerms(yaml: string): string[] {
  try {
    parsePermissions(yaml, schema);
  } catch (e) {
    expect(e).toBeInstanceOf(AppError);
    expect((e as AppError).status).toBe(400);
    expect((e as AppError).message).toMatch(/^invalid permissions: /);
    return ((e as AppError).details as { errors: string[] }).errors;
  }
  throw new Error('expected the permissions to be rejected');
}

describe('CEL condition subset', () => {
  it('compiles owner and literal equalities, either side order, joined with &&', () => {
    expect(compileCondition('resource.id == request.auth.sub', users)).toEqual({ terms: [{ column: 'id', equals: { kind: 'authSub' } }] });
    expect(compileCondition('request.auth.sub == resource.email', users)).toEqual({ terms: [{ column: 'email', equals: { kind: 'authSub' } }] });
    expect(compileCondition(`resource.email == "a@b.c" && resource.age == -3 && 1.5 == resource.score && resource.active == true`, users)).toEqual({
      terms: [
        { column: 'email', equals: { kind: 'literal', value: 'a@b.c' } },
        { column: 'age', equals: { kind: 'literal', value: -3 } },
        { column: 'score', equals: { kind: 'literal', value: 1.5 } },
        { column: 'active', equals: { kind: 'literal', value: true } },
      ],
    });
    expect(compileCondition(`(resource.email == 'x') && (resource.id == request.auth.sub)`, users)).toEqual({
      terms: [
        { column: 'email', equals: { kind: 'literal', value: 'x' } },
        { column: 'id', equals: { kind: 'authSub' } },
      ],
    });
  });

  const rejected: Array<[string, RegExp]> = [
    ['resource.email != "x"', /operator "!="/],
    ['resource.email == "x" || resource.age == 1', /"\|\|" is not supported/],
    ['resource.age > 3', /operator ">"/],
    ['"admin" in request.auth.roles', /operator "in"/],
    ['size(resource.email) == 3', /each comparison needs resource.<column>/],
    ['resource.email.startsWith("a")', /function startsWith\(\)/],
    ['!(resource.active == true)', /negation/],
    ['resource.nope == "x"', /unknown column resource\.nope/],
    ['resource.email == resource.email', /comparing two resource columns/],
    ['resource.email == null', /null is not supported/],
    ['resource.age == "3"', /resource\.age is int: compare it with a whole number/],
    ['resource.age == 1.5', /whole number/],
    ['resource.active == "true"', /compare it with true or false/],
    ['resource.joined == "yesterday"', /ISO-8601/],
    ['resource.profile == "x"', /json, array and bytes/],
    ['resource.age == request.auth.sub', /request\.auth\.sub is a string/],
    ['resource.email == request.auth.roles', /not supported on the right of ==/],
    ['resource.email ==', /CEL syntax error/],
    ['true', /a bare literal is not supported/],
    ['resource.email == "a" ? true : false', /conditional operator/],
    ['resource["email"] == "x"', /each comparison needs resource.<column>/],
    ['resource.age == 99999999999999999999', /beyond|syntax|not supported/],
  ];
  for (const [src, re] of rejected) {
    it(`rejects ${src}`, () => {
      const r = compileCondition(src, users);
      expect('error' in r, JSON.stringify(r)).toBe(true);
      expect((r as { error: string }).error).toMatch(re);
    });
  }

  it('an auto_increment primary key is an integer, not comparable with request.auth.sub', () => {
    const counters = schema.tables.counters!;
    expect(compileCondition('resource.id == 5', counters)).toEqual({ terms: [{ column: 'id', equals: { kind: 'literal', value: 5 } }] });
    expect(compileCondition('resource.id == request.auth.sub', counters)).toMatchObject({ error: expect.stringMatching(/string/) });
  });
});

describe('permissions.yaml', () => {
  it('compiles examples/basic against its schema', () => {
    const dir = join(import.meta.dirname, '../../examples/basic');
    const s = parseSchema(readdirSync(join(dir, 'schema')).map((n) => ({ file: `schema/${n}`, content: readFileSync(join(dir, 'schema', n), 'utf8') })));
    const p = parsePermissions(readFileSync(join(dir, 'config/permissions.yaml'), 'utf8'), s);
    expect(p.tables.users!.select).toEqual([
      { roles: ['admin'], columns: null },
      { roles: ['reader'], columns: ['id', 'email', 'name', 'created_at'] },
    ]);
    expect(p.tables.users!.delete).toEqual([{ roles: ['admin'], columns: null }]); // single object = one rule
    expect(p.tables.posts!.select![2]).toEqual({
      roles: ['authenticated'],
      columns: null,
      condition: { source: 'resource.author_id == request.auth.sub', terms: [{ column: 'author_id', equals: { kind: 'authSub' } }] },
    });
    expect(referencedRoles(p)).toEqual(['admin', 'reader']);
  });

  it('columns: ["*"] means every column; missing or null permissions allow nothing', () => {
    const p = parsePermissions('tables:\n  users:\n    select: { roles: [public], columns: ["*"] }\n', schema);
    expect(p.tables.users!.select).toEqual([{ roles: ['public'], columns: null }]);
    expect(parsePermissions(null, schema)).toEqual({ tables: {} });
    expect(parsePermissions('', schema)).toEqual({ tables: {} });
  });

  it('bad CEL is rejected naming the table, the op and the rule', () => {
    const errors = rejectPerms(`tables:
  users:
    select:
      - roles: [admin]
      - roles: [reader]
        condition: resource.email != "x"
`);
    expect(errors).toEqual([
      expect.stringMatching(
        /^config\/permissions\.yaml: tables\.users\.select rule #2: condition "resource\.email != \\"x\\"": operator "!=" is not supported/,
      ),
    ]);
  });

  const shapes: Array<[string, string, RegExp]> = [
    ['unknown table', 'tables:\n  nope:\n    select: { roles: [a] }\n', /tables\.nope: unknown table "nope"/],
    ['unknown op', 'tables:\n  users:\n    upsert: { roles: [a] }\n', /tables\.users\.upsert: unknown operation "upsert"/],
    ['missing roles', 'tables:\n  users:\n    select: { columns: [id] }\n', /tables\.users\.select rule #1: "roles" is required/],
    ['empty roles', 'tables:\n  users:\n    select: { roles: [] }\n', /"roles" is required/],
    ['invalid role', 'tables:\n  users:\n    select: { roles: ["a b"] }\n', /invalid role "a b"/],
    ['unknown column', 'tables:\n  users:\n    select: { roles: [a], columns: [id, nope] }\n', /rule #1: unknown column "nope" in "columns"/],
    ['star mixed with names', 'tables:\n  users:\n    select: { roles: [a], columns: ["*", id] }\n', /"\*" cannot be combined/],
    ['unknown rule key', 'tables:\n  users:\n    select: { roles: [a], when: x }\n', /rule #1: unknown key "when"/],
    ['empty condition', 'tables:\n  users:\n    select: { roles: [a], condition: "" }\n', /"condition" must be a CEL string/],
    ['unknown top-level key', 'table:\n  users: {}\n', /unknown top-level key "table"/],
    ['YAML syntax', 'tables: [\n', /invalid YAML/],
  ];
  for (const [name, yaml, re] of shapes) {
    it(`rejects ${name}`, () => {
      const errors = rejectPerms(yaml);
      expect(
        errors.some((e) => re.test(e)),
        errors.join('\n'),
      ).toBe(true);
    });
  }
});
