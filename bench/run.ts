/**
 * `npm run bench`: the Bridge against the yardsticks (issue 8), in one run on this machine.
 *
 *   setup    wrk (Debian), the yardsticks' dependencies in a scratch folder outside the repo, a throwaway
 *            PostgreSQL (scripts/test-pg.sh on its own port/dir), database `bench`, Hub A + `stk apply`
 *            of bench/schema + 1,000 users + an API key (`stk apikey create`), Bridge A, the minimal
 *            server (FRAMEWORK=http DRIVER=pg AUTH=1), the Platformatic peer; Hub B + Bridge B with
 *            100,000 keys for keys_scaling
 *   cli      `stk --version` vs `node -e 0`, interleaved spawns
 *   verify   the Bridge's verifyKey in-process on a 100,000-key table
 *   rounds   interleaved wrk runs (2 s warm-up + 10 s measured; c=10 and c=50; -t2), order rotated per
 *            round; Bridge RSS sampled while it is under load
 *   revoke   3 Bridges under load, 100 revokes through `stk apikey revoke`
 *   floor    (issue 18) the node:http floor (server.mjs DB=0) and pgbench -M extended join the read rounds;
 *            a CPU profile of the Bridge against the floor (bench/out/profile-floor.txt)
 *   writes   insert (a new id per request) and update by id, Bridge vs the minimal server, own rounds
 *   verifyload  a Bridge with STK_BENCH_VERIFY_SAMPLES under wrk c=50: verifyKey vs a bare HMAC, per call
 *   acks     revoke ack latency and the Hub's CPU per ack with 1, 3, 10 Bridges
 *   million  a Hub with 1,000,000 keys, 3 Bridges: snapshot time, RSS, throughput vs 1 key, revokes
 *   globalrate  3 Bridges on Redis: keys at 60/600/6,000 per min hit at 2× for BENCH_GLOBALRATE_S (120) s,
 *            worst 60-s window vs the limit; a key at ≤ 10 % of its limit, Redis on vs off (bench/lib/global-rate.ts)
 *   metrics  3 Bridges (2 with /metrics off, 1 on and scraped every 5 s) loaded at the same time on one
 *            CPU at c=10 and c=50: summary.metrics.on_off_ratio (bench/lib/metrics.ts)
 *
 * Writes bench/out/summary.json (the issues' fields), bench/out/details.json (every run), the plots
 * bench/out/*.svg and bench/out/logs/. Knobs: BENCH_ROUNDS (3), BENCH_WARMUP_S (2), BENCH_DURATION_S (10),
 * BENCH_ONLY=cli,verify,rounds,floor,writes,verifyload,revoke,acks,million,reject,… (subset; reject:
 * bench/lib/reject.ts, BENCH_REJECT_C, BENCH_REJECT_FLOOD_RPS), BENCH_ACK_REVOKES (50),
 * BENCH_MILLION_KEYS (1000000), BENCH_PG_PORT (55439), BENCH_PG_DIR, BENCH_DEPS_DIR
 * (/tmp/stk-bench-deps), BENCH_OUT_DIR (bench/out), BENCH_YARDSTICKS (../shared/bench). When a throughput target is missed (or with
 * BENCH_ONLY=…,profile) a Bridge is CPU-profiled under load: bench/out/profile-bridge.txt.
 * BENCH_BASELINE=<dir>: a checkout of another commit, built (`npm ci && npm run build` there): its own
 * Hub + Bridge run on the same database as one more config in the same rounds, and the summary gives
 * Bridge / baseline per concurrency — a same-run comparison for finding a regression between commits.
 * With BENCH_ONLY=…,profile as well, both Bridges are CPU-profiled from their source at c=10, area by area
 * side by side: bench/out/profile-baseline.txt.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { bulkInsertKeys } from './lib/bulk-keys.js';
import { pgbench } from './lib/pgbench.js';
import { writePlots } from './lib/plots.js';
import { cpuMs, pgClusterCpuMs, rssMb, run, runOk, start, stopAll, syscalls, waitHttp, type Proc } from './lib/procs.js';
import { formatProfile, summarizeProfile } from './lib/profile.js';
import { benchReject } from './lib/reject.js';
import { judge, startLoad } from './lib/revocation.js';
import {
  createKeyApi,
  createKeyCli,
  hubResponseTimes,
  PROJECT,
  setupEnv,
  smokeCall,
  startBridge,
  startHub,
  type Bridge,
  type Hub,
  type StackPaths,
} from './lib/stack.js';
import { freePort, log, median, percentile, round, sleep, table, waitFor } from './lib/util.js';
import { acksByBridges } from './lib/acks.js';
import { millionRevokes, startMillion } from './lib/million.js';
import { benchVerify } from './lib/verify.js';
import { globalRate } from './lib/global-rate.js';
import { verifyUnderLoad } from './lib/verify-load.js';
import { benchMetrics } from './lib/metrics.js';
import { wrk, type WrkResult } from './lib/wrk.js';

const ROOT = resolve(import.meta.dirname, '..');
const OUT = resolve(process.env.BENCH_OUT_DIR ?? join(ROOT, 'bench/out'));
const LOGS = join(OUT, 'logs');
const int = (v: string | undefined, d: number) => (v && /^\d+$/.test(v) ? Number(v) : d);
const ROUNDS = int(process.env.BENCH_ROUNDS, 3);
const WARMUP_S = int(process.env.BENCH_WARMUP_S, 2);
const DURATION_S = int(process.env.BENCH_DURATION_S, 10);
const PG_PORT = int(process.env.BENCH_PG_PORT, 55439);
// the Hubs and Bridges started below (they inherit this) may reach the bench's own PostgreSQL on loopback
process.env.STK_CONNECTION_ALLOW_HOSTS = [process.env.STK_CONNECTION_ALLOW_HOSTS, `127.0.0.1:${PG_PORT}`].filter(Boolean).join(',');
const PG_DIR = process.env.BENCH_PG_DIR ?? '/tmp/stk-bench-pg';
const DEPS = process.env.BENCH_DEPS_DIR ?? '/tmp/stk-bench-deps';
const YARD = resolve(process.env.BENCH_YARDSTICKS ?? join(ROOT, '../shared/bench'));
const BASELINE = process.env.BENCH_BASELINE ? resolve(process.env.BENCH_BASELINE) : null;
const SECTIONS = new Set(
  (process.env.BENCH_ONLY ?? 'cli,verify,rounds,floor,writes,verifyload,revoke,acks,million,reject,globalrate,metrics').split(',').map((s) => s.trim()),
);
/** the sections that need PostgreSQL, a Hub and a Bridge */
const STACK_SECTIONS = ['rounds', 'floor', 'writes', 'verifyload', 'revoke', 'acks', 'million', 'reject', 'globalrate', 'metrics'];
const BULK_KEYS = 100_000;
const REVOKES = 100;
const ACK_BRIDGES = [1, 3, 10];
const ACK_REVOKES = int(process.env.BENCH_ACK_REVOKES, 50);
const MILLION_KEYS = int(process.env.BENCH_MILLION_KEYS, 1_000_000);
const MILLION_BRIDGES = 3;
const REVOKE_BRIDGES = 3;
/** measured seconds of each profiled server (a profile needs fewer seconds than a throughput figure) */
const PROFILE_S = Math.min(DURATION_S, 6);
/** requests/s spread over the 3 Bridges during the revokes (0 = closed loop, as fast as they answer) */
const REVOKE_LOAD_RPS = int(process.env.BENCH_REVOKE_RPS, 1500);

const t0 = Date.now();
const problems: string[] = [];
const note = (m: string) => {
  problems.push(m);
  log(`!! ${m}`);
};

// ---------------------------------------------------------------- setup

function ensureWrk(): void {
  if (spawnSync('wrk', ['--version']).error === undefined) return;
  log('wrk not found: installing it from Debian (apt-get install -y wrk)');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let r = spawnSync('apt-get', ['install', '-y', '-qq', 'wrk'], { stdio: 'inherit', env });
  if (r.status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    r = spawnSync('apt-get', ['install', '-y', '-qq', 'wrk'], { stdio: 'inherit', env });
  }
  if (r.status !== 0 || spawnSync('wrk', ['--version']).error) throw new Error('could not install wrk (needs root and Debian packages): install it and rerun');
}

