import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { startHub, waitFor, type Proc } from '../helpers/procs.js';
import { rememberSecret } from '../helpers/secrets.js';
import { call, connectedBridges, startStack, type Stack } from '../integration/apikeys.setup.js';

/**
 * Service token rotation (docs/production.md): the Hub accepts a list
 * (`STK_SERVICE_TOKENS=old,new`), Bridges switch one by one, then the old token is removed. A Bridge
 * still on the old token gets 401 on /internal/*, logs a clear error (never a token) and keeps serving
 * what it had; a Bridge on the new token keeps syncing.
 */
describe('service token rotation', () => {
  const oldToken = rememberSecret('service-token', randomBytes(24).toString('base64url'));
  const newToken = rememberSecret('service-token', randomBytes(24).toString('base64url'));
  let s: Stack;
  let onOld: Proc;
  let onNew: Proc;
  const keysBase = () => `/api/projects/${s.project}/envs/${s.env}/apikeys`;
  const internal = (token: string) => fetch(`${s.hub.url}/internal/sync/snapshot`, { headers: { 'x-santokit-service-token': token } });

  beforeAll(async () => {
    s = await startStack({ bridges: 0, hub: { serviceToken: newToken, env: { STK_SERVICE_TOKENS: `${oldToken},${newToken}` } } });
    onOld = await s.startBridge({ STK_SERVICE_TOKEN: oldToken, STK_SYNC_MAX_BACKOFF_MS: '500' });
    onNew = await s.startBridge({ STK_SERVICE_TOKEN: newToken, STK_SYNC_MAX_BACKOFF_MS: '500' });
    await waitFor(async () => (await connectedBridges(s.hub)).length === 2, 20_000, 'both bridges connected');
  });
  afterAll(async () => {
    await s?.stop();
  });

  it('Hub with [old, new]: a Bridge on each token syncs', async () => {
    expect((await internal(oldToken)).status).toBe(200);
    expect((await internal(newToken)).status).toBe(200);
    const c = await s.api('POST', keysBase(), { name: 'before-rotation', roles: ['reader'] });
    expect(c.status, c.text).toBe(201);
    expect(c.json.ack).toEqual({ bridges: 2, acked: 2, lagging: [] });
    for (const b of [onOld, onNew]) expect((await call(b, c.json.apiKey)).status).toBe(200);
  });

  it('Hub restarted with [new]: the old-token Bridge gets 401 and says so (no token in any log); the new-token Bridge keeps working', async () => {
    const key = (await s.api('POST', keysBase(), { name: 'across-restart', roles: ['reader'] })).json.apiKey as string;
    const { port, dbUrl, secretKey } = s.hub;
    await s.hub.stop();
    s.hub = await startHub({ port, dbUrl, secretKey, serviceToken: newToken, env: { STK_SERVICE_TOKENS: newToken } });
    expect((await internal(oldToken)).status).toBe(401);
    expect((await internal(newToken)).status).toBe(200);

    await waitFor(async () => (await connectedBridges(s.hub)).join() === onNew.env.STK_BRIDGE_ID, 20_000, 'only the new-token bridge reconnects');
    await waitFor(async () => onOld.logs().includes("the Hub rejected this Bridge's service token (401)"), 20_000, 'the old-token bridge to log the 401');

    // the new-token Bridge follows changes made after the restart
    const c = await s.api('POST', keysBase(), { name: 'after-rotation', roles: ['reader'] });
    expect(c.status, c.text).toBe(201);
    expect(c.json.ack.lagging).not.toContain(onNew.env.STK_BRIDGE_ID);
    expect((await call(onNew, c.json.apiKey)).status).toBe(200);
    const r = await s.api('POST', `${keysBase()}/after-rotation/revoke`, {});
    expect(r.status).toBe(200);
    // the old-token Bridge is named when the Hub still counts it (its presence is fresh), never the new one
    expect(r.json.ack.lagging.filter((id: string) => id !== onOld.env.STK_BRIDGE_ID)).toEqual([]);
    expect((await call(onNew, c.json.apiKey)).status).toBe(401);
    // the old-token Bridge serves what it had (until max-stale): the rotation must finish before that
    expect((await call(onOld, key)).status).toBe(200);

    for (const p of [onOld, onNew, s.hub]) {
      const log = readFileSync(p.logFile, 'utf8');
      expect(log.includes(oldToken), `${p.name} log holds the old token`).toBe(false);
      expect(log.includes(newToken), `${p.name} log holds the new token`).toBe(false);
    }
    console.log(
      'service token rotation: Hub [old,new] → 2/2 Bridges synced; Hub [new] → old-token Bridge 401 (logged, no token in logs), new-token Bridge synced',
    );
  });
});
