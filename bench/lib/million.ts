import { performance } from 'node:perf_hooks';
import { revokeApi } from './acks.js';
import { bulkInsertKeys } from './bulk-keys.js';
import { cpuMs } from './procs.js';
import { createKeyCli, hubResponseTimes, setupEnv, smokeCall, startBridge, startHub, type Bridge, type Hub, type StackPaths } from './stack.js';
import { log, percentile, round, sleep } from './util.js';

/**
 * Issue 18 part 3, the setup and the parts that are not throughput: a Hub whose store holds 1,000,000
 * keys (the bench key + 999,999 bulk-inserted, 100 per env over 10,000 envs of a project `bulk`), and
 * 3 Bridges following it. Measures each Bridge's start-up until its snapshot is loaded (plain
 * /readyz: synced), the Hub's CPU for serving those snapshots, and — after the caller's throughput
 * rounds — revokes of bulk keys acked by the 3 Bridges.
 */
export async function startMillion(o: { paths: StackPaths; benchUrl: string; schemaDir: string; keys: number; bridges: number }) {
  const hub = await startHub(o.paths, 'm', 'info');
  await setupEnv(hub, 'bench', o.benchUrl, o.schemaDir, true);
  const key = await createKeyCli(hub, 'bench', 'bench');
  const sample: Array<{ env: string; keyId: string }> = [];
  const t0 = performance.now();
  const bulk = bulkInsertKeys({ dbFile: hub.dbFile, secretKeyHex: hub.secretKey, count: o.keys - 1, sample, sampleEvery: Math.floor(o.keys / 200) });
  log(`million: ${bulk + 1} keys in Hub M's store (bulk insert ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  const bridges: Bridge[] = [];
  const snapshotS: number[] = [];
  const hubCpuMsPerSnapshot: number[] = [];
  for (let i = 1; i <= o.bridges; i++) {
    const cpu0 = cpuMs(hub.proc.pid);
    const t = performance.now();
    // it listens after at most its initial-sync wait (10 s) whether or not the snapshot is in; /readyz (no
    // tenant) answers 200 once it is (synced)
    const b = await startBridge(o.paths, hub, `m${i}`, []);
    for (;;) {
      const r = await fetch(`${b.url}/readyz`).catch(() => null);
      if (r?.ok) break;
      if (performance.now() - t > 600_000) throw new Error(`Bridge m${i} did not load its snapshot of ${o.keys} keys within 600 s`);
      await sleep(50);
    }
    snapshotS.push((performance.now() - t) / 1000);
    hubCpuMsPerSnapshot.push(cpuMs(hub.proc.pid) - cpu0);
    await smokeCall(b.url, key.apiKey);
    bridges.push(b);
    log(`million: Bridge m${i} loaded the snapshot in ${snapshotS.at(-1)!.toFixed(1)} s (Hub CPU ${hubCpuMsPerSnapshot.at(-1)!.toFixed(0)} ms)`);
  }
  return { hub, key, bridges, sample, snapshotS, hubCpuMsPerSnapshot };
}

/** Revokes `n` bulk keys (spread over the envs) one after the other; the Hub answers when all Bridges acked. */
export async function millionRevokes(hub: Hub, sample: Array<{ env: string; keyId: string }>, bridges: number, n: number) {
  const wall: number[] = [];
  const cpu0 = cpuMs(hub.proc.pid);
  for (const k of sample.slice(0, n)) {
    const t = performance.now();
    const ack = await revokeApi(hub, 'bulk', k.env, k.keyId);
    wall.push(performance.now() - t);
    if (ack.bridges !== bridges || ack.acked !== bridges) throw new Error(`million: a revoke was acked by ${ack.acked}/${ack.bridges} Bridges`);
  }
  const cpu = (cpuMs(hub.proc.pid) - cpu0) / Math.max(1, wall.length);
  await sleep(300); // the Hub writes its request log in batches (every 50 ms)
  const hubMs = hubResponseTimes(hub, /\/projects\/bulk\/envs\/[^/]+\/apikeys\/[^/]+\/revoke$/);
  const ms = hubMs.length === wall.length ? hubMs : wall;
  return {
    revokes: wall.length,
    p50_ms: round(percentile(ms, 50), 1),
    p99_ms: round(percentile(ms, 99), 1),
    source: hubMs.length === wall.length ? 'hub-response-time' : 'client-wall-clock',
    hubCpuMsPerRevoke: round(cpu, 2),
  };
}
