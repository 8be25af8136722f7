/**
 * The answer byte bounds in process, with small limits so every path is cheap to reach: rows are
 * charged to the query they answer even when many queries share one pipelined connection (a row
 * charged to a neighbour would push that one over its bound); a select over the bound is stopped and
 * its pool keeps serving; a write over it is applied and says so; the Bridge-wide bound refuses
 * large answers with 503 + Retry-After while small answers go on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildBridge } from '../../src/bridge/app.js';
import { loadBridgeConfig } from '../../src/bridge/config.js';
import type { BridgeContext } from '../../src/bridge/context.js';
import { unauthorized } from '../../src/protocol/errors.js';
import { createTestDatabase, query } from '../helpers/pg.js';
import { FIXTURE_DDL, fixtureRelease } from '../unit/sql-fixture.js';

const MAX = 100_000;
let app: FastifyInstance;
let ctx: BridgeContext;
let db: Awaited<ReturnType<typeof createTestDatabase>>;

/** note sizes: 20–95 KB, deterministic */
const size = (i: number) => 20_000 + ((i * 7919) % 75_000);

async function call(path: string, params: object) {
  const res = await app.inject({
    method: 'POST',
    url: '/call',
    headers: { 'content-type': 'application/json', 'x-test': 'admin' },
    payload: JSON.stringify({ path, params }),
  });
  return { status: res.statusCode, body: res.json() as any, headers: res.headers };
}

beforeAll(async () => {
  db = await createTestDatabase('respbounds');
  await query(db.url, FIXTURE_DDL);
  await query(db.url, `insert into clients (code, note) select 'c' || g, repeat('n', 20000 + ((g * 7919) % 75000)) from generate_series(0, 59) g`);
  await query(db.url, `insert into clients (code, note) select 'w' || g, 'small' from generate_series(0, 19) g`);
  const config = {
    ...loadBridgeConfig({ STK_SERVICE_TOKEN: 'bounds-token', STK_HUB_URL: 'http://127.0.0.1:9', STK_CONNECTION_ALLOW_HOSTS: '127.0.0.1' }),
    responseMaxBytes: MAX,
    poolMax: 2,
  };
  ({ app, ctx } = await buildBridge(config, { logger: false }));
  ctx.credentials = {
    authenticate(req) {
      if (req.headers['x-test'] !== 'admin') throw unauthorized('no credential');
      return { kind: 'apikey', sub: 'key_admin', roles: ['admin'], project: 'shop', env: 'dev' };
    },
  };
  ctx.releases.set('shop', 'dev', fixtureRelease(), { main: db.url });
  await app.ready();
});

afterAll(async () => {
  await app?.close();
  await db?.drop();
});

describe('answer byte bounds', () => {
  it('rows are charged to their own query on a shared pipelined connection: 3 × 90 concurrent one-row selects of 20–95 KB under a 100 KB bound all succeed, each with its own row', async () => {
    // a fast, known statement: later queries are pipelined behind it on one connection
    for (let i = 0; i < 5; i++) expect((await call('db/clients/select', { where: { code: 'c0' } })).status).toBe(200);
    for (let round = 0; round < 3; round++) {
      const rs = await Promise.all(Array.from({ length: 90 }, (_, i) => call('db/clients/select', { where: { code: `c${(i + round * 7) % 60}` } })));
      const wrong = rs
        .map((r, i) =>
          r.status === 200 && r.body.data[0].note.length === size((i + round * 7) % 60) ? null : `#${i}: ${r.status} ${JSON.stringify(r.body).slice(0, 120)}`,
        )
        .filter(Boolean);
      expect(wrong).toEqual([]);
    }
  });

  it('a select over the bound → 400 RESPONSE_TOO_LARGE (stopped, its connection closed); the pool keeps serving; its neighbours are never charged for it', async () => {
    const big = await call('db/clients/select', { where: { code: { $like: 'c%' } } });
    expect(big.status).toBe(400);
    expect(big.body.error.code).toBe('RESPONSE_TOO_LARGE');
    expect(big.body.error.message).toMatch(/exceeds 100000 bytes; select fewer columns/);
    // mixed with small ones: every big one 400; every small one served with its own row (a read queued
    // behind a stopped one on the same connection got nothing yet: it is sent again on another)
    const rs = await Promise.all(
      Array.from({ length: 90 }, (_, i) => (i % 15 === 0 ? call('db/clients/select', {}) : call('db/clients/select', { where: { code: `c${i % 60}` } }))),
    );
    const outcomes = new Map<string, number>();
    rs.forEach((r, i) => {
      const k =
        i % 15 === 0
          ? `big ${r.status} ${r.body.error?.code}`
          : r.status === 200
            ? r.body.data[0].note.length === size(i % 60)
              ? 'small 200'
              : 'small WRONG ROW'
            : `small ${r.status} ${r.body.error.code}`;
      outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
    });
    expect(Object.fromEntries(outcomes)).toEqual({ 'big 400 RESPONSE_TOO_LARGE': 6, 'small 200': 84 });
    expect((await call('db/clients/select', { where: { code: 'c1' } })).status).toBe(200);
  });

  it('a write whose returned rows pass the bound is applied, and the 400 says so', async () => {
    const r = await call('db/clients/update', { where: { code: { $like: 'w%' } }, data: { note: 'x'.repeat(20_000) } });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('RESPONSE_TOO_LARGE');
    expect(r.body.error.message).toMatch(/the update was applied \(20 rows updated\), but the rows it returns exceed 100000 bytes/);
    expect(r.body.error.details).toEqual({ applied: true, affected: 20 });
    const [row] = await query<{ n: string }>(db.url, "select count(*) as n from clients where code like 'w%' and length(note) = 20000");
    expect(Number(row!.n)).toBe(20);
    // under the bound the same update answers its rows
    const ok = await call('db/clients/update', { where: { code: 'w1' }, data: { note: 'back' } });
    expect(ok.status).toBe(200);
    expect(ok.body.data).toEqual([{ code: 'w1', note: 'back' }]);
  });

  it('while the Bridge holds its limit of answers, a large answer → 503 + Retry-After and a small one is still served', async () => {
    const gauge = ctx.responses;
    expect(gauge.inflight).toBe(0); // every earlier answer gave its bytes back
    // this tenant's share is taken (as by answers still being sent to slow clients)
    const share = gauge.tenantMax;
    expect(gauge.take('shop\u0000dev', share)).toBe(true);
    try {
      const big = await call('db/clients/select', { where: { code: 'c3' } }); // ~42 KB: under the free 64 KB
      expect(big.status).toBe(200);
      const r = await call('db/clients/select', { where: { code: { $in: ['c1', 'c4'] } } }); // ~80 KB: needs a reservation
      expect(r.status).toBe(503);
      expect(r.body.error.code).toBe('SERVICE_UNAVAILABLE');
      expect(r.headers['retry-after']).toBe('1');
    } finally {
      gauge.give('shop\u0000dev', share);
    }
    expect((await call('db/clients/select', { where: { code: { $in: ['c1', 'c4'] } } })).status).toBe(200);
    expect(gauge.inflight).toBe(0);
  });
});
