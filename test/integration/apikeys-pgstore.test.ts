import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHub, waitFor, type Proc } from '../helpers/procs.js';
import { createTestDatabase } from '../helpers/pg.js';
import { rememberSecret } from '../helpers/secrets.js';
import { call, connectedBridges, startStack, type Hub, type Stack } from './apikeys.setup.js';

/**
 * Two Hubs on one PostgreSQL store: a change made through either reaches Bridges following the
 * other (LISTEN/NOTIFY, with polling as the fallback), and a Bridge given both Hub URLs fails over.
 */
const NO_POLL = { STK_SYNC_POLL_MS: '600000' };

describe('API keys with two Hubs on a PostgreSQL store', () => {
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  let s: Stack;
  let hubA: Hub;
  let hubB: Hub;
  let onlyA: Proc;
  let both: Proc;
  const keysBase = () => `/api/projects/${s.project}/envs/${s.env}/apikeys`;
  const apiOn = async (hub: Hub, method: string, path: string, body?: unknown) => {
    const r = await fetch(hub.url + path, {
      method,
      headers: { authorization: `Bearer ${s.owner}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = (await r.json()) as any;
    if (typeof json?.apiKey === 'string') rememberSecret('api-key', json.apiKey);
    return { status: r.status, json };
  };

  beforeAll(async () => {
    store = await createTestDatabase('hubstore');
    // polling effectively off: cross-Hub changes must arrive through LISTEN/NOTIFY
    s = await startStack({ bridges: 0, hub: { dbUrl: store.url, env: NO_POLL } });
    hubA = s.hub;
    hubB = await startHub({ dbUrl: store.url, secretKey: hubA.secretKey, serviceToken: hubA.serviceToken, env: NO_POLL });
    onlyA = await s.startBridge({ STK_SYNC_MAX_BACKOFF_MS: '500' });
    both = await s.startBridge({ STK_HUB_URL: `${hubA.url},${hubB.url}`, STK_SYNC_MAX_BACKOFF_MS: '500' });
    await waitFor(async () => (await connectedBridges(hubA)).length === 2, 15_000, 'both bridges on hub A');
  });
  afterAll(async () => {
    await hubB?.stop();
    await s?.stop();
    await store?.drop();
  });

  it('a key created through Hub B works on Bridges that follow Hub A; a revoke through Hub B reaches them', async () => {
    const c = await apiOn(hubB, 'POST', keysBase(), { name: 'cross', roles: ['reader'] });
    expect(c.status).toBe(201);
    // no Bridge follows Hub B, yet it waits for the two that follow Hub A (their acks come back through stk_acks)
    expect(c.json.ack).toEqual({ bridges: 2, acked: 2, lagging: [] });
    const key = c.json.apiKey as string;
    await waitFor(async () => (await call(onlyA, key)).status === 200 && (await call(both, key)).status === 200, 3000, 'key on hub-A bridges');
    // usage reported to Hub A is visible through Hub B (upserts on PostgreSQL)
    await waitFor(async () => (await apiOn(hubB, 'POST', `${keysBase()}/cross/revoke`, { dryRun: true })).json.requestsLast60m >= 2, 10_000, 'usage report');
    const r = await apiOn(hubB, 'POST', `${keysBase()}/cross/revoke`, {});
    expect(r.status).toBe(200);
    await waitFor(async () => (await call(onlyA, key)).status === 401 && (await call(both, key)).status === 401, 3000, 'revoke on hub-A bridges');
  });

  it('Hub A down: a Bridge with both URLs fails over to Hub B, B waits for it on revoke and names the one that cannot follow', async () => {
    const c = await apiOn(hubA, 'POST', keysBase(), { name: 'failover', roles: ['reader'] });
    expect(c.json.ack).toEqual({ bridges: 2, acked: 2, lagging: [] });
    const key = c.json.apiKey as string;
    const { port, dbUrl, secretKey, serviceToken } = hubA;
    await hubA.stop();
    await waitFor(async () => (await connectedBridges(hubB)).length === 1, 15_000, 'failover to hub B');
    const r = await apiOn(hubB, 'POST', `${keysBase()}/failover/revoke`, {});
    // the Bridge that only knows Hub A cannot hear about it yet: it serves its last state until
    // max-stale, so Hub B (which still sees it as connected until its presence goes stale) names it
    expect(r.json.ack).toEqual({ bridges: 2, acked: 1, lagging: [onlyA.env.STK_BRIDGE_ID] });
    expect((await call(both, key)).status).toBe(401);
    expect((await call(onlyA, key)).status).toBe(200);
    hubA = await startHub({ port, dbUrl, secretKey, serviceToken, env: NO_POLL });
    s.hub = hubA;
    // it resumes from its cursor and applies the revoke it missed
    await waitFor(async () => (await call(onlyA, key)).status === 401, 15_000, 'resume after hub A is back');
  });
});
