import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHub, waitFor, type Proc } from '../helpers/procs.js';
import { runStk } from '../helpers/cli.js';
import { createTestDatabase } from '../helpers/pg.js';
import { rememberSecret } from '../helpers/secrets.js';
import { call, connectedBridges, EXAMPLE_DIR, startStack, type Hub, type Stack } from '../integration/apikeys.setup.js';

/**
 * Scale-out (issue 9): two Hub processes on one PostgreSQL store, three Bridge processes, load on every
 * Bridge while 50 revokes alternate between the Hubs. A revoke returns only once every Bridge, whichever
 * Hub it follows, applied it: not one request sent after it returned is accepted. Then Hub A is killed
 * (-9): its Bridges resume on Hub B, and revokes through B (during and after the failover) are honoured
 * on all three. Apply and rollback wait for the Bridges the same way: a /call right after the command
 * returns sees the new release on every Bridge.
 */
const HUB_ENV = { STK_SYNC_HEARTBEAT_MS: '1000', STK_REVOKE_ACK_TIMEOUT_MS: '5000' };
const BRIDGE_ENV = { STK_SYNC_MAX_BACKOFF_MS: '500', STK_SYNC_HEARTBEAT_MS: '1000' };
const N = 50;
const ALL_ACKED = { bridges: 3, acked: 3, lagging: [] };

