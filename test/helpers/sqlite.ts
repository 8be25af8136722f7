import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { sqliteDriver } from '../../src/hub/store/store.js';

/**
 * Opens a SQLite file from a test (reading a Hub store, planting rows) with the binding the Hub uses
 * on this Node (src/hub/store/store.ts#sqliteDriver): better-sqlite3 on Node 20 and 22, node:sqlite on
 * 24+, where better-sqlite3 12 can abort the test worker when the GC collects a statement.
 */
export interface TestSqlite {
  prepare(sql: string): { all(...params: unknown[]): unknown[]; get(...params: unknown[]): unknown; run(...params: unknown[]): unknown };
  exec(sql: string): void;
  pragma(setting: string): void;
  /** like better-sqlite3's: returns a function that runs `fn` in one transaction */
  transaction(fn: () => void): () => void;
  close(): void;
}

const require = createRequire(import.meta.url);

export function openSqlite(file: string, o: { readonly?: boolean; fileMustExist?: boolean } = {}): TestSqlite {
  if (sqliteDriver() === 'better-sqlite3') {
    const Database = require('better-sqlite3') as typeof import('better-sqlite3');
    const db = new Database(file, { readonly: o.readonly ?? false, fileMustExist: o.fileMustExist ?? false });
    return {
      prepare: (sql) => db.prepare(sql),
      exec: (sql) => void db.exec(sql),
      pragma: (s) => void db.pragma(s),
      transaction: (fn) => db.transaction(fn),
      close: () => void db.close(),
    };
  }
  if ((o.fileMustExist || o.readonly) && !existsSync(file)) throw new Error(`no SQLite file at ${file}`);
  const { DatabaseSync } = (process as unknown as { getBuiltinModule(id: string): unknown }).getBuiltinModule('node:sqlite') as {
    DatabaseSync: new (
      path: string,
      options?: { readOnly?: boolean },
    ) => { prepare(sql: string): ReturnType<TestSqlite['prepare']>; exec(sql: string): void; close(): void };
  };
  const db = new DatabaseSync(file, { readOnly: o.readonly ?? false });
  return {
    prepare: (sql) => db.prepare(sql),
    exec: (sql) => db.exec(sql),
    pragma: (s) => db.exec(`PRAGMA ${s}`),
    transaction: (fn) => () => {
      db.exec('BEGIN');
      try {
        fn();
        db.exec('COMMIT');
      } catch (e) {
        db.exec('ROLLBACK');
        throw e;
      }
    },
    close: () => db.close(),
  };
}
