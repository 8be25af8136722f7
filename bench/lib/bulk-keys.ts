import Database from 'better-sqlite3';
import { ulid } from '../../src/common/ulid.js';
import { Crypto } from '../../src/hub/services/crypto.js';
import { hashSecret } from '../../src/protocol/key-format.js';
import { generateKey } from '../../src/protocol/key-format.js';

/**
 * BENCH ONLY: writes `count` API keys straight into a Hub's SQLite store, spread over a project `bulk`
 * with `count / perEnv` envs (perEnv ≤ the Hub's 100-live-keys-per-env limit, so the data is a state the
 * API could have produced). Each key gets a real id and a real HMAC of a random secret under the Hub's
 * pepper, exactly as `apikey create` stores it. Creating them through the API would take minutes; a
 * Bridge that starts (or resyncs) afterwards loads them with its snapshot like any other keys.
 */
export function bulkInsertKeys(o: {
  dbFile: string;
  secretKeyHex: string;
  count: number;
  perEnv?: number;
  /** receives every `sampleEvery`-th key's env and id (keys to revoke later) */
  sample?: Array<{ env: string; keyId: string }>;
  sampleEvery?: number;
}): number {
  const perEnv = o.perEnv ?? 100;
  const pepper = new Crypto(Buffer.from(o.secretKeyHex, 'hex')).apiKeyPepper;
  const db = new Database(o.dbFile);
  db.pragma('busy_timeout = 10000');
  try {
    const org = db.prepare("select id from orgs where name = 'default'").get() as { id: string } | undefined;
    if (!org) throw new Error('the Hub store has no default org');
    const now = new Date().toISOString();
    const insProject = db.prepare('insert into projects (id, org_id, name, created_at) values (?, ?, ?, ?)');
    const insEnv = db.prepare('insert into envs (id, project_id, name, created_at) values (?, ?, ?, ?)');
    const insKey = db.prepare(
      `insert into api_keys (id, project_id, env_id, name, roles_json, secret_hash, prev_secret_hash, prev_expires_at, status,
         rate_limit_per_min, created_by, created_at, expires_at, revoked_at, rotated_at, last_used_at)
       values (?, ?, ?, ?, ?, ?, null, null, 'active', null, null, ?, null, null, null, null)`,
    );
    let n = 0;
    db.transaction(() => {
      const projectId = ulid();
      insProject.run(projectId, org.id, 'bulk', now);
      for (let e = 0; n < o.count; e++) {
        const envId = ulid();
        const envName = `e${e}`;
        insEnv.run(envId, projectId, envName, now);
        for (let i = 0; i < perEnv && n < o.count; i++, n++) {
          const { keyId, secret } = generateKey(envName);
          insKey.run(keyId, projectId, envId, `k${i}`, '["reader"]', hashSecret(pepper, secret).toString('hex'), now);
          if (o.sample && n % (o.sampleEvery ?? 1000) === 0) o.sample.push({ env: envName, keyId });
        }
      }
    })();
    return n;
  } finally {
    db.close();
  }
}