describe('scale-out: 2 Hubs on one PostgreSQL store, 3 Bridges', () => {
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  let s: Stack;
  let hubA: Hub;
  let hubB: Hub;
  let bridges: Proc[];
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
  const createKey = async (hub: Hub, name: string) => {
    const r = await apiOn(hub, 'POST', keysBase(), { name, roles: ['reader'], rateLimitPerMin: 1_000_000 });
    expect(r.status, JSON.stringify(r.json)).toBe(201);
    expect(r.json.ack).toEqual(ALL_ACKED);
    return { name, keyId: r.json.keyId as string, key: r.json.apiKey as string };
  };
  const stkOn = (hub: Hub, args: string[]) => runStk(args, { env: { STK_CONFIG_DIR: s.cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: s.owner } });
  const statuses = async (key: string) => Promise.all(bridges.map(async (b) => (await call(b, key)).status));

  beforeAll(async () => {
    store = await createTestDatabase('scaleout');
    s = await startStack({ bridges: 0, hub: { dbUrl: store.url, env: HUB_ENV } });
    hubA = s.hub;
    hubB = await startHub({ dbUrl: store.url, secretKey: hubA.secretKey, serviceToken: hubA.serviceToken, env: HUB_ENV });
    // two Bridges prefer Hub A, one prefers Hub B; each lists both
    bridges = [
      await s.startBridge({ ...BRIDGE_ENV, STK_HUB_URL: `${hubA.url},${hubB.url}` }),
      await s.startBridge({ ...BRIDGE_ENV, STK_HUB_URL: `${hubA.url},${hubB.url}` }),
      await s.startBridge({ ...BRIDGE_ENV, STK_HUB_URL: `${hubB.url},${hubA.url}` }),
    ];
    await waitFor(async () => (await connectedBridges(hubA)).length === 2 && (await connectedBridges(hubB)).length === 1, 20_000, 'bridges on both hubs');
  });
  afterAll(async () => {
    await hubB?.stop();
    await s?.stop();
    await store?.drop();
  });

  it(`${N} revokes alternating between the Hubs under load on every Bridge: 0 requests accepted after a revoke returned`, async () => {
    const keys = [];
    for (let i = 0; i < N; i++) keys.push(await createKey(i % 2 ? hubB : hubA, `load-${i}`));
    let requests = 0;
    let acceptedAfter = 0;
    let checkedAfter = 0;
    const ackMs: number[] = [];
    for (const [i, k] of keys.entries()) {
      const hub = i % 2 ? hubB : hubA;
      let stop = false;
      let returnedAt = Infinity;
      const seen: Array<{ sentAt: number; status: number; bridge: number }> = [];
      const accepted = new Set<number>();
      let warm!: () => void;
      const warmed = new Promise<void>((r) => (warm = r));
      const loop = async (b: Proc, n: number) => {
        let after = 0;
        while (!stop || after < 2) {
          const sentAt = performance.now();
          const r = await call(b, k.key);
          seen.push({ sentAt, status: r.status, bridge: n });
          if (sentAt > returnedAt) after++;
          if (r.status === 200 && accepted.add(n).size === bridges.length) warm();
        }
      };
      const loops = bridges.map((b, n) => loop(b, n));
      await warmed; // the key is accepted on every Bridge under load: now revoke it
      if (i % 10 === 0) {
        // now and then through the real CLI, by name or id
        const r = await stkOn(hub, ['apikey', 'revoke', '--project', s.project, '--env', s.env, '--key-id', i % 20 ? k.keyId : k.name]);
        returnedAt = performance.now();
        expect(r.code, r.output).toBe(0);
        expect(r.output).toContain('Bridges: 3/3 confirmed');
      } else {
        const t0 = performance.now();
        const r = await apiOn(hub, 'POST', `${keysBase()}/${i % 3 ? k.keyId : k.name}/revoke`, {});
        returnedAt = performance.now();
        ackMs.push(returnedAt - t0);
        expect(r.status, JSON.stringify(r.json)).toBe(200);
        expect(r.json.ack, `revoke #${i} via hub ${i % 2 ? 'B' : 'A'}`).toEqual(ALL_ACKED);
      }
      stop = true;
      // the very next request on every Bridge
      expect(await statuses(k.key), `revoke #${i}`).toEqual([401, 401, 401]);
      await Promise.all(loops);
      const late = seen.filter((x) => x.sentAt > returnedAt);
      acceptedAfter += late.filter((x) => x.status !== 401).length;
      checkedAfter += late.length + 3;
      requests += seen.length + 3;
    }
    ackMs.sort((a, b) => a - b);
    const q = (p: number) => ackMs[Math.min(ackMs.length - 1, Math.floor(p * ackMs.length))]!.toFixed(1);
    console.log(
      `scale-out: ${N} revokes via 2 Hubs, 3 Bridges, ${requests} requests, ${acceptedAfter} accepted after revoke returned (${checkedAfter} sent after), ack p50 ${q(0.5)} ms, p99 ${q(0.99)} ms`,
    );
    expect(acceptedAfter).toBe(0);
    expect(checkedAfter).toBeGreaterThanOrEqual(N * 9);
  }, 180_000);

  it('apply, rollback and connection set through either Hub: every Bridge serves the change when the command returns; a lagging Bridge is named and apply still exits 0', async () => {
    const reader = await createKey(hubA, 'release-reader');
    expect(await statuses(reader.key)).toEqual([200, 200, 200]);
    const v1 = (await apiOn(hubA, 'GET', `/api/projects/${s.project}/envs/${s.env}/releases/current`)).json.releaseId as string;
    // v2: the reader role loses users.select
    const dir = mkdtempSync(join(tmpdir(), 'stk-v2-'));
    cpSync(EXAMPLE_DIR, dir, { recursive: true });
    const perms = join(dir, 'config/permissions.yaml');
    const text = readFileSync(perms, 'utf8');
    const v2text = text.replace('      - roles: [reader]\n        columns: [id, email, name, created_at]\n', '');
    expect(v2text).not.toBe(text);
    writeFileSync(perms, v2text);
    const scope = ['--project', s.project, '--env', s.env];

    const applied = await stkOn(hubB, ['apply', ...scope, '--dir', dir]);
    expect(applied.code, applied.output).toBe(0);
    expect(applied.stderr).toContain('Bridges: 3/3 confirmed');
    expect(await statuses(reader.key)).toEqual([403, 403, 403]);
    const back = await stkOn(hubA, ['release', 'rollback', ...scope, '--to-release-id', v1]);
    expect(back.code, back.output).toBe(0);
    expect(back.stderr).toContain('Bridges: 3/3 confirmed');
    expect(await statuses(reader.key)).toEqual([200, 200, 200]);

    // a frozen Bridge: apply is committed and exits 0, naming the Bridge that did not load it
    const frozen = bridges[2]!;
    frozen.child.kill('SIGSTOP');
    let lag;
    try {
      lag = await stkOn(hubA, ['apply', ...scope, '--dir', dir]);
    } finally {
      frozen.child.kill('SIGCONT');
    }
    expect(lag.code, lag.output).toBe(0);
    expect(lag.stderr).toContain(`1 of 3 Bridge(s) did not load it in time: ${frozen.env.STK_BRIDGE_ID}`);
    expect((await statuses(reader.key)).slice(0, 2)).toEqual([403, 403]);
    await waitFor(async () => (await call(frozen, reader.key)).status === 403, 15_000, 'the frozen bridge to catch up');
    const restored = await stkOn(hubB, ['release', 'rollback', ...scope, '--to-release-id', v1]);
    expect(restored.code, restored.output).toBe(0);
    expect(await statuses(reader.key)).toEqual([200, 200, 200]);
    // a connection change waits for the Bridges the same way
    const conn = await runStk(['connections', 'set', ...scope, '--name', 'main', '--db-url-stdin'], {
      env: { STK_CONFIG_DIR: s.cfg, STK_HUB_URL: hubA.url, STK_AUTH_TOKEN: s.owner },
      input: s.dbUrl,
    });
    expect(conn.code, conn.output).toBe(0);
    expect(conn.stderr).toContain('Bridges: 3/3 confirmed');
    expect(await statuses(reader.key)).toEqual([200, 200, 200]);
  });

  it('kill -9 Hub A: its Bridges resume on Hub B; revokes through B during and after the failover are honoured on all 3', async () => {
    const during = await createKey(hubB, 'failover-during');
    const after = await createKey(hubB, 'failover-after');
    expect(await statuses(during.key)).toEqual([200, 200, 200]);
    await hubA.kill9();
    // at once: Hub B still counts Hub A's Bridges (their presence is fresh) and waits until they resumed on it
    const r = await apiOn(hubB, 'POST', `${keysBase()}/${during.keyId}/revoke`, {});
    expect(r.json.ack).toEqual(ALL_ACKED);
    expect(await statuses(during.key)).toEqual([401, 401, 401]);
    await waitFor(async () => (await connectedBridges(hubB)).length === 3, 20_000, 'every bridge on hub B');
    const cli = await stkOn(hubB, ['apikey', 'revoke', '--project', s.project, '--env', s.env, '--key-id', after.name]);
    expect(cli.code, cli.output).toBe(0);
    expect(cli.output).toContain('Bridges: 3/3 confirmed');
    expect(await statuses(after.key)).toEqual([401, 401, 401]);
    // nothing lost: new changes keep reaching every Bridge
    const fresh = await createKey(hubB, 'after-failover');
    expect(await statuses(fresh.key)).toEqual([200, 200, 200]);
    console.log('scale-out failover: hub A killed (-9), 2 Bridges resumed on hub B, revokes during and after honoured on 3/3');
  });
});
