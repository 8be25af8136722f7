/**
 * Hub outage: the Hub goes away (kill -9). Bridges keep serving existing keys and releases from memory,
 * `/readyz` stays 200 until the max-stale window (3 s here) has passed and then turns 503 (and keys
 * are refused with the envelope); when the Hub is back the same Bridge processes resync on their own
 * and a revoke made right after is honoured on the very next call.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpClient, startStack, type KeyInfo, type Stack } from '../helpers/fuzz-stack.js';
import { startHub, waitFor } from '../helpers/procs.js';

const MAX_STALE_S = 3;

describe('hub outage', () => {
  let s: Stack;
  let key: KeyInfo;
  let other: KeyInfo;
  let clients: HttpClient[];
  beforeAll(async () => {
    s = await startStack({
      bridges: 0,
      hub: { env: { STK_SYNC_HEARTBEAT_MS: '500' } },
      bridgeEnv: { STK_RELEASE_CACHE_MAX_STALE_SECONDS: String(MAX_STALE_S), STK_SYNC_HEARTBEAT_MS: '500', STK_SYNC_MAX_BACKOFF_MS: '500' },
    });
    key = await s.createKey('outage', ['admin']);
    other = await s.createKey('outage-other', ['reader']);
    await s.startBridge();
    await s.startBridge();
    clients = s.bridges.map((b) => new HttpClient(b.url, 4));
  }, 120_000);
  afterAll(async () => {
    for (const c of clients ?? []) c.close();
    await s?.stop();
  });

  const select = (c: HttpClient, k: KeyInfo) =>
    c.send('POST', '/call', { 'content-type': 'application/json', 'x-santokit-api-key': k.key }, { path: 'db/users/select', params: { limit: 1 } });
  const ready = async (b: { url: string }) =>
    (await fetch(`${b.url}/readyz?project=${s.project}&env=${s.env}`, { headers: { 'x-santokit-service-token': s.hub.serviceToken } })).status;

  it('serves from memory, turns unready after max-stale, resyncs without a restart, and honours a new revoke at once', async () => {
    const pids = s.bridges.map((b) => b.child.pid);
    const ins = await clients[0]!.send(
      'POST',
      '/call',
      { 'content-type': 'application/json', 'x-santokit-api-key': key.key },
      { path: 'db/users/insert', params: { data: { email: 'outage@example.com' } } },
    );
    expect(ins.status, ins.text).toBe(200);

    await s.hub.kill9();
    const down = Date.now();
    // right after: both Bridges answer from memory, and are ready
    let served = 0;
    let calls = 0;
    for (const c of clients) {
      for (const k of [key, other]) {
        const r = await select(c, k);
        calls++;
        if (r.status === 200) served++;
      }
    }
    const readyRightAfter = await Promise.all(s.bridges.map(ready));

    // then /readyz flips to 503 once nothing was heard for max-stale
    const flips: number[] = [];
    for (const b of s.bridges) {
      await waitFor(async () => (await ready(b)) === 503, 20_000, `${b.url} unready after max-stale`);
      flips.push(Date.now() - down);
    }
    const stale = await select(clients[0]!, key);

    // the Hub comes back on the same address and store: the same Bridge processes resync by themselves
    const back = Date.now();
    const h = await startHub({
      port: s.hub.port,
      dbUrl: s.hub.dbUrl,
      secretKey: s.hub.secretKey,
      serviceToken: s.hub.serviceToken,
      env: { STK_SYNC_HEARTBEAT_MS: '500' },
    });
    Object.assign(s.hub, { child: h.child, logFile: h.logFile, logs: h.logs, stop: h.stop, kill9: h.kill9 });
    for (const b of s.bridges) await waitFor(async () => (await ready(b)) === 200, 30_000, `${b.url} ready again`);
    const resyncMs = Date.now() - back;
    for (const c of clients) expect((await select(c, key)).status).toBe(200);

    // a revoke returns once every Bridge acknowledged it: the next call anywhere is refused
    const rv = await s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apikeys/${key.keyId}/revoke`, {});
    expect(rv.status, rv.text).toBe(200);
    const afterRevoke = await Promise.all(clients.map((c) => select(c, key)));
    const stillOther = await Promise.all(clients.map((c) => select(c, other)));

    console.log(
      `outage: hub killed → ${served}/${calls} calls served from memory by ${s.bridges.length} bridges, /readyz ${readyRightAfter.join('/')} right after, 503 after ${flips.map((f) => (f / 1000).toFixed(1) + 's').join('/')} (max-stale ${MAX_STALE_S}s; a key then gets ${stale.status}); hub back → both ready again in ${(resyncMs / 1000).toFixed(1)}s without a restart; revoke → next call ${afterRevoke.map((r) => r.status).join('/')}, other key ${stillOther.map((r) => r.status).join('/')}`,
    );
    expect(served).toBe(calls);
    expect(readyRightAfter).toEqual(s.bridges.map(() => 200));
    // not before the window: the last heartbeat came at most 0.5 s before the kill
    for (const f of flips) expect(f).toBeGreaterThanOrEqual((MAX_STALE_S - 1) * 1000);
    expect(stale.status).toBe(503);
    expect(stale.json?.error?.code).toBe('SERVICE_UNAVAILABLE');
    expect(stale.json?.error?.requestId).toEqual(expect.any(String));
    expect(s.bridges.map((b) => b.child.pid)).toEqual(pids);
    for (const b of s.bridges) expect(b.child.exitCode).toBeNull();
    expect(rv.json.ack?.lagging ?? []).toEqual([]);
    expect(afterRevoke.map((r) => r.status)).toEqual(s.bridges.map(() => 401));
    expect(stillOther.map((r) => r.status)).toEqual(s.bridges.map(() => 200));
  }, 120_000);
});
