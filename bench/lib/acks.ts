import { performance } from 'node:perf_hooks';
import { cpuMs } from './procs.js';
import { createKeyApi, hubResponseTimes, PROJECT, setupEnv, startBridge, type Bridge, type Hub, type StackPaths } from './stack.js';
import { log, percentile, round, sleep } from './util.js';

export interface AckFigures {
  p50_ms: number;
  p99_ms: number;
  /** the Hub process's CPU (user + system) per revoke, request handling included */
  hub_cpu_ms_per_ack: number;
}

/** `POST …/apikeys/<id>/revoke` through the Hub's API; returns the ack the Hub waited for. */
export async function revokeApi(hub: Hub, project: string, env: string, keyId: string): Promise<{ bridges: number; acked: number }> {
  const r = await fetch(`${hub.url}/api/projects/${project}/envs/${env}/apikeys/${keyId}/revoke`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await hub.token()}`, 'content-type': 'application/json' },
    body: '{}',
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`revoke ${keyId}: ${r.status} ${text.slice(0, 300)}`);
  const ack = (JSON.parse(text) as { ack?: { bridges: number; acked: number } | null }).ack;
  if (!ack) throw new Error(`revoke ${keyId}: no ack in ${text.slice(0, 300)}`);
  return ack;
}

/**
 * Issue 18 part 5: revoke acknowledgement latency with 1, 3 and 10 Bridges following one Hub (the
 * Hub answers a revoke once every Bridge it knows has applied it). For each count, `revokes` keys of
 * their own env are revoked one after the other through the Hub's API, with no /call load (the Hub's
 * own cost is what is measured); latency is the Hub's duration of each revoke request (its request
 * log), CPU is the Hub process's CPU over the revokes divided by their number. The Bridge already
 * following the Hub counts as the first of each set.
 */
export async function acksByBridges(o: { paths: StackPaths; hub: Hub; benchUrl: string; schemaDir: string; counts: number[]; revokes: number }) {
  const extra: Bridge[] = [];
  const out: Record<string, AckFigures> = {};
  try {
    for (const n of o.counts) {
      while (extra.length < n - 1) extra.push(await startBridge(o.paths, o.hub, `ack${extra.length + 2}`, ['bench']));
      const env = `acks${n}`;
      await setupEnv(o.hub, env, o.benchUrl, o.schemaDir, false);
      const keys = [];
      for (let i = 0; i < o.revokes; i++) keys.push(await createKeyApi(o.hub, env, `a${i}`));
      const cpu0 = cpuMs(o.hub.proc.pid);
      const wall: number[] = [];
      for (const k of keys) {
        const t = performance.now();
        const ack = await revokeApi(o.hub, PROJECT, env, k.keyId);
        wall.push(performance.now() - t);
        if (ack.bridges !== n || ack.acked !== n) throw new Error(`acks with ${n} Bridges: a revoke was acked by ${ack.acked}/${ack.bridges}`);
      }
      const cpu = (cpuMs(o.hub.proc.pid) - cpu0) / keys.length;
      await sleep(300); // the Hub writes its request log in batches (every 50 ms)
      const hubMs = hubResponseTimes(o.hub, new RegExp(`/envs/${env}/apikeys/[^/]+/revoke$`));
      const ms = hubMs.length === keys.length ? hubMs : wall;
      out[String(n)] = { p50_ms: round(percentile(ms, 50), 2), p99_ms: round(percentile(ms, 99), 2), hub_cpu_ms_per_ack: round(cpu, 2) };
      log(
        `acks: ${n} Bridge${n > 1 ? 's' : ''}: revoke ack p50 ${out[String(n)]!.p50_ms} ms, p99 ${out[String(n)]!.p99_ms} ms (${hubMs.length === keys.length ? 'Hub request log' : 'client wall clock'}), Hub CPU ${out[String(n)]!.hub_cpu_ms_per_ack} ms per ack`,
      );
    }
  } finally {
    await Promise.all(extra.map((b) => b.proc.stop()));
  }
  // least-squares slope of the Hub's CPU per ack against the number of Bridges, and the step slopes
  const xs = o.counts;
  const ys = xs.map((n) => out[String(n)]!.hub_cpu_ms_per_ack);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  const slope = xs.reduce((a, x, i) => a + (x - mx) * (ys[i]! - my), 0) / xs.reduce((a, x) => a + (x - mx) ** 2, 0);
  const steps = xs.slice(1).map((x, i) => round((ys[i + 1]! - ys[i]!) / (x - xs[i]!), 3));
  const p50s = xs.map((n) => out[String(n)]!.p50_ms);
  const latSlope =
    xs.reduce((a, x, i) => a + (x - mx) * (p50s[i]! - p50s.reduce((u, v) => u + v, 0) / p50s.length), 0) / xs.reduce((a, x) => a + (x - mx) ** 2, 0);
  return { ...out, slope_hub_cpu_ms_per_bridge: round(slope, 3), step_slopes_hub_cpu_ms_per_bridge: steps, slope_p50_ms_per_bridge: round(latSlope, 3) };
}
