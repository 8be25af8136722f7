import { describe, expect, it } from 'vitest';
import { sqliteDriver } from '../../src/hub/store/store.js';

/**
 * better-sqlite3 12 aborts the process on Node 24 (its Statement destructor trips a Node assertion when
 * the GC collects a statement; seen here killing a Hub mid-test), and better-sqlite3 13 does not run on
 * Node 20: the Hub's SQLite store uses node:sqlite from Node 24 on.
 */
describe('the SQLite binding of the Hub store', () => {
  it('node:sqlite on Node 24 and later, better-sqlite3 on 20 and 22; STK_SQLITE_DRIVER forces one', () => {
    expect(sqliteDriver({}, '20.20.2')).toBe('better-sqlite3');
    expect(sqliteDriver({}, '22.23.3')).toBe('better-sqlite3');
    expect(sqliteDriver({}, '24.0.0')).toBe('node');
    expect(sqliteDriver({}, '26.1.0')).toBe('node');
    expect(sqliteDriver({ STK_SQLITE_DRIVER: 'better-sqlite3' }, '24.21.0')).toBe('better-sqlite3');
    expect(sqliteDriver({ STK_SQLITE_DRIVER: 'node' }, '22.23.3')).toBe('node');
    expect(() => sqliteDriver({ STK_SQLITE_DRIVER: 'sqlite4' }, '24.0.0')).toThrow(/STK_SQLITE_DRIVER must be node or better-sqlite3/);
  });
});
