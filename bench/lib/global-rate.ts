import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { ulidTime } from '../../src/common/ulid.js';
import { run } from './procs.js';
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
 * - overhead: a key at ≤ 10 % of its limit, wrk c=10 on a Bridge with Redis and on one without
 *   (otherwise identical), alternating, same run: throughput with / without is `overhead_ratio`
 *   (1 = none; target ≥ 0.95, the noise of this shared machine).
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
  summary: { worst_window_error: number; overhead_ratio: number; p50_ratio: number };
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
    for (let i = 1; i <= 3; i++) bridges.push(await startBridge(o.paths, o.hub, `rate${i}`, [o.env], env));
    const off = await startBridge(o.paths, o.hub, 'rate-off', [o.env]);
    stops.push(...bridges, off);
    const keys = await Promise.all(LIMITS.map((l) => createKey(o.hub, o.env, `rate-${l}`, l)));
    for (const b of [...bridges, off]) await smokeCall(b.url, keys[2]!);
    // the Hub's heartbeat (10 s) tells every Bridge that there are 4 of them
    await sleep(11_000);
    for (const b of bridges) if (/the Redis store does not answer/.test(b.proc.logs())) throw new Error(`${b.name}: Redis does not answer (see its log)`);

    // accuracy: the three keys at 2× at the same time, on the 3 Redis Bridges
    const urls = bridges.map((b) => b.url);
    const ms = o.seconds * 1000;
    log(`global rate: 3 Bridges + Redis, keys at ${LIMITS.join(', ')}/min loaded at 2× for ${o.seconds} s (round-robin, paced)…`);
    const t0 = Date.now() + 100;
    const sent = await Promise.all(LIMITS.map((l, i) => paced(urls, keys[i]!, 2 * l, ms, t0)));
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

    // overhead: a key far under its limit, Redis on vs off, alternating rounds
    // the highest limit a key can have (10,000,000/min ≈ 167,000 req/s): this machine's load is a few % of it
    const limit = 10_000_000;
    const fast = await createKey(o.hub, o.env, 'rate-overhead', limit);
    for (const b of [bridges[0]!, off]) await smokeCall(b.url, fast);
    const on: WrkResult[] = [];
    const offRuns: WrkResult[] = [];
    log(`global rate overhead: a key limited to ${limit}/min, wrk c=10 ${o.overheadSeconds} s, Redis on vs off × ${o.rounds}…`);
    for (let r = 0; r < o.rounds; r++) {
      const order = r % 2 ? ['off', 'on'] : ['on', 'off'];
      for (const which of order) {
        const url = which === 'on' ? bridges[0]!.url : off.url;
        await wrk({ url, script: o.callLua, connections: 10, seconds: 2, env: { API_KEY: fast } }); // warm-up
        const res = await wrk({ url, script: o.callLua, connections: 10, seconds: o.overheadSeconds, env: { API_KEY: fast } });
        (which === 'on' ? on : offRuns).push(res);
      }
    }
    const rpsOn = median(on.map((x) => x.rps));
    const rpsOff = median(offRuns.map((x) => x.rps));
    const p50On = median(on.map((x) => x.p50_ms));
    const p50Off = median(offRuns.map((x) => x.p50_ms));
    const non2xx = [...on, ...offRuns].reduce((n, x) => n + x.non2xx + x.errors_socket, 0);
    const share = round((rpsOn * 60) / limit, 3);
    log(
      `  Redis on ${rpsOn.toFixed(0)} req/s p50 ${p50On.toFixed(2)} ms · off ${rpsOff.toFixed(0)} req/s p50 ${p50Off.toFixed(2)} ms → ratio ${(rpsOn / rpsOff).toFixed(3)} (load = ${(share * 100).toFixed(1)} % of the limit; non-2xx ${non2xx})`,
    );
    return {
      summary: { worst_window_error: round(worst, 4), overhead_ratio: round(rpsOn / rpsOff, 3), p50_ratio: round(p50On / p50Off, 3) },
      details: {
        accuracy: perKey,
        overhead: { limitPerMin: limit, loadShareOfLimit: share, on, off: offRuns, non2xx },
        note: 'accepted per 60-s window starting at every 5-s boundary inside the run, by the time each Bridge took the request (its ULID request id)',
      },
    };
  } finally {
    for (const b of stops) await b.proc.stop();
    await run('bash', [script, 'stop'], { env: redisEnv }).catch(() => undefined);
  }
}
