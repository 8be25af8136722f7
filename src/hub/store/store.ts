import { chmodSync, closeSync, mkdirSync, openSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql, type MigrationResult } from 'kysely';
import type { HubDatabase } from './schema.js';
import { migrations, type Dialect } from './migrations.js';

export type HubDb = Kysely<HubDatabase>;

export interface Store {
  db: HubDb;
  dialect: Dialect;
  /** true when the store answers a trivial query */
  ping(): Promise<boolean>;
  close(): Promise<void>;
  /** the pg URL when the store is on PostgreSQL (for LISTEN/NOTIFY between Hubs) */
  pgUrl?: string;
}

/** `sqlite://./path.db`, `sqlite::memory:` or `postgres://…` (a pool of up to `poolMax` connections: STK_HUB_DB_POOL) */
export async function openStore(url: string, { poolMax = 10 }: { poolMax?: number } = {}): Promise<Store> {
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    const pg = (await import('pg')).default;
    const pool = new pg.Pool({ connectionString: url, max: poolMax });
    pool.on('error', () => {}); // idle-client errors surface on the next query
    const db = new Kysely<HubDatabase>({ dialect: new PostgresDialect({ pool }) });
    return {
      db,
      dialect: 'postgres',
      pgUrl: url,
      ping: () => ping(db),
      close: () => db.destroy(),
    };
  }
  if (url.startsWith('sqlite:')) {
    const Database = (await import('better-sqlite3')).default;
    let file = url.slice('sqlite:'.length).replace(/^\/\//, '');
    if (file === ':memory:' || file === '') file = ':memory:';
    else {
      file = resolve(file);
      ownerOnlyStoreFiles(file);
    }
    const sqlite = new Database(file);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 5000');
    sqlite.pragma('synchronous = NORMAL');
    const db = new Kysely<HubDatabase>({ dialect: new SqliteDialect({ database: sqlite }) });
    return { db, dialect: 'sqlite', ping: () => ping(db), close: () => db.destroy() };
  }
  throw new Error(`STK_HUB_DB_URL must start with sqlite: or postgres:// (got scheme ${url.split(':')[0]})`);
}

/**
 * The store holds password hashes, API-key hashes and encrypted DB URLs: its files are the owner's
 * only. Creates the database file 0600 (its directory 0700 when new) before SQLite opens it; SQLite
 * gives the -wal and -shm files the database file's mode. Files an older version left readable by
 * others are tightened.
 */
function ownerOnlyStoreFiles(file: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  closeSync(openSync(file, 'a', 0o600));
  for (const f of [file, `${file}-wal`, `${file}-shm`, `${file}-journal`]) {
    try {
      if ((statSync(f).mode & 0o077) !== 0) chmodSync(f, 0o600);
    } catch (e) {
      // gone, or another user's file (left as its owner set it)
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'EPERM') throw e;
    }
  }
}

async function ping(db: HubDb): Promise<boolean> {
  try {
    await sql`select 1`.execute(db);
    return true;
  } catch {
    return false;
  }
}

/** Runs pending migrations. On PostgreSQL Kysely holds an advisory lock, so two Hubs starting at once are safe. */
export async function migrate(store: Store): Promise<MigrationResult[]> {
  const all = migrations(store.dialect);
  const migrator = new Migrator({
    db: store.db,
    provider: { getMigrations: async () => all },
    migrationTableName: 'stk_migrations',
    migrationLockTableName: 'stk_migrations_lock',
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return results ?? [];
}

export const nowIso = () => new Date().toISOString();
