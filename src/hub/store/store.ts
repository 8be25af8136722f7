import { chmodSync, closeSync, mkdirSync, openSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql, type MigrationResult, type SqliteDatabase } from 'kysely';
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
  /** a PostgreSQL store's pool now (for /metrics); absent on SQLite (one in-process connection) */
  poolStats?(): { total: number; idle: number; waiting: number };
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
      poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
      ping: () => ping(db),
      close: () => db.destroy(),
    };
  }
  if (url.startsWith('sqlite:')) {
    let file = url.slice('sqlite:'.length).replace(/^\/\//, '');
    if (file === ':memory:' || file === '') file = ':memory:';
    else {
      file = resolve(file);
      ownerOnlyStoreFiles(file);
    }
    const PRAGMAS = ['journal_mode = WAL', 'foreign_keys = ON', 'busy_timeout = 5000', 'synchronous = NORMAL'];
    let database: SqliteDatabase;
    if (sqliteDriver() === 'node') {
      database = await openNodeSqlite(file, PRAGMAS);
    } else {
      const Database = (await import('better-sqlite3')).default;
      const sqlite = new Database(file);
      for (const p of PRAGMAS) sqlite.pragma(p);
      database = sqlite;
    }
    const db = new Kysely<HubDatabase>({ dialect: new SqliteDialect({ database }) });
    return { db, dialect: 'sqlite', ping: () => ping(db), close: () => db.destroy() };
  }
  throw new Error(`STK_HUB_DB_URL must start with sqlite: or postgres:// (got scheme ${url.split(':')[0]})`);
}

/**
 * Which SQLite binding runs the store. better-sqlite3 12 (the last line that runs on Node 20) aborts
 * the process on Node 24 (`Assertion failed: (env) != nullptr` in Statement::~Statement when the GC
 * collects a statement: Node 24 changed node::ObjectWrap; fixed in better-sqlite3 13, which needs
 * Node 22 or later). So on Node 24 and later the store uses Node's own `node:sqlite` (stable there,
 * no warning); on Node 20 and 22 better-sqlite3. STK_SQLITE_DRIVER=node|better-sqlite3 forces one.
 */
export function sqliteDriver(env: NodeJS.ProcessEnv = process.env, nodeVersion = process.versions.node): 'node' | 'better-sqlite3' {
  const forced = env.STK_SQLITE_DRIVER;
  if (forced === 'node' || forced === 'better-sqlite3') return forced;
  if (forced) throw new Error(`STK_SQLITE_DRIVER must be node or better-sqlite3 (got ${JSON.stringify(forced.slice(0, 40))})`);
  return Number(nodeVersion.split('.')[0]) >= 24 ? 'node' : 'better-sqlite3';
}

/** The part of node:sqlite the store uses (typed here: @types/node 20 has no node:sqlite). */
interface NodeSqliteStatement {
  columns(): unknown[];
  all(...params: unknown[]): unknown[];
  run(...params: unknown[]): { changes: number | bigint; lastInsertRowid: number | bigint };
  iterate(...params: unknown[]): IterableIterator<unknown>;
}
interface NodeSqliteDatabase {
  exec(sql: string): void;
  prepare(sql: string): NodeSqliteStatement;
  close(): void;
}

/** node:sqlite behind the interface Kysely's SQLite dialect drives (the one better-sqlite3 has). */
async function openNodeSqlite(file: string, pragmas: string[]): Promise<SqliteDatabase> {
  const specifier = 'node:sqlite'; // a variable: neither the bundler nor Node 20's type checker resolves it
  const { DatabaseSync } = (await import(specifier)) as { DatabaseSync: new (path: string) => NodeSqliteDatabase };
  const db = new DatabaseSync(file);
  for (const p of pragmas) db.exec(`PRAGMA ${p}`);
  return {
    close: () => db.close(),
    prepare(sql: string) {
      const st = db.prepare(sql);
      return {
        // a statement that returns rows (select, or … returning): Kysely reads it with all()
        reader: st.columns().length > 0,
        all: (params) => st.all(...params),
        run: (params) => st.run(...params),
        iterate: (params) => st.iterate(...params),
      };
    },
  };
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
    // numbers are handed out before the work lands, so a lower one can arrive after a higher one ran
    // (0011 before 0009): run it then instead of refusing the store; each migration stands alone
    allowUnorderedMigrations: true,
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return results ?? [];
}

export const nowIso = () => new Date().toISOString();
