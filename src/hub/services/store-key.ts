import { resolve } from 'node:path';
import type { HubContext } from '../context.js';
import { ConfigError } from '../config.js';
import { maskDbUrl } from './connections.js';
import { nowIso } from '../store/store.js';

/**
 * A Hub store belongs to the master key (STK_SECRET_KEY) it was created under: that key encrypts its
 * connection URLs and peppers its API-key hashes. Opened with another key, the Hub would start and
 * then fail on every connection (`Unsupported state or unable to authenticate data`) and every key.
 * So the store keeps a check value of its key (store_meta.master_key_check, HKDF of the key: it
 * reveals nothing about it) and a Hub with another key refuses to start.
 */

const CHECK = 'master_key_check';
const CREATED_BY = 'created_by';

/** How the store is named in messages: a SQLite file path, or a PostgreSQL URL without its password. */
export function describeStore(dbUrl: string): string {
  if (dbUrl.startsWith('sqlite:')) {
    const file = dbUrl.slice('sqlite:'.length).replace(/^\/\//, '');
    return file === '' || file === ':memory:' ? 'sqlite::memory:' : resolve(file);
  }
  try {
    return maskDbUrl(dbUrl);
  } catch {
    return 'the configured STK_HUB_DB_URL';
  }
}

export class StoreKeyMismatchError extends ConfigError {}

function mismatch(ctx: HubContext, createdBy: string | undefined): StoreKeyMismatchError {
  const where = describeStore(ctx.config.dbUrl);
  const lines = [
    `the Hub store ${where} was created with a different STK_SECRET_KEY; with this key its connection URLs cannot be decrypted and its API keys cannot be verified, so the Hub does not start.`,
  ];
  if (ctx.config.dev) {
    lines.push(`It is not this dev stack's key (${resolve(ctx.config.dataDir, 'secret.key')}): restore that file, or delete the data directory to start over.`);
  } else if (createdBy === 'dev') {
    lines.push("It is the dev stack's store (made by `npm start` / `stk dev`, key in .santokit/secret.key): give this Hub its own store with STK_HUB_DB_URL.");
  } else {
    lines.push('Start the Hub with the STK_SECRET_KEY the store was created with, or point STK_HUB_DB_URL at another store.');
  }
  return new StoreKeyMismatchError(lines.join('\n  '));
}

/** Refuses a store created under another master key; records this key's check value in a new store. */
export async function checkStoreKey(ctx: HubContext): Promise<void> {
  const mine = ctx.crypto.storeKeyCheck;
  const read = async () => {
    const rows = await ctx.db.selectFrom('store_meta').select(['key', 'value']).where('key', 'in', [CHECK, CREATED_BY]).execute();
    return { check: rows.find((r) => r.key === CHECK)?.value, createdBy: rows.find((r) => r.key === CREATED_BY)?.value };
  };
  let { check, createdBy } = await read();
  if (check === undefined) {
    // a new store, or one from before the check: an encrypted connection URL tells whose key it is
    const conn = await ctx.db.selectFrom('connections').select('db_url_enc').limit(1).executeTakeFirst();
    if (conn) {
      try {
        ctx.crypto.decrypt(conn.db_url_enc);
      } catch {
        throw mismatch(ctx, undefined);
      }
    }
    const at = nowIso();
    await ctx.db
      .insertInto('store_meta')
      .values([
        { key: CHECK, value: mine, created_at: at },
        { key: CREATED_BY, value: ctx.config.dev ? 'dev' : 'hub', created_at: at },
      ])
      .onConflict((oc) => oc.column('key').doNothing())
      .execute();
    ({ check, createdBy } = await read()); // another Hub may have claimed the store at the same moment
  }
  if (check !== mine) throw mismatch(ctx, createdBy);
}
