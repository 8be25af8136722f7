import { describe, expect, it } from 'vitest';
import type { Principal } from '../../src/bridge/context.js';
import { appendRuleFilter, authorize, canRead, canWrite } from '../../src/bridge/permissions/index.js';
import { compileRelease } from '../../src/bridge/release-cache/compile.js';
import type { Cond } from '../../src/bridge/sql/build.js';
import type { ReleaseIR } from '../../src/protocol/release.js';
import { fixtureRelease } from './sql-fixture.js';

const release = compileRelease(fixtureRelease());
const users = release.tables.get('users')!;
const posts = release.tables.get('posts')!;
const p = (kind: Principal['kind'], roles: string[], sub = 'sub1'): Principal => ({ kind, roles, sub, project: 'shop', env: 'dev' });

function decide(principal: Principal, table = users, op: 'select' | 'insert' | 'update' | 'delete' = 'select') {
  const d = authorize(principal, table, op);
  return d.ok ? d.rule.index : d.reason;
}

describe('authorize: first rule whose roles match wins', () => {
  it('picks the first matching rule in order', () => {
    expect(decide(p('apikey', ['admin']))).toBe(0);
    expect(decide(p('apikey', ['reader', 'admin']))).toBe(0);
    expect(decide(p('apikey', ['reader']))).toBe(2);
    expect(decide(p('enduser', ['authenticated', 'reader']))).toBe(1);
  });

  it('`authenticated` matches end users only, never an API key holding that role name', () => {
    expect(decide(p('apikey', ['authenticated']))).toMatch(/no permission rule of table 'users' allows select/);
    expect(decide(p('enduser', []))).toBe(1);
  });

  it('`public` matches any authenticated caller, with no roles at all', () => {
    expect(decide(p('apikey', []), posts)).toBe(3);
    expect(decide(p('enduser', ['authenticated']), posts)).toBe(2);
    expect(decide(p('apikey', ['moderator']), posts)).toBe(1);
  });

  it('no matching rule, or no rules for the op → deny with a reason', () => {
    expect(decide(p('apikey', ['writer']), users, 'delete')).toMatch(/allows delete/);
    const events = release.tables.get('events')!;
    expect(decide(p('apikey', ['admin']), events, 'update')).toBe("no permission rule allows update on table 'events'");
  });

  it('dev principals (STK_DISABLE_AUTH) get the unrestricted rule', () => {
    const d = authorize(p('dev', []), users, 'delete');
    expect(d.ok && d.rule).toBe(users.devRule);
    expect(users.devRule.allowed).toBeNull();
    expect(users.devRule.terms).toHaveLength(0);
  });
});

describe('row filters from compiled conditions', () => {
  const filter = (principal: Principal, table = posts, op: 'select' | 'update' | 'delete' = 'select') => {
    const d = authorize(principal, table, op);
    if (!d.ok) throw new Error(d.reason);
    const out: Cond[] = [];
    appendRuleFilter(d.rule, principal, out);
    return out.map((c) => (c.k === 'cmp' ? `${c.col.q} ${c.op} ${c.value}` : c.k));
  };

  it('owner terms bind the principal sub; literal terms their value', () => {
    expect(filter(p('enduser', ['authenticated'], 'u_42'))).toEqual(['"author_id" = u_42']);
    expect(filter(p('apikey', ['moderator']), posts, 'delete')).toEqual(['"status" = flagged']);
    expect(filter(p('apikey', []))).toEqual(['"published" = true']);
    expect(filter(p('apikey', ['admin']))).toEqual([]);
  });

  it('a term whose value can never fit the column type matches nothing', () => {
    const ir: ReleaseIR = fixtureRelease();
    ir.permissions.tables.counters!.select = [
      { roles: ['x'], columns: null, condition: { source: 'resource.hits == request.auth.sub', terms: [{ column: 'hits', equals: { kind: 'authSub' } }] } },
    ];
    ir.permissions.tables.counters!.delete = [
      {
        roles: ['x'],
        columns: null,
        condition: { source: 'resource.hits == "many"', terms: [{ column: 'hits', equals: { kind: 'literal', value: 'many' } }] },
      },
    ];
    const counters = compileRelease(ir).tables.get('counters')!;
    expect(filter(p('apikey', ['x'], 'key_abc'), counters)).toEqual(['false']);
    expect(filter(p('apikey', ['x'], '7'), counters)).toEqual(['"hits" = 7']); // a numeric subject against an int column
    expect(filter(p('apikey', ['x']), counters, 'delete')).toEqual(['false']);
  });
});

describe('column allow-lists', () => {
  it('readable columns and returning lists are precomputed in table order', () => {
    const d = authorize(p('enduser', ['authenticated']), users, 'select');
    expect(d.ok && d.rule.readable.map((c) => c.name)).toEqual(['id', 'email', 'name']);
    const reader = authorize(p('apikey', ['reader']), release.tables.get('counters')!, 'select');
    expect(reader.ok && reader.rule.readableList).toBe('"label"');
    expect(reader.ok && reader.rule.returningList).toBe('"id", "label"');
  });

  it('canRead / canWrite follow the allow-list; the key is always writable (client ids)', () => {
    const d = authorize(p('apikey', ['writer']), users, 'insert');
    if (!d.ok) throw new Error(d.reason);
    expect(canWrite(d.rule, users.byName.get('email')!)).toBe(true);
    expect(canWrite(d.rule, users.byName.get('created_at')!)).toBe(false);
    expect(canWrite(d.rule, users.pk)).toBe(true);
    expect(canRead(d.rule, users.byName.get('created_at')!)).toBe(false);
    expect(canRead(users.devRule, users.byName.get('created_at')!)).toBe(true);
  });

  it('"*" in a columns list means every column', () => {
    const ir = fixtureRelease();
    ir.permissions.tables.users!.select = [{ roles: ['x'], columns: ['*'] }];
    const d = authorize(p('apikey', ['x']), compileRelease(ir).tables.get('users')!, 'select');
    expect(d.ok && d.rule.allowed).toBeNull();
  });
});

describe('compiled relations', () => {
  it('expose references by their `as` name, same connection only', () => {
    expect([...posts.relations.keys()]).toEqual(['author']);
    const ir = fixtureRelease();
    ir.schema.tables.users!.connection = 'other';
    expect([...compileRelease(ir).tables.get('posts')!.relations.keys()]).toEqual([]);
  });
});