/** Copies each yardstick with its package.json into DEPS/<name> and installs there (only when changed). */
async function ensureYardsticks(): Promise<{ minimal: string; peer: string; callLua: string; getLua: string; selectSql: string }> {
  if (!existsSync(join(YARD, 'server.mjs'))) throw new Error(`yardsticks not found in ${YARD} (set BENCH_YARDSTICKS)`);
  const sets = [
    { name: 'minimal', pkg: 'package.json', files: ['server.mjs', 'call.lua', 'get.lua', 'select.sql'] },
    { name: 'peer', pkg: 'peer-package.json', files: ['peer-platformatic.mjs'] },
  ];
  for (const s of sets) {
    const dir = join(DEPS, s.name);
    mkdirSync(dir, { recursive: true });
    const want = readFileSync(join(YARD, s.pkg), 'utf8');
    const have = existsSync(join(dir, 'package.json')) ? readFileSync(join(dir, 'package.json'), 'utf8') : '';
    for (const f of s.files) copyFileSync(join(YARD, f), join(dir, f));
    if (want !== have || !existsSync(join(dir, 'node_modules'))) {
      log(`installing the ${s.name} yardstick's dependencies into ${dir}`);
      writeFileSync(join(dir, 'package.json'), want);
      await runOk('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir, timeoutMs: 300_000 });
    }
  }
  return {
    minimal: join(DEPS, 'minimal/server.mjs'),
    peer: join(DEPS, 'peer/peer-platformatic.mjs'),
    callLua: join(DEPS, 'minimal/call.lua'),
    getLua: join(DEPS, 'minimal/get.lua'),
    selectSql: join(DEPS, 'minimal/select.sql'),
  };
}

const pgEnv = { STK_TEST_PG_DIR: PG_DIR, STK_TEST_PG_PORT: String(PG_PORT) };

async function startPostgres(): Promise<{ adminUrl: string; benchUrl: string }> {
  const adminUrl = (await runOk('bash', [join(ROOT, 'scripts/test-pg.sh'), 'start'], { env: pgEnv, timeoutMs: 300_000 })).trim().split('\n').pop()!;
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    await c.query('DROP DATABASE IF EXISTS bench WITH (FORCE)');
    await c.query('CREATE DATABASE bench');
  } finally {
    await c.end();
  }
  const u = new URL(adminUrl);
  u.pathname = '/bench';
  return { adminUrl, benchUrl: u.toString() };
}

