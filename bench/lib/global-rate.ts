import { Agent, request } from 'node:http';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { formatProfile, summarizeProfile } from './profile.js';
import { ulidTime } from '../../src/common/ulid.js';
import { cpuMs, run } from './procs.js';
import { PROJECT, smokeCall, startBridge, type Bridge, type Hub, type StackPaths } from './stack.js';
import { log, median, round, sleep } from './util.js';
import { wrk, type WrkResult } from './wrk.js';

/**
 * Global per-key rate limits (issue 16 part 1), `BENCH_ONLY=globalrate`:
 * - accuracy: 3 Bridges on one Redis (scripts/test-redis.sh on its own port), a round-robin client,
 *   keys limited to 60, 600 and 6,000 requests/min, each loaded at 2× its limit (paced, open loop) at
 *   the same time for `seconds` (120). Accepted requests per 60-s window, for every window that starts
 *   on a 5-s boundary (the Bridges' sub-windows) and lies inside the run, against the limit; the worst
 *   relative error is `worst_window_error` (target ≤ 0.05).
 * - overhead: a key at ≤ 10 % of its limit, wrk c=10 on Bridges with Redis and on Bridges without
 *   (otherwise identical; two processes a side, one pair per round), slices in ABBA order, same run:
 *   a round's throughput with / without (sum of its slices) and its CPU per request; the medians over
 *   rounds are `overhead_ratio` (1 = none; target ≥ 0.95, the noise of this shared machine) and
 *   `overhead_cpu_ratio`, over max(4, BENCH_ROUNDS) rounds. The store's commands during the Redis
 *   slices are counted (INFO commandstats). BENCH_GLOBALRATE_CONTROL=1 adds the same comparison between
 *   the two Bridges without Redis (`control_ratio`): the noise floor of the figure on this machine.
 */

const LIMITS = [60, 600, 6000];
const WINDOW_MS = 60_000;
const STEP_MS = 5000;

interface Sent {
  at: number;
  status: number;
}

