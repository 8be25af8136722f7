/**
 * Issue 19: what a refused request costs the Bridge, against a served one, in the same run.
 *
 * One Bridge at its default log level (info), behind a "proxy" (STK_TRUST_PROXY=127.0.0.1; every
 * request carries its own X-Forwarded-For, so the 401 flood comes from 131,072 client addresses and the
 * per-address invalid-key guard does not turn it into 429s), measured under wrk -t2 with bench/lua/reject.lua:
 *
 *   served   a key with room (10,000,000/min): 200s, a real query on PostgreSQL
 *   429      one valid key with a limit of 60/min: after its first minute's 60, every request is 429
 *   401      well-formed keys (right checksum) with wrong secrets: half are real key ids, half unknown
 *   floor    the same load against a bare node:http server answering a fixed 401 (not the Bridge): what
 *            any HTTP answer costs in Node on this machine, the least a refusal can cost
 *
 * Each round runs the three (order rotated per round) with a warm-up, then the measured run; the
 * Bridge's CPU time (user + system, /proc/<pid>/stat) over the measured run / requests answered =
 * CPU µs per request. Ratios are the median over rounds of each round's ratio.
 *
 * Neighbour: another key's throughput (wrk c=10, closed loop) with and without a 429 flood on the
 * limited key, interleaved in ABBA slices within each round. The flood is what an abuser sends: a fixed
 * rate (BENCH_REJECT_FLOOD_RPS, default 2,000 req/s = 2,000× its limit), pipelined over 4 keep-alive
 * connections from this process (a few % of a core), not a closed loop. A closed-loop flood would take
 * the Bridge's CPU in proportion to its connections, whatever a rejection costs: the figure would then
 * measure the load generator, not the Bridge.
 *
 * With BENCH_ONLY=…,profile, two more Bridges run from the TypeScript source under --cpu-prof (log level
 * info and warn), each through the three loads: bench/out/profile-reject.txt, busy CPU µs per request by
 * area and top functions per load.
 */
