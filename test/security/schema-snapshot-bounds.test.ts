/**
 * `stk schema snapshot|drift` read a database's catalog into the Hub: what they may read is counted
 * first and refused (409) past the bound — tables and columns, and also indexes and keys, which a
 * table may hold any number of. Before, 40,000 indexes on one table (made in 3 s) were read in full and
 * compared name by name against the previous snapshot's: seconds of a blocked event loop per request
 * for every tenant of the Hub, growing with the square of the count.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import { MAX_SNAPSHOT_INDEXES } from '../../src/hub/services/schema-snapshots.js';
import { HubApi } from '../helpers/hub-api.js';
import { createTestDatabase, query, TEST_ALLOW_HOSTS } from '../helpers/pg.js';

const OWNER = { email: 'snap-owner@example.com', password: 'snap-owner-password' };

describe('security: schema snapshots are bounded in indexes and keys too', () => {
  let hub: FastifyInstance;
  let api: HubApi;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;

  beforeAll(async () => {
    db = await createTestDatabase('snapidx');
    const dir = mkdtempSync(join(tmpdir(), 'stk-hub-snap-'));
    ({ app: hub } = await buildHub(
      loadHubConfig({
        STK_SECRET_KEY: 'd'.repeat(64),
        STK_SERVICE_TOKEN: 'hub-snap-token-xxxxxxxxx',
        STK_HUB_DB_URL: `sqlite://${join(dir, 'hub.db')}`,
        STK_OWNER_EMAIL: OWNER.email,
        STK_OWNER_PASSWORD: OWNER.password,
        STK_CONNECTION_ALLOW_HOSTS: TEST_ALLOW_HOSTS,
      }),
      { logger: false },
    ));
    const url = await hub.listen({ port: 0, host: '127.0.0.1' });
    const login = await new HubApi(url).request('POST', '/api/auth/login', OWNER);
    api = new HubApi(url, login.json.token);
    for (const [m, p, b] of [
      ['POST', '/api/projects', { name: 'snap' }],
      ['POST', '/api/projects/snap/envs', { name: 'dev' }],
      ['PUT', '/api/projects/snap/envs/dev/connections/main', { engine: 'postgres', dbUrl: db.url }],
    ] as const) {
      const r = await api.request(m, p, b);
      expect(r.status, r.text).toBeLessThan(300);
    }
  });
  afterAll(async () => {
    await hub?.close();
    await db?.drop();
  });

  it('one table with more indexes than the bound: 409 naming the count (snapshot and drift), before the catalog is read', async () => {
    await query(db.url, 'CREATE TABLE t (a int PRIMARY KEY, b int)');
    const ok = await api.request('POST', '/api/projects/snap/envs/dev/schema/snapshot');
    expect(ok.status, ok.text).toBe(201);

    // a few thousand per statement (each index takes a lock until its transaction ends)
    for (let from = 1; from <= MAX_SNAPSHOT_INDEXES; from += 5000) {
      await query(db.url, `DO $$ BEGIN FOR i IN ${from}..${from + 4999} LOOP EXECUTE format('CREATE INDEX ix_%s ON t (b)', i); END LOOP; END $$`);
    }
    const big = await api.request('POST', '/api/projects/snap/envs/dev/schema/snapshot');
    expect(big.status, big.text.slice(0, 300)).toBe(409);
    expect(big.json.error.code).toBe('CONFLICT');
    expect(big.json.error.message).toContain(`${MAX_SNAPSHOT_INDEXES + 2} indexes and keys`);
    expect(big.json.error.message).toContain(`the limit is 1000 tables, 20000 columns and ${MAX_SNAPSHOT_INDEXES} indexes and keys`);
    const drift = await api.request('GET', '/api/projects/snap/envs/dev/schema/drift');
    expect(drift.status).toBe(409);
  });
});