async function seedUsers(benchUrl: string): Promise<void> {
  const c = new pg.Client({ connectionString: benchUrl });
  await c.connect();
  try {
    await c.query(
      `INSERT INTO users (id, email, name)
       SELECT 'u_' || lpad(g::text, 6, '0'), 'user' || g || '@example.com', 'User ' || g FROM generate_series(1, 1000) g`,
    );
    await c.query('ANALYZE users');
    const { rows } = await c.query<{ n: number }>('SELECT count(*)::int AS n FROM users');
    if (rows[0]!.n !== 1000) throw new Error(`expected 1000 users, found ${rows[0]!.n}`);
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------- sections

/**
 * Copies bin/ + dist/ (+ package.json, node_modules linked) into the scratch dir and returns its stk.js:
 * every Hub, Bridge and CLI of this run executes the same build, even if dist/ is rebuilt meanwhile.
 */
function snapshotBuild(scratch: string): string {
  const app = join(scratch, 'app');
  mkdirSync(app, { recursive: true });
  cpSync(join(ROOT, 'dist'), join(app, 'dist'), { recursive: true });
  cpSync(join(ROOT, 'bin'), join(app, 'bin'), { recursive: true });
  copyFileSync(join(ROOT, 'package.json'), join(app, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(app, 'node_modules'), 'dir');
  return join(app, 'bin/stk.js');
}

function benchCli(stk: string): { ratio: number; stkMs: number; nodeMs: number } {
  const time = (args: string[]) => {
    const t = performance.now();
    const r = spawnSync(process.execPath, args, { stdio: 'ignore' });
    if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited ${r.status}`);
    return performance.now() - t;
  };
  for (let i = 0; i < 3; i++) {
    time([stk, '--version']);
    time(['-e', '0']);
  }
  const s: number[] = [];
  const n: number[] = [];
  for (let i = 0; i < 20; i++) {
    s.push(time([stk, '--version']));
    n.push(time(['-e', '0']));
  }
  return { ratio: median(s) / median(n), stkMs: median(s), nodeMs: median(n) };
}

type TargetId =
  | 'bridge'
  | 'bridge100k'
  | 'minimal'
  | 'peer'
  | 'baseline'
  | 'floor'
  | 'pgbench'
  | 'bridgeInsert'
  | 'minimalInsert'
  | 'bridgeUpdate'
  | 'minimalUpdate'
  | 'bridge1m';
interface Target {
  id: TargetId;
  label: string;
  url: string;
  script: string;
  env?: Record<string, string>;
  concurrency: number[];
  /** the server process (its CPU, RSS and syscalls are sampled); none for pgbench (its server is PostgreSQL) */
  proc?: Proc;
  /** instead of wrk (pgbench) */
  runner?: (c: number, seconds: number) => Promise<WrkResult>;
}

interface Run extends WrkResult {
  round: number;
  target: TargetId;
  c: number;
  rssMaxMb?: number;
  /** server process CPU (user + system) per request during the measured run */
  cpuUsPerReq?: number;
  /** read-family / write-family syscalls per request (/proc/<pid>/io) */
  readsPerReq?: number;
  writesPerReq?: number;
  /** PostgreSQL's CPU (every backend) per request during the measured run */
  pgCpuUsPerReq?: number;
}

async function rounds(targets: Target[]): Promise<{ runs: Run[]; rssMax: number }> {
  const runs: Run[] = [];
  let rssMax = 0;
  const pgData = join(PG_DIR, 'data');
  // each wrk run gets its own ID_PREFIX (the write path's unique ids; other scripts ignore it)
  const go = (t: Target, c: number, seconds: number, phase: string) =>
    t.runner
      ? t.runner(c, seconds)
      : wrk({ url: t.url, script: t.script, connections: c, seconds, env: { ...t.env, ID_PREFIX: `${t.id}${phase}${c}r${runs.length}` } });
  for (let r = 0; r < ROUNDS; r++) {
    for (const c of [10, 50]) {
      // the two Bridges (1 key / 100,000 keys) run back to back, alternating which goes first, so the
      // keys_scaling ratio is not skewed by the machine drifting between them; the units rotate each
      // round so no config always goes first
      const here = targets.filter((t) => t.concurrency.includes(c));
      const units: Target[][] = [];
      for (const t of here) {
        if (t.id === 'bridge100k') continue;
        const pair = t.id === 'bridge' ? here.find((u) => u.id === 'bridge100k') : undefined;
        units.push(pair ? (r % 2 ? [pair, t] : [t, pair]) : [t]);
      }
      const order = units.map((_, i) => units[(i + r) % units.length]!).flat();
      for (const t of order) {
        await go(t, c, WARMUP_S, 'w');
        let runRss = 0;
        const pid = t.proc?.pid ?? -1;
        const sampler = setInterval(() => {
          const m = rssMb(pid);
          if (m > runRss) runRss = m;
        }, 200);
        const cpu0 = cpuMs(pid);
        const pg0 = pgClusterCpuMs(pgData);
        const sc0 = syscalls(pid);
        const res = await go(t, c, DURATION_S, 'm');
        // pgbench's 10-50 backends exit as it ends: let the postmaster reap them (their CPU moves into its
        // cutime/cstime) so none is between the two places when the cluster's CPU is read
        if (t.runner) await sleep(500);
        const perReq = (x: number) => (x * 1000) / Math.max(1, res.requests);
        const pgCpuUsPerReq = perReq(pgClusterCpuMs(pgData) - pg0);
        // pgbench: the server is PostgreSQL, so its CPU per request is PostgreSQL's
        const cpuUsPerReq = t.proc ? perReq(cpuMs(pid) - cpu0) : pgCpuUsPerReq;
        const sc1 = syscalls(pid);
        const readsPerReq = (sc1.r - sc0.r) / Math.max(1, res.requests);
        const writesPerReq = (sc1.w - sc0.w) / Math.max(1, res.requests);
        clearInterval(sampler);
        if (t.id === 'bridge') rssMax = Math.max(rssMax, runRss);
        const errors = res.non2xx + res.errors_socket;
        runs.push({
          ...res,
          round: r + 1,
          target: t.id,
          c,
          rssMaxMb: round(runRss, 1),
          cpuUsPerReq: round(cpuUsPerReq, 1),
          readsPerReq: round(readsPerReq, 2),
          writesPerReq: round(writesPerReq, 2),
          pgCpuUsPerReq: round(pgCpuUsPerReq, 1),
        });
        log(
          `round ${r + 1}/${ROUNDS} c=${c} ${t.label.padEnd(22)} ${res.rps.toFixed(0).padStart(6)} req/s  p50 ${res.p50_ms.toFixed(2)} ms  p99 ${res.p99_ms.toFixed(2)} ms  ${cpuUsPerReq.toFixed(0)} µs CPU/req (PG ${pgCpuUsPerReq.toFixed(0)})  ${readsPerReq.toFixed(1)}r/${writesPerReq.toFixed(1)}w syscalls/req  rss ${runRss.toFixed(0)} MB${errors ? `  ERRORS ${errors}` : ''}`,
        );
        if (errors) note(`${t.label} c=${c} round ${r + 1}: ${res.non2xx} non-2xx, ${res.errors_socket} socket errors`);
      }
    }
  }
  return { runs, rssMax };
}

/** ~200 points of a latency distribution's CDF (value at each 0.5 % step, then 99.5–100 % finer), for the plot */
function cdfPoints(xs: Float64Array): Array<[number, number]> {
  const s = Float64Array.from(xs).sort();
  const out: Array<[number, number]> = [];
  if (s.length === 0) return out;
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
  for (let i = 1; i <= 199; i++) out.push([round(at(i / 200), 0), i / 200]);
  for (const q of [0.996, 0.997, 0.998, 0.999, 0.9995, 1]) out.push([round(at(q), 0), q]);
  return out;
}

function ratioOfMedians(runs: Run[], a: TargetId, b: TargetId, c: number): number {
  const per: number[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    const x = runs.find((u) => u.round === r && u.target === a && u.c === c);
    const y = runs.find((u) => u.round === r && u.target === b && u.c === c);
    if (x && y && y.rps > 0) per.push(x.rps / y.rps);
  }
  return median(per);
}

/** median over rounds of (CPU µs per request of a) / (of b): below 1 means a does less work per request */
function ratioOfCpu(runs: Run[], a: TargetId, b: TargetId, c: number): number {
  const per: number[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    const x = runs.find((u) => u.round === r && u.target === a && u.c === c);
    const y = runs.find((u) => u.round === r && u.target === b && u.c === c);
    if (x?.cpuUsPerReq && y?.cpuUsPerReq) per.push(x.cpuUsPerReq / y.cpuUsPerReq);
  }
  return median(per);
}

/**
 * The other commit's own Hub + Bridge (its bin/stk.js, its CLI for the setup) on the same database, in
 * its own env, as the operator would have run that version.
 */
async function startBaseline(paths: StackPaths, benchUrl: string): Promise<{ rev: string; hub: Hub; bridge: Bridge; key: { apiKey: string; keyId: string } }> {
  const dir = BASELINE!;
  if (!existsSync(join(dir, 'bin/stk.js')) || !existsSync(join(dir, 'dist')))
    throw new Error(`BENCH_BASELINE=${dir}: no bin/stk.js + dist/ there (run npm ci && npm run build in it)`);
  const rev = spawnSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim() || 'baseline';
  const basePaths: StackPaths = { ...paths, root: dir, stk: join(dir, 'bin/stk.js') };
  const hub = await startHub(basePaths, 'base');
  await setupEnv(hub, 'bench', benchUrl, join(ROOT, 'bench/schema'), true);
  const key = await createKeyCli(hub, 'bench', 'bench');
  const bridge = await startBridge(basePaths, hub, 'base', ['bench']);
  await smokeCall(bridge.url, key.apiKey);
  log(`baseline ${rev}: Hub ${hub.url}, Bridge ${bridge.url} (from ${dir})`);
  return { rev, hub, bridge, key };
}

function stats(runs: Run[], target: TargetId, c: number) {
  const rs = runs.filter((u) => u.target === target && u.c === c);
  return {
    rssMaxMb: round(Math.max(0, ...rs.map((u) => u.rssMaxMb ?? 0)), 1),
    cpuUsPerReq: round(median(rs.map((u) => u.cpuUsPerReq ?? NaN)), 1),
    readsPerReq: round(median(rs.map((u) => u.readsPerReq ?? NaN)), 2),
    writesPerReq: round(median(rs.map((u) => u.writesPerReq ?? NaN)), 2),
    pgCpuUsPerReq: round(median(rs.map((u) => u.pgCpuUsPerReq ?? NaN)), 1),
    rps: round(median(rs.map((u) => u.rps)), 1),
    p50_ms: round(median(rs.map((u) => u.p50_ms)), 3),
    p99_ms: round(median(rs.map((u) => u.p99_ms)), 3),
    p90_ms: round(median(rs.map((u) => u.p90_ms)), 3),
    max_ms: round(median(rs.map((u) => u.max_ms)), 3),
    errors: rs.reduce((a, u) => a + u.non2xx + u.errors_socket, 0),
  };
}

async function revocation(paths: StackPaths, hub: Hub, bridgeA: Bridge, benchUrl: string) {
  const env = 'revoke';
  await setupEnv(hub, env, benchUrl, join(ROOT, 'bench/schema'), false);
  const keys: Array<{ apiKey: string; keyId: string }> = [];
  for (let i = 0; i < REVOKES; i++) keys.push(await createKeyApi(hub, env, `r${i}`));
  const bridges: Bridge[] = [bridgeA];
  for (let i = 2; i <= REVOKE_BRIDGES; i++) bridges.push(await startBridge(paths, hub, `r${i}`, [env]));
  await waitHttp(bridgeA.proc, `${bridgeA.url}/readyz?project=${PROJECT}&env=${env}`, undefined, { 'x-santokit-service-token': hub.serviceToken });
  for (const b of bridges) await smokeCall(b.url, keys[REVOKES - 1]!.apiKey);

  const startedAt = new Array<number>(REVOKES).fill(Infinity);
  const returnedAt = new Array<number>(REVOKES).fill(Infinity);
  type Ack = { bridges: number; acked: number; lagging: string[] };
  const acks: Array<Ack | null> = [];
  const wallMs: number[] = [];
  const load = startLoad(
    bridges.map((b) => b.url),
    keys.map((k) => k.apiKey),
    4,
    REVOKE_LOAD_RPS,
  );
  await sleep(1000);
  log(
    `revocation: ${REVOKE_BRIDGES} Bridges under load (${load.count()} requests in the first second, target ${REVOKE_LOAD_RPS || 'max'} req/s); revoking ${REVOKES} keys with stk apikey revoke`,
  );
  for (let i = 0; i < REVOKES; i++) {
    startedAt[i] = performance.now();
    const out = await hub.cli(['apikey', 'revoke', '--project', PROJECT, '--env', env, '--key-id', keys[i]!.keyId, '--json']);
    returnedAt[i] = performance.now();
    wallMs.push(returnedAt[i]! - startedAt[i]!);
    const body = JSON.parse(out) as { ack?: Ack | null };
    acks.push(body.ack ?? null);
  }
  await sleep(500);
  const samples = await load.stop();
  for (const b of bridges.slice(1)) await b.proc.stop();
  const outcome = judge(samples, startedAt, returnedAt);
  // the Hub's own duration of each revoke request (commit + every Bridge's ack), from its request log
  const hubMs = hubResponseTimes(hub, new RegExp(`/envs/${env}/apikeys/[^/]+/revoke$`));
  const ackSource = hubMs.length === REVOKES ? 'hub-response-time' : 'cli-wall-clock';
  if (hubMs.length !== REVOKES)
    note(`revocation: found ${hubMs.length}/${REVOKES} revoke durations in the Hub log; reporting the CLI's wall-clock time instead`);
  const ackMs = hubMs.length === REVOKES ? hubMs : wallMs;
  const fullyAcked = acks.filter((a) => a && a.bridges === REVOKE_BRIDGES && a.acked === REVOKE_BRIDGES && a.lagging.length === 0).length;
  if (fullyAcked !== REVOKES) note(`revocation: only ${fullyAcked}/${REVOKES} revokes were acknowledged by all ${REVOKE_BRIDGES} Bridges`);
  if (outcome.acceptedAfterRevokeReturned) note(`revocation: ${outcome.acceptedAfterRevokeReturned} requests accepted after their key's revoke returned`);
  if (Object.keys(outcome.otherStatuses).length) note(`revocation: unexpected statuses under load ${JSON.stringify(outcome.otherStatuses)}`);
  if (outcome.rejectedAfterRevoke === 0) note('revocation: no request was sent after a revoke returned; the check proved nothing');
  log(
    `revocation: ${outcome.requests} requests, ${outcome.acceptedBeforeRevoke} accepted before revoke, ${outcome.rejectedAfterRevoke} rejected after, ${outcome.acceptedAfterRevokeReturned} accepted after revoke returned; ack p99 ${percentile(ackMs, 99).toFixed(1)} ms (${ackSource})`,
  );
  return {
    summary: {
      revokes: REVOKES,
      bridges: REVOKE_BRIDGES,
      accepted_after_revoke_returned: outcome.acceptedAfterRevokeReturned,
      ack_p99_ms: round(percentile(ackMs, 99), 1),
    },
    details: {
      ...outcome,
      ackSource,
      ackP50Ms: round(percentile(ackMs, 50), 1),
      cliWallP50Ms: round(percentile(wallMs, 50), 1),
      cliWallP99Ms: round(percentile(wallMs, 99), 1),
      fullyAcked,
    },
  };
}

/** Runs `proc` (started with --cpu-prof into `dir`) under wrk with `c` connections and summarises the measured window. */
async function profileUnderLoad(proc: Proc, dir: string, url: string, script: string, env: Record<string, string>, c: number) {
  await wrk({ url, script, connections: c, seconds: WARMUP_S, env });
  const fromUs = Number(process.hrtime.bigint() / 1000n);
  const res = await wrk({ url, script, connections: c, seconds: PROFILE_S, env });
  const toUs = Number(process.hrtime.bigint() / 1000n);
  await proc.stop();
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error(`no .cpuprofile written in ${dir}`);
  return { res, summary: summarizeProfile(join(dir, file), 40, { fromUs, toUs }) };
}

/**
 * CPU profiles of a Bridge (run from the TypeScript source so frames name src/ files) and of the minimal
 * server, one after the other under wrk (at the concurrency where the Bridge fares worst), summarised by area (µs of CPU per request, side by side)
 * and by function into bench/out/profile-bridge.txt.
 */
async function profileBridge(
  hub: Hub,
  apiKey: string,
  minimalScript: string,
  benchUrl: string,
  callLua: string,
  c: number,
  /**
   * what the Bridge is profiled against: the minimal server (bench/out/profile-bridge.txt), the node:http
   * floor, the yardstick with DB=0 (profile-floor.txt), or the BENCH_BASELINE checkout's own Bridge, run
   * from its source like this one, on its own Hub (profile-baseline.txt)
   */
  vs: 'minimal' | 'floor' | { rev: string; dir: string; hub: Hub; apiKey: string } = 'minimal',
): Promise<string> {
  const floor = vs === 'floor';
  const baseline = typeof vs === 'object' ? vs : null;
  const other = floor ? 'floor (DB=0)' : baseline ? `Bridge @${baseline.rev}` : 'minimal';
  const outName = floor ? 'profile-floor' : baseline ? 'profile-baseline' : 'profile';
  const base = join(OUT, outName);
  rmSync(base, { recursive: true, force: true });
  const dirs = { bridge: join(base, 'bridge'), minimal: join(base, 'minimal') };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });

  const bPort = await freePort();
  const bUrl = `http://127.0.0.1:${bPort}`;
  const bridge = start(
    'bridge-profile',
    process.execPath,
    ['--cpu-prof', `--cpu-prof-dir=${dirs.bridge}`, '--import', 'tsx', join(ROOT, 'bench/lib/bridge-entry.ts')],
    {
      cwd: ROOT,
      env: { STK_BRIDGE_PORT: String(bPort), STK_HUB_URL: hub.url, STK_SERVICE_TOKEN: hub.serviceToken, STK_BRIDGE_ID: 'bench-profile', STK_LOG_LEVEL: 'warn' },
      logDir: LOGS,
    },
  );
  await waitHttp(bridge, `${bUrl}/readyz?project=${PROJECT}&env=bench`, 90_000, { 'x-santokit-service-token': hub.serviceToken });
  await smokeCall(bUrl, apiKey);
  const b = await profileUnderLoad(bridge, dirs.bridge, bUrl, callLua, { API_KEY: apiKey }, c);

  const mPort = await freePort();
  let m: Awaited<ReturnType<typeof profileUnderLoad>>;
  if (baseline) {
    const mUrl = `http://127.0.0.1:${mPort}`;
    const proc = start(
      'baseline-profile',
      process.execPath,
      ['--cpu-prof', `--cpu-prof-dir=${dirs.minimal}`, '--import', 'tsx', join(baseline.dir, 'bench/lib/bridge-entry.ts')],
      {
        cwd: baseline.dir,
        env: {
          STK_BRIDGE_PORT: String(mPort),
          STK_HUB_URL: baseline.hub.url,
          STK_SERVICE_TOKEN: baseline.hub.serviceToken,
          STK_BRIDGE_ID: 'bench-profile-baseline',
          STK_LOG_LEVEL: 'warn',
        },
        logDir: LOGS,
      },
    );
    await waitHttp(proc, `${mUrl}/readyz?project=${PROJECT}&env=bench`, 90_000, { 'x-santokit-service-token': baseline.hub.serviceToken });
    await smokeCall(mUrl, baseline.apiKey);
    m = await profileUnderLoad(proc, dirs.minimal, mUrl, callLua, { API_KEY: baseline.apiKey }, c);
  } else m = await profileMinimal();

  async function profileMinimal() {
    // the yardstick has no signal handler: exit on SIGTERM so V8 writes the profile
    const minimal = start(
      floor ? 'floor-profile' : 'minimal-profile',
      process.execPath,
      [
        '--cpu-prof',
        `--cpu-prof-dir=${dirs.minimal}`,
        '--input-type=module',
        '-e',
        `process.on('SIGTERM', () => process.exit(0)); await import(${JSON.stringify(minimalScript)});`,
      ],
      { env: { FRAMEWORK: 'http', DRIVER: 'pg', AUTH: '1', PORT: String(mPort), DATABASE_URL: benchUrl, ...(floor ? { DB: '0' } : {}) }, logDir: LOGS },
    );
    await waitFor(async () => minimal.logs().includes('ready'), 30_000, 'the minimal server (profiled)');
    return profileUnderLoad(minimal, dirs.minimal, `http://127.0.0.1:${mPort}`, callLua, {}, c);
  }

  const perReq = (ms: number, requests: number) => (ms * 1000) / Math.max(1, requests);
  const areas = new Map<string, { bridge: number; minimal: number }>();
  for (const a of b.summary.areas) areas.set(a.area, { bridge: perReq(a.ms, b.res.requests), minimal: 0 });
  for (const a of m.summary.areas) areas.set(a.area, { bridge: areas.get(a.area)?.bridge ?? 0, minimal: perReq(a.ms, m.res.requests) });
  const rows = [...areas].sort((x, y) => y[1].bridge - x[1].bridge).filter(([, v]) => v.bridge >= 0.2 || v.minimal >= 0.2);
  const totalB = perReq(b.summary.busyMs, b.res.requests);
  const totalM = perReq(m.summary.busyMs, m.res.requests);
  const cmp = [
    `CPU per request under wrk c=${c} for ${PROFILE_S} s, profiled (node --cpu-prof slows both down):`,
    `  Bridge ${b.res.rps.toFixed(0)} req/s, ${totalB.toFixed(1)} µs busy CPU per request; ${other} ${m.res.rps.toFixed(0)} req/s, ${totalM.toFixed(1)} µs`,
    '',
    `  area                              Bridge µs/req   ${other} µs/req`,
    ...rows.map(([a, v]) => `  ${a.padEnd(32)} ${v.bridge.toFixed(1).padStart(14)} ${v.minimal.toFixed(1).padStart(16)}`),
  ].join('\n');
  const text = `${cmp}\n\n=== Bridge ===\n${formatProfile(b.summary)}\n\n=== ${other} server ===\n${formatProfile(m.summary)}\n`;
  writeFileSync(join(OUT, floor ? 'profile-floor.txt' : baseline ? 'profile-baseline.txt' : 'profile-bridge.txt'), text);
  return text;
}

// ---------------------------------------------------------------- main

/**
 * One benchmark per machine at a time: two runs would share the PostgreSQL cluster (one drops the other's
 * database, one stops it under the other) and would measure each other's load anyway. A second run
 * waits for the first (up to BENCH_LOCK_WAIT_S, 3600 s), then takes the lock.
 */
async function lockMachine(): Promise<() => void> {
  const p = join(tmpdir(), 'stk-bench.lock');
  const waitUntil = Date.now() + int(process.env.BENCH_LOCK_WAIT_S, 3600) * 1000;
  let told = false;
  for (;;) {
    try {
      writeFileSync(p, `${process.pid}\n`, { flag: 'wx' });
      return () => {
        try {
          if (readFileSync(p, 'utf8').trim() === String(process.pid)) rmSync(p);
        } catch {
          /* gone */
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let pid = 0;
      try {
        pid = Number(readFileSync(p, 'utf8').trim());
      } catch {
        continue; // removed between the two calls: try again
      }
      let alive = false;
      try {
        process.kill(pid, 0);
        alive = true;
      } catch (err) {
        alive = (err as NodeJS.ErrnoException).code === 'EPERM';
      }
      if (!alive || pid === process.pid) {
        rmSync(p, { force: true });
        continue;
      }
      if (Date.now() > waitUntil)
        throw new Error(
          `another benchmark (pid ${pid}) has held ${p} for longer than BENCH_LOCK_WAIT_S; two runs would break each other's database and numbers`,
        );
      if (!told) log(`another benchmark (pid ${pid}) is running on this machine: waiting for it (${p})`);
      told = true;
      await sleep(2000);
    }
  }
}

async function main(): Promise<void> {
  rmSync(LOGS, { recursive: true, force: true });
  mkdirSync(LOGS, { recursive: true });
  const scratch = mkdtempSync(join(tmpdir(), 'stk-bench-'));
  if (!existsSync(join(ROOT, 'dist/cli.js'))) throw new Error('dist/ is missing: run `npm run build` (npm run bench does)');
  const paths: StackPaths = { root: ROOT, stk: snapshotBuild(scratch), logDir: LOGS, scratch };

  const summary: Record<string, unknown> = {
    rounds: ROUNDS,
    ratios: null,
    bridge: null,
    keys_scaling: null,
    verify_ns: null,
    verify_under_load: null,
    verify_vs_hmac: null,
    floor: null,
    million_keys: null,
    acks_by_bridges: null,
    revocation: null,
    cli: null,
    memory: null,
    metrics: null,
  };
  const details: Record<string, unknown> = { startedAt: new Date().toISOString(), config: { ROUNDS, WARMUP_S, DURATION_S, sections: [...SECTIONS] } };
  const write = () => {
    mkdirSync(OUT, { recursive: true });
    writeFileSync(join(OUT, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
    writeFileSync(join(OUT, 'details.json'), JSON.stringify({ ...details, problems, elapsedS: round((Date.now() - t0) / 1000, 1) }, null, 2) + '\n');
  };

  if (SECTIONS.has('cli')) {
    const c = benchCli(paths.stk);
    summary.cli = { cold_start_ratio_vs_node: round(c.ratio, 2) };
    details.cli = { stkVersionMedianMs: round(c.stkMs, 1), nodeE0MedianMs: round(c.nodeMs, 1) };
    log(`cli: stk --version ${c.stkMs.toFixed(1)} ms vs node -e 0 ${c.nodeMs.toFixed(1)} ms → ${c.ratio.toFixed(2)}×`);
  }
  if (SECTIONS.has('verify')) {
    const v = benchVerify();
    summary.verify_ns = { p50: v.p50, p99: v.p99 };
    details.verify = v;
    summary.verify_vs_hmac = { tight_p50_ratio: round(v.p50 / v.hmacP50, 2), tight_p99_ratio: round(v.p99 / v.hmacP99, 2) };
    log(
      `verify: p50 ${v.p50} ns, p99 ${v.p99} ns per call on a ${v.tableSize}-key table; a bare HMAC-SHA-256 beside it p50 ${v.hmacP50} ns, p99 ${v.hmacP99} ns`,
    );
  }
  write();
  if (!STACK_SECTIONS.some((x) => SECTIONS.has(x))) return;

  ensureWrk();
  const y = await ensureYardsticks();
  log(`starting a throwaway PostgreSQL on port ${PG_PORT} (${PG_DIR})`);
  const { benchUrl } = await startPostgres();
  const ratios: Record<string, number | string> = {};
  try {
    // Hub A + Bridge A: one key
    // info: its request log gives the server-side duration of each revoke (Hub A is not on the /call path)
    const hubA = await startHub(paths, 'a', 'info');
    await setupEnv(hubA, 'bench', benchUrl, join(ROOT, 'bench/schema'), true);
    await seedUsers(benchUrl);
    const key = await createKeyCli(hubA, 'bench', 'bench');
    const bridgeA = await startBridge(paths, hubA, 'a', ['bench']);
    await smokeCall(bridgeA.url, key.apiKey);
    log(`Hub A ${hubA.url}, Bridge A ${bridgeA.url} (1 key), database ${benchUrl.replace(/\/\/[^@]*@/, '//')}`);
    const bridgeTarget: Target = {
      id: 'bridge',
      label: 'Bridge (1 key)',
      url: bridgeA.url,
      script: y.callLua,
      env: { API_KEY: key.apiKey },
      concurrency: [10, 50],
      proc: bridgeA.proc,
    };
    const startMinimal = async (name: string, env: Record<string, string> = {}) => {
      const port = await freePort();
      const proc = start(name, process.execPath, [y.minimal], {
        env: { FRAMEWORK: 'http', DRIVER: 'pg', AUTH: '1', PORT: String(port), DATABASE_URL: benchUrl, ...env },
        logDir: LOGS,
      });
      await waitFor(async () => proc.logs().includes('ready'), 30_000, `the ${name} server`);
      return { proc, url: `http://127.0.0.1:${port}` };
    };

    if (SECTIONS.has('rounds') || SECTIONS.has('floor')) {
      const targets: Target[] = [bridgeTarget];
      const stops: Array<() => Promise<void>> = [];
      let base: Awaited<ReturnType<typeof startBaseline>> | null = null;
      if (SECTIONS.has('rounds')) {
        // Hub B + Bridge B: the same env and database, plus 100,000 keys bulk-loaded into Hub B's store
        const hubB = await startHub(paths, 'b');
        await setupEnv(hubB, 'bench', benchUrl, join(ROOT, 'bench/schema'), true);
        const keyB = await createKeyCli(hubB, 'bench', 'bench');
        const bulk = bulkInsertKeys({ dbFile: hubB.dbFile, secretKeyHex: hubB.secretKey, count: BULK_KEYS - 1 });
        const bridgeB = await startBridge(paths, hubB, 'b', ['bench']);
        await smokeCall(bridgeB.url, keyB.apiKey);
        const snap = await fetch(`${hubB.url}/internal/sync/snapshot`, { headers: { 'x-santokit-service-token': hubB.serviceToken } })
          .then(async (r) => (r.ok ? ((await r.json()) as { keys?: unknown[]; keyCount?: number }) : null))
          .catch(() => null);
        const keyCount = snap ? (snap.keyCount ?? snap.keys?.length ?? null) : null;
        log(`Hub B ${hubB.url}, Bridge B ${bridgeB.url}: ${bulk + 1} keys in the store${keyCount !== null ? `, ${keyCount} in the sync snapshot` : ''}`);
        details.keysInStoreB = bulk + 1;
        details.keysInSnapshotB = keyCount;

        const minimal = await startMinimal('minimal');
        const peerPort = await freePort();
        const peer = start('peer', process.execPath, [y.peer], { env: { PORT: String(peerPort), DATABASE_URL: benchUrl }, logDir: LOGS });
        await waitHttp(peer, `http://127.0.0.1:${peerPort}/users?limit=1`);
        base = BASELINE ? await startBaseline(paths, benchUrl) : null;
        targets.push(
          {
            id: 'bridge100k',
            label: 'Bridge (100,000 keys)',
            url: bridgeB.url,
            script: y.callLua,
            env: { API_KEY: keyB.apiKey },
            concurrency: [10],
            proc: bridgeB.proc,
          },
          { id: 'minimal', label: 'minimal http+pg+auth', url: minimal.url, script: y.callLua, concurrency: [10, 50], proc: minimal.proc },
          { id: 'peer', label: 'peer (Platformatic)', url: `http://127.0.0.1:${peerPort}/users?limit=1`, script: y.getLua, concurrency: [10, 50], proc: peer },
        );
        if (base)
          targets.push({
            id: 'baseline',
            label: `Bridge @${base.rev}`,
            url: base.bridge.url,
            script: y.callLua,
            env: { API_KEY: base.key.apiKey },
            concurrency: [10, 50],
            proc: base.bridge.proc,
          });
        stops.push(minimal.proc.stop, peer.stop, bridgeB.proc.stop, hubB.proc.stop);
        // the baseline's Hub stays up for its profile (BENCH_ONLY=…,profile), stopped after it
        if (base) stops.push(base.bridge.proc.stop, ...(SECTIONS.has('profile') ? [] : [base.hub.proc.stop]));
      }
      if (SECTIONS.has('floor')) {
        // the physical references (issue 18 part 1): node:http + the key check + a constant body, and
        // PostgreSQL answering the same SELECT without HTTP
        const floor = await startMinimal('floor', { DB: '0' });
        targets.push(
          { id: 'floor', label: 'node:http floor (DB=0)', url: floor.url, script: y.callLua, concurrency: [10, 50], proc: floor.proc },
          {
            id: 'pgbench',
            label: 'pgbench -M extended',
            url: benchUrl,
            script: y.selectSql,
            concurrency: [10, 50],
            runner: (c, seconds) => pgbench({ url: benchUrl, script: y.selectSql, connections: c, seconds }),
          },
        );
        stops.push(floor.proc.stop);
      }
      const { runs, rssMax } = await rounds(targets);
      details.runs = runs;
      const r3 = (a: TargetId, b: TargetId, c: number) => round(ratioOfMedians(runs, a, b, c), 3);
      const perTarget: Record<string, unknown> = { bridge: { c10: stats(runs, 'bridge', 10), c50: stats(runs, 'bridge', 50) } };
      if (SECTIONS.has('rounds')) {
        Object.assign(ratios, {
          bridge_vs_minimal_c10: r3('bridge', 'minimal', 10),
          bridge_vs_minimal_c50: r3('bridge', 'minimal', 50),
          bridge_vs_peer_c10: r3('bridge', 'peer', 10),
          bridge_vs_peer_c50: r3('bridge', 'peer', 50),
          ...(base
            ? {
                baseline: base.rev,
                bridge_vs_baseline_c10: r3('bridge', 'baseline', 10),
                bridge_vs_baseline_c50: r3('bridge', 'baseline', 50),
                cpu_per_req_bridge_vs_baseline_c50: round(ratioOfCpu(runs, 'bridge', 'baseline', 50), 3),
              }
            : {}),
        });
        summary.keys_scaling = { rps_ratio_100k_vs_1_keys: r3('bridge100k', 'bridge', 10) };
        summary.memory = { bridge_rss_mb_under_load: round(rssMax, 1) };
        Object.assign(perTarget, {
          minimal: { c10: stats(runs, 'minimal', 10), c50: stats(runs, 'minimal', 50) },
          peer: { c10: stats(runs, 'peer', 10), c50: stats(runs, 'peer', 50) },
          bridge100k: { c10: stats(runs, 'bridge100k', 10) },
          ...(base ? { baseline: { c10: stats(runs, 'baseline', 10), c50: stats(runs, 'baseline', 50) } } : {}),
        });
      }
      if (SECTIONS.has('floor')) {
        Object.assign(ratios, {
          bridge_vs_http_floor_c10: r3('bridge', 'floor', 10),
          bridge_vs_http_floor_c50: r3('bridge', 'floor', 50),
          bridge_vs_pgbench_c10: r3('bridge', 'pgbench', 10),
          bridge_vs_pgbench_c50: r3('bridge', 'pgbench', 50),
        });
        Object.assign(perTarget, {
          floor: { c10: stats(runs, 'floor', 10), c50: stats(runs, 'floor', 50) },
          pgbench: { c10: stats(runs, 'pgbench', 10), c50: stats(runs, 'pgbench', 50) },
        });
        const cpu = (t: TargetId, c: number) => stats(runs, t, c).cpuUsPerReq;
        const pgCpu = (t: TargetId, c: number) => stats(runs, t, c).pgCpuUsPerReq;
        summary.floor = {
          cpu_us_per_req: {
            bridge: { c10: cpu('bridge', 10), c50: cpu('bridge', 50), postgres_c10: pgCpu('bridge', 10), postgres_c50: pgCpu('bridge', 50) },
            http_floor: { c10: cpu('floor', 10), c50: cpu('floor', 50) },
            pgbench_postgres: { c10: cpu('pgbench', 10), c50: cpu('pgbench', 50) },
          },
        };
      }
      summary.ratios = ratios;
      const pick = ({ rps, p50_ms, p99_ms, errors }: ReturnType<typeof stats>) => ({ rps, p50_ms, p99_ms, errors });
      summary.bridge = { c10: pick(stats(runs, 'bridge', 10)), c50: pick(stats(runs, 'bridge', 50)) };
      details.perTarget = perTarget;
      write();
      await Promise.all(stops.map((f) => f()));
      const missed =
        SECTIONS.has('rounds') &&
        (Number(ratios.bridge_vs_minimal_c10) < 1.2 ||
          Number(ratios.bridge_vs_minimal_c50) < 1.2 ||
          Number(ratios.bridge_vs_peer_c10) < 1.3 ||
          Number(ratios.bridge_vs_peer_c50) < 1.3);
      if (missed || SECTIONS.has('profile')) {
        const c = Number(ratios.bridge_vs_minimal_c10) <= Number(ratios.bridge_vs_minimal_c50) ? 10 : 50;
        log(`profiling a Bridge and the minimal server at c=${c} (node --cpu-prof)…`);
        const text = await profileBridge(hubA, key.apiKey, y.minimal, benchUrl, y.callLua, c);
        details.profile = 'bench/out/profile-bridge.txt';
        log(`profile:\n${text.split('\n=== Bridge')[0]}\n  … (by function: bench/out/profile-bridge.txt)`);
      }
      if (base && SECTIONS.has('profile')) {
        log(`profiling a Bridge and the Bridge @${base.rev} at c=10 (node --cpu-prof, both from their source)…`);
        const text = await profileBridge(hubA, key.apiKey, y.minimal, benchUrl, y.callLua, 10, {
          rev: base.rev,
          dir: BASELINE!,
          hub: base.hub,
          apiKey: base.key.apiKey,
        });
        await base.hub.proc.stop();
        details.profileBaseline = 'bench/out/profile-baseline.txt';
        log(`profile against the baseline:\n${text.split('\n=== Bridge')[0]}\n  … (by function: bench/out/profile-baseline.txt)`);
      }
      if (SECTIONS.has('floor')) {
        log('profiling a Bridge and the node:http floor at c=50 (node --cpu-prof)…');
        const text = await profileBridge(hubA, key.apiKey, y.minimal, benchUrl, y.callLua, 50, 'floor');
        details.profileFloor = 'bench/out/profile-floor.txt';
        log(`profile against the floor:\n${text.split('\n=== Bridge')[0]}\n  … (by function: bench/out/profile-floor.txt)`);
      }
    }

    if (SECTIONS.has('writes')) {
      // issue 18 part 2: single-row insert (a new id per request) and update by id, Bridge (permissions,
      // id rules, RETURNING projection) against the minimal server, in the same rounds
      const minimal = await startMinimal('minimal-w');
      const script = join(ROOT, 'bench/lua/write.lua');
      const targets: Target[] = [
        {
          id: 'bridgeInsert',
          label: 'Bridge insert',
          url: bridgeA.url,
          script,
          env: { API_KEY: key.apiKey, OP: 'insert' },
          concurrency: [10, 50],
          proc: bridgeA.proc,
        },
        { id: 'minimalInsert', label: 'minimal insert', url: minimal.url, script, env: { OP: 'insert' }, concurrency: [10, 50], proc: minimal.proc },
        {
          id: 'bridgeUpdate',
          label: 'Bridge update',
          url: bridgeA.url,
          script,
          env: { API_KEY: key.apiKey, OP: 'update' },
          concurrency: [10, 50],
          proc: bridgeA.proc,
        },
        { id: 'minimalUpdate', label: 'minimal update', url: minimal.url, script, env: { OP: 'update' }, concurrency: [10, 50], proc: minimal.proc },
      ];
      const { runs } = await rounds(targets);
      details.writeRuns = runs;
      const r3 = (a: TargetId, b: TargetId, c: number) => round(ratioOfMedians(runs, a, b, c), 3);
      Object.assign(ratios, {
        insert_vs_minimal_c10: r3('bridgeInsert', 'minimalInsert', 10),
        insert_vs_minimal_c50: r3('bridgeInsert', 'minimalInsert', 50),
        update_vs_minimal_c10: r3('bridgeUpdate', 'minimalUpdate', 10),
        update_vs_minimal_c50: r3('bridgeUpdate', 'minimalUpdate', 50),
      });
      summary.ratios = ratios;
      details.writes = Object.fromEntries(targets.map((t) => [t.id, { c10: stats(runs, t.id, 10), c50: stats(runs, t.id, 50) }]));
      write();
      await minimal.proc.stop();
    }

    if (SECTIONS.has('verifyload')) {
      log('verify under load: a Bridge timing each key check beside a bare HMAC-SHA-256, wrk c=50…');
      const v = await verifyUnderLoad({ paths, hub: hubA, apiKey: key.apiKey, callLua: y.callLua, connections: 50, warmupS: WARMUP_S, seconds: DURATION_S });
      summary.verify_under_load = v.summary;
      summary.verify_vs_hmac = {
        ...(summary.verify_vs_hmac as object | undefined),
        load_p50_ratio: round(v.summary.p50_ns / v.summary.hmac_p50_ns, 2),
        load_p99_ratio: v.summary.p99_ratio,
      };
      details.verifyUnderLoad = { samples: v.samples, rps: v.res.rps };
      details.verifyCdf = { verifyNs: cdfPoints(v.verifyNs), hmacNs: cdfPoints(v.hmacNs) };
      log(
        `verify under load: ${v.samples} samples at ${v.res.rps.toFixed(0)} req/s: verifyKey p50 ${v.summary.p50_ns} ns p99 ${v.summary.p99_ns} ns; bare HMAC p50 ${v.summary.hmac_p50_ns} ns p99 ${v.summary.hmac_p99_ns} ns → p99 ratio ${v.summary.p99_ratio}`,
      );
      write();
    }

    if (SECTIONS.has('reject')) {
      const r = await benchReject({
        paths,
        hub: hubA,
        env: 'bench',
        rounds: ROUNDS,
        warmupS: WARMUP_S,
        durationS: DURATION_S,
        connections: int(process.env.BENCH_REJECT_C, 50),
        floodRps: int(process.env.BENCH_REJECT_FLOOD_RPS, 2000),
        outDir: OUT,
        logDir: LOGS,
        profile: SECTIONS.has('profile'),
        note,
      });
      Object.assign(ratios, r.summary.ratios);
      summary.ratios = ratios;
      summary.reject = r.summary.reject;
      details.reject = r.details;
      write();
    }

    if (SECTIONS.has('globalrate')) {
      // issue 16 part 1: global per-key limits on Redis, accuracy at 2× and overhead at 10 % (bench/lib/global-rate.ts)
      const g = await globalRate({
        paths,
        hub: hubA,
        env: 'bench',
        callLua: y.callLua,
        seconds: int(process.env.BENCH_GLOBALRATE_S, 120),
        overheadSeconds: DURATION_S,
        rounds: ROUNDS,
      });
      summary.global_rate_limit = g.summary;
      details.globalRate = g.details;
      write();
    }

    if (SECTIONS.has('metrics')) {
      const r = await benchMetrics({ paths, hub: hubA, apiKey: key.apiKey, callLua: y.callLua, rounds: ROUNDS, warmupS: WARMUP_S, durationS: DURATION_S });
      summary.metrics = r.summary;
      details.metrics = r.details;
      write();
    }

    if (SECTIONS.has('revoke')) {
      const r = await revocation(paths, hubA, bridgeA, benchUrl);
      summary.revocation = r.summary;
      details.revocation = r.details;
      write();
    }

    if (SECTIONS.has('acks')) {
      log(`acks: revoke acknowledgements with ${ACK_BRIDGES.join(', ')} Bridges on Hub A, ${ACK_REVOKES} revokes each…`);
      summary.acks_by_bridges = await acksByBridges({
        paths,
        hub: hubA,
        benchUrl,
        schemaDir: join(ROOT, 'bench/schema'),
        counts: ACK_BRIDGES,
        revokes: ACK_REVOKES,
      });
      write();
    }

    if (SECTIONS.has('million')) {
      log(`million: a Hub with ${MILLION_KEYS.toLocaleString('en')} keys and ${MILLION_BRIDGES} Bridges…`);
      const m = await startMillion({ paths, benchUrl, schemaDir: join(ROOT, 'bench/schema'), keys: MILLION_KEYS, bridges: MILLION_BRIDGES });
      const idleRss = m.bridges.map((b) => round(rssMb(b.proc.pid), 1));
      const { runs } = await rounds([
        { ...bridgeTarget, concurrency: [10] },
        {
          id: 'bridge1m',
          label: 'Bridge (1,000,000 keys)',
          url: m.bridges[0]!.url,
          script: y.callLua,
          env: { API_KEY: m.key.apiKey },
          concurrency: [10],
          proc: m.bridges[0]!.proc,
        },
      ]);
      details.millionRuns = runs;
      const rv = await millionRevokes(m.hub, m.sample, MILLION_BRIDGES, 100);
      await Promise.all([...m.bridges.map((b) => b.proc.stop()), m.hub.proc.stop()]);
      log('million: verifyKey in-process on a 1,000,000-key table…');
      const v = benchVerify({ tableSize: MILLION_KEYS });
      summary.million_keys = {
        rss_mb: round(Math.max(...runs.filter((r) => r.target === 'bridge1m').map((r) => r.rssMaxMb ?? 0)), 1),
        snapshot_s: round(Math.max(...m.snapshotS), 1),
        throughput_ratio: round(ratioOfMedians(runs, 'bridge1m', 'bridge', 10), 3),
        verify_p99_ns: v.p99,
        revoke_ack_p99_ms: rv.p99_ms,
      };
      details.million = {
        keys: MILLION_KEYS,
        snapshotS: m.snapshotS.map((x) => round(x, 2)),
        hubCpuMsPerSnapshot: m.hubCpuMsPerSnapshot.map((x) => round(x, 0)),
        bridgeIdleRssMb: idleRss,
        bridge1m: stats(runs, 'bridge1m', 10),
        bridge1: stats(runs, 'bridge', 10),
        revokes: rv,
        verify: v,
      };
      log(`million: ${JSON.stringify(summary.million_keys)}`);
      write();
    }
  } finally {
    await stopAll();
    await run('bash', [join(ROOT, 'scripts/test-pg.sh'), 'stop'], { env: pgEnv }).catch(() => undefined);
    rmSync(scratch, { recursive: true, force: true });
    write();
  }
}

function report(): void {
  const s = JSON.parse(readFileSync(join(OUT, 'summary.json'), 'utf8'));
  const d = JSON.parse(readFileSync(join(OUT, 'details.json'), 'utf8'));
  const f = (x: unknown, digits = 0) => (typeof x === 'number' ? x.toFixed(digits) : '–');
  const rows: string[][] = [['config', 'c=10 req/s', 'c=50 req/s', 'p50 ms c=10', 'p99 ms c=10', 'p99 ms c=50', 'CPU µs/req c=50', 'errors', 'max RSS MB']];
  type St = { rps: number; p50_ms: number; p99_ms: number; errors: number; rssMaxMb?: number; cpuUsPerReq?: number };
  const line = (name: string, a?: St, b?: St) =>
    rows.push([
      name,
      f(a?.rps),
      f(b?.rps),
      f(a?.p50_ms, 2),
      f(a?.p99_ms, 2),
      f(b?.p99_ms, 2),
      f((b ?? a)?.cpuUsPerReq),
      f((a?.errors ?? 0) + (b?.errors ?? 0)),
      f(Math.max(a?.rssMaxMb ?? 0, b?.rssMaxMb ?? 0)),
    ]);
  if (s.bridge) {
    line('Bridge (1 key)', d.perTarget?.bridge?.c10, d.perTarget?.bridge?.c50);
    line('Bridge (100,000 keys)', d.perTarget?.bridge100k?.c10);
    line('minimal http+pg+auth', d.perTarget?.minimal?.c10, d.perTarget?.minimal?.c50);
    line('peer (Platformatic)', d.perTarget?.peer?.c10, d.perTarget?.peer?.c50);
    if (d.perTarget?.baseline) line(`Bridge @${s.ratios?.baseline}`, d.perTarget.baseline.c10, d.perTarget.baseline.c50);
    if (d.perTarget?.floor) line('node:http floor (DB=0)', d.perTarget.floor.c10, d.perTarget.floor.c50);
    if (d.perTarget?.pgbench) line('pgbench -M extended (PG CPU)', d.perTarget.pgbench.c10, d.perTarget.pgbench.c50);
    const w = d.writes ?? {};
    for (const [id, name] of [
      ['bridgeInsert', 'Bridge insert'],
      ['minimalInsert', 'minimal insert'],
      ['bridgeUpdate', 'Bridge update'],
      ['minimalUpdate', 'minimal update'],
    ] as const)
      if (w[id]) line(name, w[id].c10, w[id].c50);
    process.stdout.write(`\nMedians of ${s.rounds} interleaved rounds (${WARMUP_S} s warm-up + ${DURATION_S} s measured, wrk -t2):\n\n${table(rows)}\n\n`);
  }
  const chk = (v: unknown, ok: (x: number) => boolean, target: string) =>
    typeof v === 'number' ? `${v}  ${ok(v) ? 'ok' : 'MISSED'} (target ${target})` : '– (not measured)';
  const t: string[][] = [
    ['measure', 'value'],
    ['bridge / minimal, c=10', chk(s.ratios?.bridge_vs_minimal_c10, (x) => x >= 1.2, '≥ 1.2')],
    ['bridge / minimal, c=50', chk(s.ratios?.bridge_vs_minimal_c50, (x) => x >= 1.2, '≥ 1.2')],
    ['bridge / peer, c=10', chk(s.ratios?.bridge_vs_peer_c10, (x) => x >= 1.3, '≥ 1.3')],
    ['bridge / peer, c=50', chk(s.ratios?.bridge_vs_peer_c50, (x) => x >= 1.3, '≥ 1.3')],
    ...(s.ratios?.baseline
      ? [
          [`bridge / bridge @${s.ratios.baseline}, c=10 · c=50`, `${s.ratios.bridge_vs_baseline_c10} · ${s.ratios.bridge_vs_baseline_c50}`],
          [`CPU per request / @${s.ratios.baseline}, c=50`, String(s.ratios.cpu_per_req_bridge_vs_baseline_c50)],
        ]
      : []),
    ['bridge / node:http floor, c=10', chk(s.ratios?.bridge_vs_http_floor_c10, (x) => x >= 0.6, '≥ 0.6')],
    ['bridge / node:http floor, c=50', chk(s.ratios?.bridge_vs_http_floor_c50, (x) => x >= 0.75, '≥ 0.75')],
    [
      'CPU µs/req c=10 · c=50: Bridge (+PG) · floor · pgbench PG',
      s.floor
        ? `${f(s.floor.cpu_us_per_req.bridge.c10)} · ${f(s.floor.cpu_us_per_req.bridge.c50)} (+${f(s.floor.cpu_us_per_req.bridge.postgres_c10)} · ${f(s.floor.cpu_us_per_req.bridge.postgres_c50)}) · ${f(s.floor.cpu_us_per_req.http_floor.c10)} · ${f(s.floor.cpu_us_per_req.http_floor.c50)} · ${f(s.floor.cpu_us_per_req.pgbench_postgres.c10)} · ${f(s.floor.cpu_us_per_req.pgbench_postgres.c50)}`
        : '–',
    ],
    ['insert / minimal, c=10', chk(s.ratios?.insert_vs_minimal_c10, (x) => x >= 1.2, '≥ 1.2')],
    ['insert / minimal, c=50', chk(s.ratios?.insert_vs_minimal_c50, (x) => x >= 1.2, '≥ 1.2')],
    ['update / minimal, c=10', chk(s.ratios?.update_vs_minimal_c10, (x) => x >= 1.2, '≥ 1.2')],
    ['update / minimal, c=50', chk(s.ratios?.update_vs_minimal_c50, (x) => x >= 1.2, '≥ 1.2')],
    [
      'verify under load c=50: verifyKey p50/p99 ns · bare HMAC p50/p99 ns',
      s.verify_under_load
        ? `${s.verify_under_load.p50_ns}/${s.verify_under_load.p99_ns} · ${s.verify_under_load.hmac_p50_ns}/${s.verify_under_load.hmac_p99_ns}`
        : '–',
    ],
    ['verify / bare HMAC p99 under load', chk(s.verify_under_load?.p99_ratio, (x) => x <= 1.5, '≤ 1.5')],
    ['verify / bare HMAC p99, tight loop', chk(s.verify_vs_hmac?.tight_p99_ratio, () => true, 'reported')],
    ['1M keys: Bridge RSS under load MB', chk(s.million_keys?.rss_mb, (x) => x <= 350, '≤ 350')],
    ['1M keys: snapshot s', chk(s.million_keys?.snapshot_s, (x) => x <= 15, '≤ 15')],
    ['1M keys / 1 key throughput', chk(s.million_keys?.throughput_ratio, (x) => x >= 0.95, '≥ 0.95')],
    ['1M keys: verify p99 ns', chk(s.million_keys?.verify_p99_ns, () => true, 'reported')],
    ['1M keys: revoke ack p99 ms (3 Bridges)', chk(s.million_keys?.revoke_ack_p99_ms, (x) => x <= 50, '≤ 50')],
    ...(['1', '3', '10'] as const).map((n) => [
      `revoke ack p50 / p99 ms, ${n} Bridge${n === '1' ? '' : 's'}`,
      s.acks_by_bridges?.[n]
        ? `${s.acks_by_bridges[n].p50_ms} / ${s.acks_by_bridges[n].p99_ms}  (Hub CPU ${s.acks_by_bridges[n].hub_cpu_ms_per_ack} ms/ack)`
        : '–',
    ]),
    ['Hub CPU per ack: slope per added Bridge', chk(s.acks_by_bridges?.slope_hub_cpu_ms_per_bridge, () => true, 'reported; linear or better')],
    ['100k keys / 1 key', chk(s.keys_scaling?.rps_ratio_100k_vs_1_keys, (x) => x >= 0.95, '≥ 0.95')],
    ['verify p50 / p99 ns', s.verify_ns ? `${s.verify_ns.p50} / ${chk(s.verify_ns.p99, (x) => x <= 10_000, '≤ 10000')}` : '–'],
    ['global rate limit: worst 60-s window error (3 Bridges, 2×)', chk(s.global_rate_limit?.worst_window_error, (x) => x <= 0.05, '≤ 0.05')],
    ['global rate limit: throughput Redis on / off, key at ≤ 10 %', chk(s.global_rate_limit?.overhead_ratio, (x) => x >= 0.95, '≥ 0.95')],
    ['global rate limit: CPU per request Redis on / off', chk(s.global_rate_limit?.overhead_cpu_ratio, () => true, 'reported')],
    [
      '(control: Redis off / off, BENCH_GLOBALRATE_CONTROL=1)',
      typeof s.global_rate_limit?.control_ratio === 'number' ? String(s.global_rate_limit.control_ratio) : '–',
    ],
    ['accepted after revoke', chk(s.revocation?.accepted_after_revoke_returned, (x) => x === 0, '0')],
    ['revoke ack p99 ms', chk(s.revocation?.ack_p99_ms, () => true, 'reported')],
    ['429 CPU / served CPU per request', chk(s.ratios?.rejected_429_cpu_vs_served, (x) => x <= 0.3, '≤ 0.3')],
    ['401 CPU / served CPU per request', chk(s.ratios?.rejected_401_cpu_vs_served, (x) => x <= 0.3, '≤ 0.3')],
    ['neighbour req/s under a 429 flood', chk(s.reject?.neighbour_throughput_ratio, (x) => x >= 0.9, '≥ 0.9')],
    ['(floor: bare node:http 401 / served CPU)', typeof s.reject?.floor_cpu_vs_served === 'number' ? String(s.reject.floor_cpu_vs_served) : '–'],
    ['stk --version / node -e 0', chk(s.cli?.cold_start_ratio_vs_node, (x) => x <= 2, '≤ 2')],
    ['Bridge RSS under load MB', chk(s.memory?.bridge_rss_mb_under_load, (x) => x <= 150, '≤ 150')],
    ['/metrics on ÷ off req/s', chk(s.metrics?.on_off_ratio, (x) => x >= 0.97, '≥ 0.97, within noise')],
    ['/metrics on ÷ off CPU per request', chk(s.metrics?.cpu_per_req_on_off_ratio, (x) => x <= 1.03, '≤ 1.03')],
  ];
  process.stdout.write(`${table(t)}\n`);
  const svgs = writePlots(OUT, d);
  process.stdout.write(
    `\nplots: ${svgs.map((f) => `bench/out/${f}`).join(', ')}\nsummary: bench/out/summary.json, every run: bench/out/details.json, logs: bench/out/logs/\n`,
  );
  if (d.problems?.length) process.stdout.write(`\nPROBLEMS (${d.problems.length}):\n${d.problems.map((p: string) => `  - ${p}`).join('\n')}\n`);
  process.stdout.write(`finished in ${d.elapsedS} s\n`);
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log('interrupted: stopping everything');
    // still waiting for another run's lock: its PostgreSQL is not ours to stop
    if (!locked) process.exit(130);
    void stopAll()
      .then(() => run('bash', [join(ROOT, 'scripts/test-pg.sh'), 'stop'], { env: pgEnv }))
      .finally(() => process.exit(130));
  });
}

let unlock: () => void = () => {};
let locked = false;
process.on('exit', () => unlock());
try {
  unlock = await lockMachine();
  locked = true;
  await main();
  report();
  if (problems.length) process.exitCode = 1;
} catch (e) {
  log(`FAILED: ${(e as Error).stack ?? e}`);
  await stopAll();
  process.exitCode = 1;
}