async function createKey(hub: Hub, env: string, name: string, rateLimitPerMin: number): Promise<string> {
  const r = await fetch(`${hub.url}/api/projects/${PROJECT}/envs/${env}/apikeys`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${await hub.token()}` },
    body: JSON.stringify({ name, roles: ['reader'], rateLimitPerMin }),
  });
  if (r.status !== 201) throw new Error(`apikey create ${name}: ${r.status} ${await r.text()}`);
  return ((await r.json()) as { apiKey: string }).apiKey;
}

/**
 * The paced client's connections: at most 32 per Bridge, kept alive, closed after the run (fetch's pool
 * is unbounded: on a loaded machine it passed the Bridge's 256 connections per address, which answers
 * 503, and its idle sockets then counted against wrk's).
 */
const agent = new Agent({ keepAlive: true, maxSockets: 32 });
const BODY = JSON.stringify({ path: 'db/users/select', params: { limit: 1 } });

function call(url: string, apiKey: string): Promise<Sent> {
  return new Promise((resolve) => {
    const req = request(
      `${url}/call`,
      { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(BODY), 'x-santokit-api-key': apiKey } },
      (res) => {
        // when the Bridge took the request (its request id is a ULID made on arrival, in the same turn
        // as the rate-limit decision): a loaded client or socket queue must not move requests between windows
        const at = ulidTime(String(res.headers['x-request-id'] ?? ''));
        res.resume();
        res.on('end', () => resolve({ at, status: res.statusCode ?? 0 }));
        res.on('error', () => resolve({ at, status: 0 }));
      },
    );
    req.on('error', () => resolve({ at: NaN, status: 0 }));
    req.end(BODY);
  });
}

/** `perMin` requests per minute, evenly paced, round-robin over `urls`, for `ms`. */
async function paced(urls: string[], apiKey: string, perMin: number, ms: number, t0: number): Promise<Sent[]> {
  const out: Array<Promise<Sent>> = [];
  const gap = WINDOW_MS / perMin;
  for (let i = 0; ; i++) {
    const due = t0 + i * gap;
    if (due >= t0 + ms) break;
    const wait = due - Date.now();
    if (wait > 0) await sleep(wait);
    const sentAt = Date.now();
    out.push(call(urls[i % urls.length]!, apiKey).then((r) => (Number.isFinite(r.at) ? r : { ...r, at: sentAt })));
  }
  return Promise.all(out);
}

/** Accepted per 60-s window starting at each 5-s boundary inside the run (by the Bridges' clock). */
function windows(sent: Sent[]): Array<{ start: number; accepted: number }> {
  const from = Math.min(...sent.map((s) => s.at));
  const to = Math.max(...sent.map((s) => s.at)) + 1;
  const ok = sent.filter((s) => s.status === 200).map((s) => s.at);
  const out = [];
  for (let start = Math.ceil(from / STEP_MS) * STEP_MS; start + WINDOW_MS <= to; start += STEP_MS) {
    out.push({ start, accepted: ok.filter((t) => t >= start && t < start + WINDOW_MS).length });
  }
  return out;
}

export interface GlobalRateResult {
  summary: { worst_window_error: number; overhead_ratio: number; overhead_cpu_ratio: number; p50_ratio: number; control_ratio: number | null };
  details: Record<string, unknown>;
}

export async function globalRate(o: {
  paths: StackPaths;
  hub: Hub;
  env: string;
  callLua: string;
  seconds: number;
  overheadSeconds: number;
  rounds: number;
}): Promise<GlobalRateResult> {
  const redisEnv = { ...process.env, STK_TEST_REDIS_PORT: process.env.BENCH_REDIS_PORT ?? '56389', STK_TEST_REDIS_DIR: '/tmp/stk-bench-redis' };
  const script = join(o.paths.root, 'scripts/test-redis.sh');
  const started = await run('bash', [script, 'start'], { env: redisEnv });
  if (started.code !== 0) throw new Error(`scripts/test-redis.sh start failed: ${started.stderr.slice(-500)}`);
  const redisUrl = started.stdout.trim();
  const bridges: Bridge[] = [];
  const stops: Bridge[] = [];
  try {
    // log level warn like every bench Bridge (an access line per request would be most of the difference)
    const env = { STK_RATE_LIMIT_REDIS_URL: redisUrl };
    // BENCH_GLOBALRATE_PROFILE=1: rate1 and rate-off run under --cpu-prof; their first overhead slices are
    // compared function by function (bench/out/profile-globalrate.txt)
    const profileDir = process.env.BENCH_GLOBALRATE_PROFILE === '1' ? join(dirname(o.paths.logDir), 'profile-globalrate') : null;
    if (profileDir) rmSync(profileDir, { recursive: true, force: true });
    const prof = (name: string): string[] => (profileDir ? ['--cpu-prof', `--cpu-prof-dir=${join(profileDir, name)}`] : []);
    for (let i = 1; i <= 3; i++) bridges.push(await startBridge(o.paths, o.hub, `rate${i}`, [o.env], env, i === 1 ? prof('on') : []));
    // two Bridges without Redis, so the overhead compares two processes on each side (one process's JIT
    // and memory layout alone move its throughput a few %)
    const offs = [await startBridge(o.paths, o.hub, 'rate-off', [o.env], {}, prof('off')), await startBridge(o.paths, o.hub, 'rate-off2', [o.env])];
    stops.push(...bridges, ...offs);
    const keys = await Promise.all(LIMITS.map((l) => createKey(o.hub, o.env, `rate-${l}`, l)));
    for (const b of [...bridges, ...offs]) await smokeCall(b.url, keys[2]!);
    // the Hub's heartbeat (10 s) tells every Bridge that there are 5 of them
    await sleep(11_000);
    for (const b of bridges) if (/the Redis store does not answer/.test(b.proc.logs())) throw new Error(`${b.name}: Redis does not answer (see its log)`);

    // accuracy: the three keys at 2× at the same time, on the 3 Redis Bridges
    const urls = bridges.map((b) => b.url);
    const ms = o.seconds * 1000;
    log(`global rate: 3 Bridges + Redis, keys at ${LIMITS.join(', ')}/min loaded at 2× for ${o.seconds} s (round-robin, paced)…`);
    const t0 = Date.now() + 100;
    // the Bridges without Redis get the same traffic per Bridge meanwhile (refused on their own), so both
    // sides of the overhead comparison below have answered the same mix of 200s and 429s: a Bridge that
    // has answered refusals runs a few % slower afterwards than one that never did (V8's inline caches
    // see more shapes), which alone read as an "overhead" of 0.90–0.92 before
    const offUrls = offs.map((b) => b.url);
    const [sent] = await Promise.all([
      Promise.all(LIMITS.map((l, i) => paced(urls, keys[i]!, 2 * l, ms, t0))),
      Promise.all(LIMITS.map((l, i) => paced(offUrls, keys[i]!, (2 * l * offUrls.length) / urls.length, ms, t0))),
    ]);
    const perKey = LIMITS.map((limit, i) => {
      const ws = windows(sent[i]!);
      const errs = ws.map((w) => Math.abs(w.accepted - limit) / limit);
      const statuses: Record<string, number> = {};
      for (const s of sent[i]!) statuses[s.status] = (statuses[s.status] ?? 0) + 1;
      return {
        limit,
        sent: sent[i]!.length,
        statuses,
        windows: ws.map((w) => w.accepted),
        min: Math.min(...ws.map((w) => w.accepted)),
        max: Math.max(...ws.map((w) => w.accepted)),
        worst_error: round(Math.max(...errs), 4),
      };
    });
    for (const k of perKey) {
      log(
        `  ${k.limit}/min: ${k.windows.length} windows of 60 s, accepted ${k.min}…${k.max} (worst error ${(k.worst_error * 100).toFixed(2)} %), statuses ${JSON.stringify(k.statuses)}`,
      );
    }
    const worst = Math.max(...perKey.map((k) => k.worst_error));
    agent.destroy();

    // overhead: a key far under its limit, Redis on vs off, ABBA slices
    // the highest limit a key can have (10,000,000/min ≈ 167,000 req/s): this machine's load is a few % of it
    const limit = 10_000_000;
    const fast = await createKey(o.hub, o.env, 'rate-overhead', limit);
    const onSide = [bridges[0]!, bridges[1]!];
    for (const b of [...onSide, ...offs]) await smokeCall(b.url, fast);
    const port = new URL(redisUrl).port;
    const storeCalls = async (): Promise<number> => {
      const r = await run('redis-cli', ['-p', port, 'info', 'commandstats']);
      return [...r.stdout.matchAll(/calls=(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
    };
    interface Slice extends WrkResult {
      bridge: string;
      cpuUsPerReq: number;
    }
    const sliceWindows = new Map<string, { fromUs: number; toUs: number; requests: number }>();
    const slice = async (b: Bridge): Promise<Slice> => {
      const cpu0 = cpuMs(b.proc.pid);
      const fromUs = Number(process.hrtime.bigint() / 1000n);
      const res = await wrk({ url: b.url, script: o.callLua, connections: 10, seconds: o.overheadSeconds, env: { API_KEY: fast } });
      if (!sliceWindows.has(b.name)) sliceWindows.set(b.name, { fromUs, toUs: Number(process.hrtime.bigint() / 1000n), requests: res.requests });
      return { ...res, bridge: b.name, cpuUsPerReq: round(((cpuMs(b.proc.pid) - cpu0) * 1000) / Math.max(1, res.requests), 1) };
    };
    interface Round {
      rps: number;
      cpu: number;
      p50: number;
    }
    /** Side A against side B: per round one process of each, slices in ABBA order (BAAB in odd rounds). */
    const compare = async (a: Bridge[], b: Bridge[], rounds: number) => {
      const sa: Slice[] = [];
      const sb: Slice[] = [];
      const perRound: Round[] = [];
      let storeCallsA = 0;
      for (let r = 0; r < rounds; r++) {
        const pair = { a: a[r % a.length]!, b: b[r % b.length]! };
        for (const x of [pair.a, pair.b]) await wrk({ url: x.url, script: o.callLua, connections: 10, seconds: 2, env: { API_KEY: fast } }); // warm-up
        const order: ('a' | 'b')[] = r % 2 ? ['b', 'a', 'a', 'b'] : ['a', 'b', 'b', 'a'];
        const got = { a: [] as Slice[], b: [] as Slice[] };
        for (const which of order) {
          const calls0 = which === 'a' ? await storeCalls() : 0;
          const res = await slice(pair[which]);
          if (which === 'a') storeCallsA += (await storeCalls()) - calls0;
          got[which].push(res);
        }
        sa.push(...got.a);
        sb.push(...got.b);
        const sum = (xs: Slice[], f: (x: Slice) => number) => xs.reduce((n, x) => n + f(x), 0);
        perRound.push({
          rps: round(sum(got.a, (x) => x.requests) / sum(got.b, (x) => x.requests), 3),
          cpu: round(sum(got.a, (x) => x.cpuUsPerReq) / sum(got.b, (x) => x.cpuUsPerReq), 3),
          p50: round(sum(got.a, (x) => x.p50_ms) / sum(got.b, (x) => x.p50_ms), 3),
        });
      }
      return {
        rps: median(perRound.map((x) => x.rps)),
        cpu: median(perRound.map((x) => x.cpu)),
        p50: median(perRound.map((x) => x.p50)),
        perRound,
        a: sa,
        b: sb,
        storeCallsA,
      };
    };
    const rounds = Math.max(4, o.rounds);
    log(`global rate overhead: a key limited to ${limit}/min, wrk c=10 ${o.overheadSeconds} s slices, Redis on vs off, ABBA × ${rounds}…`);
    const main = await compare(onSide, offs, rounds);
    // the noise floor of this comparison on this machine: the same, between the two Bridges without Redis
    let control: Awaited<ReturnType<typeof compare>> | null = null;
    if (process.env.BENCH_GLOBALRATE_CONTROL === '1') {
      log(`global rate overhead control: Redis off vs off (two processes), ABBA × ${rounds}…`);
      control = await compare([offs[1]!, offs[0]!], offs, rounds);
      log(
        `  off / off: throughput ${control.rps.toFixed(3)} (rounds ${control.perRound.map((x) => x.rps.toFixed(3)).join(', ')}), CPU per request ${control.cpu.toFixed(3)}`,
      );
    }
    if (profileDir) {
      const text: string[] = [];
      for (const [b, side] of [
        [bridges[0]!, 'on'],
        [offs[0]!, 'off'],
      ] as const) {
        await b.proc.stop();
        const w = sliceWindows.get(b.name)!;
        const file = readdirSync(join(profileDir, side)).find((f) => f.endsWith('.cpuprofile'));
        if (!file) continue;
        const sum = summarizeProfile(join(profileDir, side, file), 40, w);
        text.push(`=== ${b.name} (Redis ${side}): ${((sum.busyMs * 1000) / w.requests).toFixed(1)} µs busy per request ===`, formatProfile(sum), '');
      }
      writeFileSync(join(dirname(o.paths.logDir), 'profile-globalrate.txt'), text.join('\n'));
      log(`  profiles of rate1 (on) and rate-off: bench/out/profile-globalrate.txt`);
    }
    const on = main.a;
    const offRuns = main.b;
    const perRound = main.perRound;
    const storeCallsOn = main.storeCallsA;
    const ratio = main.rps;
    const cpuRatio = main.cpu;
    const p50Ratio = main.p50;
    const rpsOn = median(on.map((x) => x.rps));
    const onRequests = on.reduce((n, x) => n + x.requests, 0);
    const non2xx = [...on, ...offRuns].reduce((n, x) => n + x.non2xx + x.errors_socket, 0);
    const share = round((rpsOn * 60) / limit, 3);
    log(
      `  Redis on / off: throughput ${ratio.toFixed(3)} (rounds ${perRound.map((x) => x.rps.toFixed(3)).join(', ')}), CPU per request ${cpuRatio.toFixed(3)}, p50 ${p50Ratio.toFixed(3)}; on ${rpsOn.toFixed(0)} req/s = ${(share * 100).toFixed(1)} % of the limit; non-2xx ${non2xx}; store commands ${storeCallsOn} (all Bridges) for ${onRequests} requests`,
    );
    return {
      summary: {
        worst_window_error: round(worst, 4),
        overhead_ratio: round(ratio, 3),
        overhead_cpu_ratio: round(cpuRatio, 3),
        p50_ratio: round(p50Ratio, 3),
        control_ratio: control ? round(control.rps, 3) : null,
      },
      details: {
        accuracy: perKey,
        overhead: {
          limitPerMin: limit,
          loadShareOfLimit: share,
          perRound,
          on,
          off: offRuns,
          non2xx,
          storeCallsDuringOnSlices: storeCallsOn,
          onRequests,
          control: control && { rps: control.rps, cpu: control.cpu, p50: control.p50, perRound: control.perRound },
        },
        note: 'accepted per 60-s window starting at every 5-s boundary inside the run, by the time each Bridge took the request (its ULID request id)',
      },
    };
  } finally {
    for (const b of stops) await b.proc.stop();
    await run('bash', [script, 'stop'], { env: redisEnv }).catch(() => undefined);
  }
}