import { readdirSync, rmSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { formatKey, newKeyId, newSecret, parseKey } from '../../src/protocol/key-format.js';
import { cpuMs, start, waitHttp, type Proc } from './procs.js';
import { formatProfile, summarizeProfile, type ProfileSummary } from './profile.js';
import { createKeyCli, PROJECT, smokeCall, startBridge, type Bridge, type CreatedKey, type Hub, type StackPaths } from './stack.js';
import { freePort, log, median, round, sleep, waitFor } from './util.js';
import { wrk, type WrkResult } from './wrk.js';

const SCRIPT = join(import.meta.dirname, '../lua/reject.lua');
const CALL_BODY = '{"path":"db/users/select","params":{"limit":1}}';

export type Load = 'served' | '429' | '401' | 'floor';
const LOADS: Load[] = ['served', '429', '401', 'floor'];
/** what the profile step runs through (the floor is not the Bridge) */
const BRIDGE_LOADS: Load[] = ['served', '429', '401'];

/**
 * The floor: a bare node:http server answering every request with a fixed 401 envelope of the same
 * size, without reading the body — what any answer costs in Node before the Bridge does anything.
 */
const FLOOR_SERVER = `
const body = JSON.stringify({ error: { code: 'UNAUTHORIZED', message: 'invalid API key', requestId: '01KB0000000000000000000000' } });
require('node:http').createServer((req, res) => {
  res.writeHead(401, { 'content-type': 'application/json; charset=utf-8', 'content-length': body.length, 'x-request-id': '01KB0000000000000000000000' });
  res.end(body);
}).listen(Number(process.env.PORT), '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => process.exit(0));
`;

interface RejectWrk extends WrkResult {
  status: { '200': number; '401': number; '429': number; other: number };
}

export interface RejectOptions {
  paths: StackPaths;
  hub: Hub;
  env: string;
  rounds: number;
  warmupS: number;
  durationS: number;
  /** wrk connections of each load (BENCH_REJECT_C, 50) */
  connections: number;
  /** the neighbour figure's abuser, requests/s (BENCH_REJECT_FLOOD_RPS, 2000) */
  floodRps: number;
  outDir: string;
  logDir: string;
  profile: boolean;
  note(m: string): void;
}

interface Keys {
  served: CreatedKey;
  neighbour: CreatedKey;
  limited: CreatedKey;
  /** well-formed keys with a wrong secret: real key ids and unknown ones */
  wrong: string[];
}

/** A key with the same id (or a fresh one) and a secret that is not its own; the checksum is right. */
function wrongKey(keyId: string): string {
  const k = formatKey(keyId, newSecret(), 'bench');
  if (typeof parseKey(k) === 'string') throw new Error('bench: a generated wrong key does not parse');
  return k;
}

async function makeKeys(hub: Hub, env: string): Promise<Keys> {
  const served = await createKeyCli(hub, env, 'reject-served');
  const neighbour = await createKeyCli(hub, env, 'reject-neighbour');
  const limited = await createKeyCli(hub, env, 'reject-limited', 60);
  const wrong: string[] = [];
  for (let i = 0; i < 8; i++) wrong.push(wrongKey([served, neighbour, limited][i % 3]!.keyId), wrongKey(newKeyId()));
  return { served, neighbour, limited, wrong };
}

const loadKeys = (k: Keys, l: Load) => (l === 'served' ? k.served.apiKey : l === '429' ? k.limited.apiKey : k.wrong.join(' '));
const expected: Record<Load, keyof RejectWrk['status']> = { served: '200', '429': '429', '401': '401', floor: '401' };

async function runLoad(url: string, keys: Keys, l: Load, connections: number, seconds: number): Promise<RejectWrk> {
  return (await wrk({ url, script: SCRIPT, connections, seconds, env: { API_KEYS: loadKeys(keys, l) } })) as RejectWrk;
}

/**
 * An abuser at a fixed rate: every 10 ms, rate/100 requests written pipelined over `conns` keep-alive
 * connections (at most 256 unanswered per connection: a Bridge that falls behind is not buried deeper).
 * Answers are counted by status from the response lines.
 */
function startFlood(url: string, apiKey: string, rps: number, conns = 4) {
  const u = new URL(url);
  const req = Buffer.from(
    `POST /call HTTP/1.1\r\nHost: ${u.host}\r\nContent-Type: application/json\r\nX-Santokit-Api-Key: ${apiKey}\r\nX-Forwarded-For: 10.250.0.1\r\nContent-Length: ${CALL_BODY.length}\r\n\r\n${CALL_BODY}`,
  );
  const statuses: Record<string, number> = {};
  let sent = 0;
  let skipped = 0;
  const socks: Array<{ s: Socket; inflight: number; tail: string }> = [];
  for (let i = 0; i < conns; i++) {
    const c = { s: connect(Number(u.port), u.hostname), inflight: 0, tail: '' };
    c.s.setNoDelay(true);
    c.s.on('error', () => {});
    c.s.on('data', (d: Buffer) => {
      const text = c.tail + d.toString('latin1');
      const re = /HTTP\/1\.1 (\d{3}) /g;
      let m: RegExpExecArray | null;
      let last = 0;
      while ((m = re.exec(text))) {
        statuses[m[1]!] = (statuses[m[1]!] ?? 0) + 1;
        c.inflight--;
        last = re.lastIndex;
      }
      c.tail = text.slice(Math.max(last, text.length - 16));
    });
    socks.push(c);
  }
  const perTick = rps / 100;
  let owed = 0;
  let next = 0;
  const timer = setInterval(() => {
    owed += perTick;
    while (owed >= 1) {
      owed--;
      const c = socks[next++ % socks.length]!;
      if (c.inflight >= 256) {
        skipped++;
        continue;
      }
      c.inflight++;
      sent++;
      c.s.write(req);
    }
  }, 10);
  const t0 = Date.now();
  return {
    snapshot: () => ({ sent, skipped, statuses: { ...statuses }, seconds: (Date.now() - t0) / 1000 }),
    stop() {
      clearInterval(timer);
      for (const c of socks) c.s.destroy();
    },
  };
}

interface Measured {
  round: number;
  load: Load;
  rps: number;
  requests: number;
  cpuUsPerReq: number;
  /** bytes the Bridge wrote to its log per 1,000 requests of the measured run */
  logBytesPer1k: number;
  status: RejectWrk['status'];
}

const fileSize = (f: string) => {
  try {
    return statSync(f).size;
  } catch {
    return 0;
  }
};

async function measure(b: Bridge, floor: { url: string; proc: Proc }, keys: Keys, o: RejectOptions): Promise<Measured[]> {
  const out: Measured[] = [];
  for (let r = 0; r < o.rounds; r++) {
    const order = LOADS.map((_, i) => LOADS[(i + r) % LOADS.length]!);
    for (const l of order) {
      const [url, proc] = l === 'floor' ? [floor.url, floor.proc] : [b.url, b.proc];
      await runLoad(url, keys, l, o.connections, o.warmupS);
      await sleep(200); // the log's batched lines of the warm-up are written
      const cpu0 = cpuMs(proc.pid);
      const log0 = fileSize(proc.logFile);
      const res = await runLoad(url, keys, l, o.connections, o.durationS);
      const cpu = cpuMs(proc.pid) - cpu0;
      await sleep(200);
      const logBytes = fileSize(proc.logFile) - log0;
      const m: Measured = {
        round: r + 1,
        load: l,
        rps: round(res.rps, 1),
        requests: res.requests,
        cpuUsPerReq: round((cpu * 1000) / Math.max(1, res.requests), 1),
        logBytesPer1k: round((logBytes * 1000) / Math.max(1, res.requests), 0),
        status: res.status,
      };
      out.push(m);
      const want = expected[l];
      const off = res.requests - res.status[want];
      log(
        `reject round ${r + 1}/${o.rounds} ${l.padEnd(6)} c=${o.connections}: ${res.rps.toFixed(0).padStart(6)} req/s  ${m.cpuUsPerReq.toFixed(1)} µs CPU/req  log ${m.logBytesPer1k} B per 1k requests  ${JSON.stringify(res.status)}`,
      );
      // a few answers of another status are the edges of a run (the limited key's bucket refilling one
      // token per second); more means the load did not measure what it says
      if (off > Math.max(20, res.requests * 0.001) || res.errors_socket)
        o.note(
          `reject ${l} round ${r + 1}: ${off} of ${res.requests} answers were not ${want} (${JSON.stringify(res.status)}), ${res.errors_socket} socket errors`,
        );
    }
  }
  return out;
}

/**
 * Each round: a warm-up, then four slices of the neighbour's load in ABBA order (without, with, with,
 * without the flood; BAAB in odd rounds), so a machine that speeds up or slows down during the round
 * (other work on it) weighs on both sides alike. A round's ratio is the sum of the slices with the flood
 * over the sum of those without; the figure is the median over rounds.
 */
async function neighbour(b: Bridge, keys: Keys, o: RejectOptions) {
  const runs: Array<{ round: number; slice: number; flood: boolean; rps: number; floodRps?: number; floodStatuses?: Record<string, number> }> = [];
  const nKeys: Keys = { ...keys, served: keys.neighbour };
  const sliceS = Math.max(3, Math.round(o.durationS / 2));
  const per: number[] = [];
  for (let r = 0; r < o.rounds; r++) {
    await runLoad(b.url, nKeys, 'served', 10, o.warmupS);
    const order = r % 2 ? [true, false, false, true] : [false, true, true, false];
    const sums = { with: 0, without: 0 };
    for (const [slice, flood] of order.entries()) {
      const f = flood ? startFlood(b.url, keys.limited.apiKey, o.floodRps) : null;
      try {
        if (f) await sleep(500); // the flood's connections open and it reaches its rate
        const f0 = f?.snapshot();
        const res = await runLoad(b.url, nKeys, 'served', 10, sliceS);
        const f1 = f?.snapshot();
        const entry: (typeof runs)[number] = { round: r + 1, slice: slice + 1, flood, rps: round(res.rps, 1) };
        if (f0 && f1) {
          const answered = (st: Record<string, number>) => Object.values(st).reduce((a, n) => a + n, 0);
          entry.floodRps = round((answered(f1.statuses) - answered(f0.statuses)) / (f1.seconds - f0.seconds), 0);
          entry.floodStatuses = f1.statuses;
        }
        runs.push(entry);
        sums[flood ? 'with' : 'without'] += res.rps;
        log(
          `reject neighbour round ${r + 1}/${o.rounds} slice ${slice + 1}/4 ${flood ? `with a 429 flood of ${o.floodRps} req/s (answered ${entry.floodRps}/s, ${JSON.stringify(entry.floodStatuses)})` : 'without a flood'}: neighbour key ${res.rps.toFixed(0)} req/s`,
        );
        if (res.non2xx || res.errors_socket)
          o.note(`reject neighbour round ${r + 1}: ${res.non2xx} non-2xx, ${res.errors_socket} socket errors for the neighbour key`);
      } finally {
        f?.stop();
      }
      await sleep(300);
    }
    if (sums.without > 0) per.push(sums.with / sums.without);
  }
  return { ratio: round(median(per), 3), perRound: per.map((x) => round(x, 3)), runs };
}

/** The Bridge of this section: default log level, behind a trusted "proxy" on loopback. */
async function startRejectBridge(o: RejectOptions): Promise<Bridge> {
  return await startBridge(o.paths, o.hub, 'reject', [o.env], { STK_LOG_LEVEL: 'info', STK_TRUST_PROXY: '127.0.0.1' });
}

function ratioOfCpu(runs: Measured[], a: Load, b: Load): number {
  const per: number[] = [];
  for (const x of runs.filter((u) => u.load === a)) {
    const y = runs.find((u) => u.round === x.round && u.load === b);
    if (y && y.cpuUsPerReq > 0) per.push(x.cpuUsPerReq / y.cpuUsPerReq);
  }
  return round(median(per), 3);
}

export async function benchReject(o: RejectOptions) {
  const keys = await makeKeys(o.hub, o.env);
  const b = await startRejectBridge(o);
  const floorPort = await freePort();
  const floorProc = start('reject-floor', process.execPath, ['-e', FLOOR_SERVER], { env: { PORT: String(floorPort) }, logDir: o.logDir });
  try {
    await waitFor(async () => floorProc.logs().includes('ready'), 30_000, 'the floor server');
    await smokeCall(b.url, keys.served.apiKey);
    await smokeCall(b.url, keys.neighbour.apiKey);
    log(`reject: Bridge ${b.url} (log level info, STK_TRUST_PROXY=127.0.0.1), c=${o.connections}, ${o.rounds} rounds`);
    const runs = await measure(b, { url: `http://127.0.0.1:${floorPort}`, proc: floorProc }, keys, o);
    const n = await neighbour(b, keys, o);
    const med = (l: Load, f: (m: Measured) => number) => round(median(runs.filter((m) => m.load === l).map(f)), 1);
    const perLoad = Object.fromEntries(
      LOADS.map((l) => [l, { cpu_us_per_req: med(l, (m) => m.cpuUsPerReq), rps: med(l, (m) => m.rps), log_bytes_per_1k: med(l, (m) => m.logBytesPer1k) }]),
    );
    const summary = {
      ratios: {
        rejected_429_cpu_vs_served: ratioOfCpu(runs, '429', 'served'),
        rejected_401_cpu_vs_served: ratioOfCpu(runs, '401', 'served'),
      },
      reject: {
        connections: o.connections,
        ...perLoad,
        floor_cpu_vs_served: ratioOfCpu(runs, 'floor', 'served'),
        neighbour_throughput_ratio: n.ratio,
        neighbour_flood_rps: o.floodRps,
      },
    };
    let profile: string | null = null;
    if (o.profile) profile = await profileReject(o, keys);
    return { summary, details: { runs, neighbour: n.runs, neighbourPerRound: n.perRound, profile } };
  } finally {
    await Promise.all([b.proc.stop(), floorProc.stop()]);
  }
}

// ---------------------------------------------------------------- profile

/** One Bridge from the TypeScript source under --cpu-prof, through the three loads, summarised per load. */
async function profileAt(o: RejectOptions, keys: Keys, level: 'info' | 'warn', dir: string) {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc: Proc = start(
    `bridge-reject-profile-${level}`,
    process.execPath,
    ['--cpu-prof', `--cpu-prof-dir=${dir}`, '--import', 'tsx', join(o.paths.root, 'bench/lib/bridge-entry.ts')],
    {
      cwd: o.paths.root,
      env: {
        STK_BRIDGE_PORT: String(port),
        STK_HUB_URL: o.hub.url,
        STK_SERVICE_TOKEN: o.hub.serviceToken,
        STK_BRIDGE_ID: `bench-reject-profile-${level}`,
        STK_LOG_LEVEL: level,
        STK_TRUST_PROXY: '127.0.0.1',
      },
      logDir: o.logDir,
    },
  );
  await waitHttp(proc, `${url}/readyz?project=${PROJECT}&env=${o.env}`, 90_000, { 'x-santokit-service-token': o.hub.serviceToken });
  await smokeCall(url, keys.served.apiKey);
  const windows: Array<{ load: Load; fromUs: number; toUs: number; requests: number }> = [];
  const seconds = Math.min(o.durationS, 6);
  for (const l of BRIDGE_LOADS) {
    await runLoad(url, keys, l, o.connections, o.warmupS);
    const fromUs = Number(process.hrtime.bigint() / 1000n);
    const res = await runLoad(url, keys, l, o.connections, seconds);
    windows.push({ load: l, fromUs, toUs: Number(process.hrtime.bigint() / 1000n), requests: res.requests });
  }
  await proc.stop();
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error(`no .cpuprofile written in ${dir}`);
  return windows.map((w) => ({ ...w, summary: summarizeProfile(join(dir, file), 30, w) }));
}

async function profileReject(o: RejectOptions, keys: Keys): Promise<string> {
  const base = join(o.outDir, 'profile-reject');
  rmSync(base, { recursive: true, force: true });
  const parts: string[] = [];
  for (const level of ['info', 'warn'] as const) {
    log(`reject: profiling a Bridge at log level ${level} (node --cpu-prof) under the three loads…`);
    const res = await profileAt(o, keys, level, join(base, level));
    const perReq = (s: ProfileSummary, n: number) => (s.busyMs * 1000) / Math.max(1, n);
    parts.push(
      `=== log level ${level}: busy CPU µs per request (profiled, so slower than unprofiled) ===`,
      ...res.map((w) => `  ${w.load.padEnd(7)} ${perReq(w.summary, w.requests).toFixed(1).padStart(7)} µs  (${w.requests} requests)`),
      '',
    );
    for (const w of res) parts.push(`--- ${level} / ${w.load} ---`, formatProfile(w.summary), '');
  }
  const text = parts.join('\n');
  writeFileSync(join(o.outDir, 'profile-reject.txt'), text);
  return 'bench/out/profile-reject.txt';
}
