import type { HubContext } from '../context.js';

/**
 * Decrypted DB URLs of an env's connections, by connection name. Only for code that must connect
 * (apply, connection test, the Bridge sync over /internal/*): never return these to an operator route.
 */
export async function connectionUrls(ctx: HubContext, envId: string): Promise<Record<string, string>> {
  const rows = await ctx.db.selectFrom('connections').select(['name', 'db_url_enc']).where('env_id', '=', envId).execute();
  const out: Record<string, string> = {};
  for (const r of rows) out[r.name] = ctx.crypto.decrypt(r.db_url_enc);
  return out;
}

/** The same for many envs in one query (the sync snapshot's env states): env id → name → URL. */
export async function connectionUrlsByEnv(ctx: HubContext, envIds: ReadonlySet<string>): Promise<Map<string, Record<string, string>>> {
  const rows = await ctx.db.selectFrom('connections').select(['env_id', 'name', 'db_url_enc']).execute();
  const out = new Map<string, Record<string, string>>();
  for (const r of rows) {
    if (!envIds.has(r.env_id)) continue;
    let m = out.get(r.env_id);
    if (!m) out.set(r.env_id, (m = {}));
    m[r.name] = ctx.crypto.decrypt(r.db_url_enc);
  }
  return out;
}
