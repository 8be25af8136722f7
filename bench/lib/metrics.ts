/**
 * BENCH_ONLY=…,metrics: what `/metrics` costs the Bridge's hot path. Three Bridges of the same build
 * follow the same Hub and serve the same env and database: two with metrics off (the default) and one
 * with STK_METRICS_PORT set, scraped every SCRAPE_MS while it is under load (Prometheus scrapes every
 * 15–60 s; this is harsher). Each round loads all three AT ONCE (one wrk each, same concurrency), pinned
 * to the same CPU (pinTogether), so whatever else the shared machine runs slows them alike (run one
 * after the other, the same config varied 3× between runs there).
 * `on_off_ratio` = median over rounds and concurrencies of (req/s with metrics on) / (req/s off);
 * `cpu_per_req_on_off_ratio` the same of the Bridge process's CPU time per request (user + system,
 * scrapes included); `control_*` the same two ratios between the two Bridges with metrics off — the
 * spread two identical Bridges show here, against which the on/off figures are read.
 */
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { cpuMs } from './procs.js';
import { startBridge, smokeCall, type Hub, type StackPaths } from './stack.js';
import { freePort, log, median, round } from './util.js';
import { wrk, type WrkResult } from './wrk.js';

const SCRAPE_MS = 5000;

/**
 * The Bridges on one CPU (every thread, `taskset -a`): saturated side by side there, the scheduler gives
 * them equal CPU time whatever else runs on the machine. Null (the runs unpinned) without taskset or
 * with one CPU.
 */
function pinTogether(pids: number[]): number | null {
  const n = cpus().length;
  if (n < 2) return null;
  const cpu = n - 1;
  for (const pid of pids) {
    const r = spawnSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' });
    if (r.error || r.status !== 0) return null;
  }
  return cpu;
}

export interface MetricsBench {
  summary: {
    on_off_ratio: number;
    on_off_ratio_c10: number;
    on_off_ratio_c50: number;
    cpu_per_req_on_off_ratio: number;
    /** the same ratios between two Bridges with metrics off: how far apart two identical configs land */
    control_off_off_ratio: number;
    control_cpu_per_req_off_off_ratio: number;
  };
  details: {
    runs: Array<WrkResult & { round: number; c: number; metrics: 'on' | 'off' | 'off2'; cpuUsPerReq: number }>;
    scrapes: number;
    scrapeBytes: number;
    /** the CPU the Bridges were pinned to (null: unpinned) */
    pinnedCpu: number | null;
  };
}

export async function benchMetrics(o: {
  paths: StackPaths;
  hub: Hub;
  apiKey: string;
  callLua: string;
  rounds: number;
  warmupS: number;
  durationS: number;
}): Promise<MetricsBench> {
  const metricsPort = await freePort();
  const off = await startBridge(o.paths, o.hub, 'metrics-off', ['bench']);
  // a second Bridge with metrics off: off2 ÷ off is what two identical Bridges differ by here (the noise)
  const off2 = await startBridge(o.paths, o.hub, 'metrics-off2', ['bench']);
  const on = await startBridge(o.paths, o.hub, 'metrics-on', ['bench'], { STK_METRICS_PORT: String(metricsPort) });
  const all = [
    { b: off, which: 'off' as const },
    { b: off2, which: 'off2' as const },
    { b: on, which: 'on' as const },
  ];
  const scrapeUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  let scrapes = 0;
  let scrapeBytes = 0;
  const scrape = async () => {
    const r = await fetch(scrapeUrl);
    const text = await r.text();
    if (r.status !== 200 || !text.includes('stk_bridge_requests_total')) throw new Error(`scrape of the metrics-on Bridge: ${r.status} ${text.slice(0, 200)}`);
    scrapes++;
    scrapeBytes = text.length;
  };
  try {
    for (const { b } of all) await smokeCall(b.url, o.apiKey);
    const pinned = pinTogether(all.map(({ b }) => b.proc.pid));
    log(pinned === null ? 'metrics: could not pin the Bridges to one CPU (taskset): runs unpinned' : `metrics: the 3 Bridges pinned to CPU ${pinned}`);
    await scrape();
    const runs: MetricsBench['details']['runs'] = [];
    const ratios: Record<number, number[]> = { 10: [], 50: [] };
    const cpuRatios: number[] = [];
    const controlRps: number[] = [];
    const controlCpu: number[] = [];
    const env = { API_KEY: o.apiKey };
    for (let r = 0; r < o.rounds; r++) {
      for (const c of [10, 50]) {
        // all under load at once (one wrk thread each): whatever else the machine does hits them alike
        const load = (seconds: number) => Promise.all(all.map(({ b }) => wrk({ url: b.url, script: o.callLua, connections: c, seconds, threads: 1, env })));
        await load(o.warmupS);
        const timer = setInterval(() => void scrape().catch((e: Error) => log(`!! ${e.message}`)), SCRAPE_MS);
        const cpu0 = all.map(({ b }) => cpuMs(b.proc.pid));
        const res = await load(o.durationS).finally(() => clearInterval(timer));
        const perReq = all.map(({ b }, i) => ((cpuMs(b.proc.pid) - cpu0[i]!) * 1000) / Math.max(1, res[i]!.requests));
        all.forEach(({ which }, i) => {
          const x = res[i]!;
          // a wrong answer stops the section; a request past wrk's 5 s timeout (three saturated Bridges on one CPU) is only counted
          if (x.non2xx) throw new Error(`metrics ${which} c=${c}: ${x.non2xx} non-2xx answers`);
          runs.push({ ...x, round: r + 1, c, metrics: which, cpuUsPerReq: round(perReq[i]!, 1) });
          log(
            `metrics round ${r + 1}/${o.rounds} c=${c} ${which.padEnd(4)} ${x.rps.toFixed(0).padStart(6)} req/s  p50 ${x.p50_ms.toFixed(2)} ms  p99 ${x.p99_ms.toFixed(2)} ms  ${perReq[i]!.toFixed(0)} µs CPU/req${x.errors_socket ? `  ${x.errors_socket} timeouts` : ''}`,
          );
        });
        ratios[c]!.push(res[2]!.rps / res[0]!.rps);
        cpuRatios.push(perReq[2]! / perReq[0]!);
        controlRps.push(res[1]!.rps / res[0]!.rps);
        controlCpu.push(perReq[1]! / perReq[0]!);
      }
    }
    await scrape(); // the families are still there after the load
    const summary = {
      on_off_ratio: round(median([...ratios[10]!, ...ratios[50]!]), 3),
      on_off_ratio_c10: round(median(ratios[10]!), 3),
      on_off_ratio_c50: round(median(ratios[50]!), 3),
      cpu_per_req_on_off_ratio: round(median(cpuRatios), 3),
      control_off_off_ratio: round(median(controlRps), 3),
      control_cpu_per_req_off_off_ratio: round(median(controlCpu), 3),
    };
    log(
      `metrics: req/s with /metrics on ÷ off = ${summary.on_off_ratio} (c=10 ${summary.on_off_ratio_c10}, c=50 ${summary.on_off_ratio_c50}); CPU per request on ÷ off ${summary.cpu_per_req_on_off_ratio}; control (two Bridges with metrics off): req/s ${summary.control_off_off_ratio}, CPU per request ${summary.control_cpu_per_req_off_off_ratio}`,
    );
    return { summary, details: { runs, scrapes, scrapeBytes, pinnedCpu: pinned } };
  } finally {
    await Promise.all(all.map(({ b }) => b.proc.stop()));
  }
}
