import { describe, expect, it } from 'vitest';
import { diffSchemas } from '../../src/hub/services/schema-snapshots.js';
import type { SnapshotTable } from '../../src/protocol/api/hub.js';

const table = (name: string, o: Partial<SnapshotTable> = {}): SnapshotTable => ({
  name,
  managed: true,
  columns: [{ name: 'id', type: 'text', nullable: false, default: null }],
  primaryKey: ['id'],
  uniques: [],
  foreignKeys: [],
  indexes: [],
  ...o,
});
const fk: SnapshotTable['foreignKeys'][number] = { columns: ['author_id'], refTable: 'users', refColumns: ['id'], onDelete: 'cascade', onUpdate: 'restrict' };

describe('schema snapshot diff', () => {
  it('the same schema has no changes', () => {
    const s = [{ name: 'main', tables: [table('users'), table('posts', { foreignKeys: [fk] })] }];
    expect(diffSchemas(s, structuredClone(s))).toEqual([]);
  });

  it('names every kind of change, per connection and table', () => {
    const before = [
      {
        name: 'main',
        tables: [
          table('users', {
            uniques: [['email']],
            columns: [
              { name: 'id', type: 'text', nullable: false, default: null },
              { name: 'email', type: 'text', nullable: false, default: null },
            ],
          }),
          table('posts', { foreignKeys: [fk], indexes: [{ name: 'posts_a_ix', columns: ['a'], unique: false }] }),
        ],
      },
      { name: 'logs', tables: [table('events')] },
    ];
    const after = [
      {
        name: 'main',
        tables: [
          table('users', {
            primaryKey: null,
            columns: [
              { name: 'id', type: 'bigint', nullable: false, default: 'identity' },
              { name: 'email', type: 'text', nullable: false, default: null },
            ],
          }),
          table('posts', { foreignKeys: [{ ...fk, onUpdate: 'no_action' }], indexes: [{ name: 'posts_a_ix', columns: ['a', 'b'], unique: true }] }),
        ],
      },
    ];
    expect(diffSchemas(before, after).map((c) => `${c.connection} ${c.table} ${c.object} ${c.change}: ${c.description}`)).toEqual([
      'logs null connection removed: connection logs removed (1 tables)',
      'main posts foreign key changed: foreign key posts(author_id): → users(id) on delete cascade, on update restrict → → users(id) on delete cascade, on update no action',
      'main posts index changed: index posts_a_ix: on (a) → unique on (a, b)',
      'main users column changed: column users.id changed: text, not null → bigint, not null, default identity',
      'main users primary key changed: primary key of users: (id) → none',
      'main users unique removed: unique (email) on users removed',
    ]);
  });
});
