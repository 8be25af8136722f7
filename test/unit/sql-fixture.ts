/**
 * A hand-built release in the shape `stk apply` produces (the examples/basic tables plus a table of
 * every type, an auto_increment table, client/uuid/nanoid keys, and a table whose identifiers are an
 * injection corpus), and the DDL that creates it. Shared by the Bridge unit and integration tests.
 */
import type { ColumnIR, PermissionRule, ReleaseIR, TableIR } from '../../src/protocol/release.js';

const col = (name: string, type: ColumnIR['type'], o: Partial<ColumnIR> = {}): ColumnIR => ({ name, type, nullable: true, unique: false, ...o });
const table = (name: string, generate: TableIR['primaryKey']['generate'], columns: ColumnIR[], pk = 'id'): TableIR => ({
  name,
  connection: 'main',
  primaryKey: { name: pk, type: generate === 'auto_increment' ? 'bigint' : 'string', generate },
  columns,
  indexes: [],
});
const rule = (roles: string[], o: Partial<PermissionRule> = {}): PermissionRule => ({ roles, columns: null, ...o });
const owner = (column: string): PermissionRule['condition'] => ({
  source: `resource.${column} == request.auth.sub`,
  terms: [{ column, equals: { kind: 'authSub' } }],
});
const literal = (column: string, value: string | number | boolean): PermissionRule['condition'] => ({
  source: `resource.${column} == ${JSON.stringify(value)}`,
  terms: [{ column, equals: { kind: 'literal', value } }],
});

export const ODD_TABLE = 'odd "table"; --';
export const ODD_COLUMN = 'co"l; DROP TABLE canary; --';

export function fixtureRelease(releaseId = 'rel_fixture_1'): ReleaseIR {
  const tables: Record<string, TableIR> = {
    users: table('users', 'ulid', [
      col('email', 'string', { nullable: false, unique: true }),
      col('name', 'string'),
      col('created_at', 'timestamp', { nullable: false, default: { kind: 'now' } }),
    ]),
    posts: table('posts', 'ulid', [
      col('title', 'string', { nullable: false }),
      col('body', 'string'),
      col('author_id', 'string', { nullable: false, references: { table: 'users', column: 'id', as: 'author', onDelete: 'restrict', onUpdate: 'restrict' } }),
      col('published', 'boolean', { nullable: false, default: { kind: 'literal', value: false } }),
      col('status', 'string', { nullable: false, default: { kind: 'literal', value: 'draft' } }),
    ]),
    everything: table('everything', 'uuid_v4', [
      col('s', 'string'),
      col('i', 'int'),
      col('b', 'bigint'),
      col('f', 'float'),
      col('d', 'decimal'),
      col('flag', 'boolean'),
      col('doc', 'json'),
      col('ts', 'timestamp'),
      col('raw', 'bytes'),
      col('tags', 'array', { items: { type: 'string' } }),
      col('grid', 'array', { items: { type: 'array', items: { type: 'int' } } }),
    ]),
    counters: table('counters', 'auto_increment', [
      col('label', 'string', { nullable: false }),
      col('hits', 'int', { nullable: false, default: { kind: 'literal', value: 0 } }),
    ]),
    clients: table('clients', 'client', [col('note', 'string')], 'code'),
    events: table('events', 'uuid_v7', [col('kind', 'string')]),
    tokens: table('tokens', 'nanoid', [col('label', 'string')]),
    [ODD_TABLE]: table(ODD_TABLE, 'ulid', [
      col(ODD_COLUMN, 'string'),
      col('ref"id', 'string', { references: { table: 'users', column: 'id', as: 'owner', onDelete: 'cascade', onUpdate: 'restrict' } }),
    ]),
  };
  const admin = rule(['admin']);
  return {
    releaseId,
    project: 'shop',
    ref: null,
    createdAt: '2024-01-01T00:00:00.000Z',
    connections: ['main'],
    schema: { tables },
    permissions: {
      tables: {
        users: {
          select: [admin, rule(['authenticated'], { condition: owner('id'), columns: ['id', 'name', 'email'] }), rule(['reader'], { columns: ['id', 'name'] })],
          insert: [admin, rule(['writer'], { columns: ['email', 'name'] })],
          update: [admin, rule(['authenticated'], { condition: owner('id'), columns: ['name'] })],
          delete: [admin],
        },
        posts: {
          select: [
            admin,
            rule(['moderator'], { condition: literal('status', 'flagged') }),
            rule(['authenticated'], { condition: owner('author_id') }),
            rule(['public'], { condition: literal('published', true), columns: ['id', 'title', 'author_id'] }),
          ],
          insert: [admin, rule(['authenticated'], { condition: owner('author_id'), columns: ['title', 'body', 'author_id', 'published'] })],
          update: [
            admin,
            rule(['moderator'], { condition: literal('status', 'flagged'), columns: ['status'] }),
            rule(['authenticated'], { condition: owner('author_id'), columns: ['title', 'body', 'published'] }),
          ],
          delete: [admin, rule(['moderator'], { condition: literal('status', 'flagged') }), rule(['authenticated'], { condition: owner('author_id') })],
        },
        everything: { select: [admin], insert: [admin], update: [admin], delete: [admin] },
        counters: {
          select: [admin, rule(['reader'], { columns: ['label'] })],
          insert: [admin],
          update: [admin],
          delete: [admin, rule(['reader'], { columns: ['label'] })],
        },
        clients: { select: [admin], insert: [admin], update: [admin], delete: [admin] },
        events: { select: [admin], insert: [admin] },
        tokens: { select: [admin], insert: [admin] },
        [ODD_TABLE]: { select: [admin], insert: [admin], update: [admin], delete: [admin] },
      },
    },
  };
}

/** DDL for the fixture, as `stk apply` would create it (types per docs/schema.md). */
export const FIXTURE_DDL = `
CREATE TABLE users (id text PRIMARY KEY, email text NOT NULL UNIQUE, name text, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE posts (id text PRIMARY KEY, title text NOT NULL, body text,
  author_id text NOT NULL REFERENCES users(id) ON DELETE RESTRICT ON UPDATE RESTRICT,
  published boolean NOT NULL DEFAULT false, status text NOT NULL DEFAULT 'draft');
CREATE TABLE everything (id text PRIMARY KEY, s text, i integer, b bigint, f double precision, d numeric, flag boolean,
  doc jsonb, ts timestamptz, raw bytea, tags jsonb, grid jsonb);
CREATE TABLE counters (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, label text NOT NULL UNIQUE, hits integer NOT NULL DEFAULT 0);
CREATE TABLE clients (code text PRIMARY KEY, note text);
CREATE TABLE events (id text PRIMARY KEY, kind text);
CREATE TABLE tokens (id text PRIMARY KEY, label text);
CREATE TABLE "odd ""table""; --" (id text PRIMARY KEY, "co""l; DROP TABLE canary; --" text, "ref""id" text REFERENCES users(id) ON DELETE CASCADE);
CREATE TABLE canary (id integer PRIMARY KEY, note text NOT NULL);
INSERT INTO canary VALUES (1, 'still here');
`;
