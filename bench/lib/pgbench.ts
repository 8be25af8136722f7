import { run } from './procs.js';
import type { WrkResult } from './wrk.js';

/**
 * One `pgbench -M extended` run of the yardsticks' select.sql (`SELECT id, email, name FROM users LIMIT 1`)
 * against the bench database: what PostgreSQL answers without HTTP (issue 18 part 1, the database floor).
 * `-j 2` threads like wrk's `-t2`; `-n` (no vacuum of pgbench's own tables, which do not exist here).
 * pgbench gives the mean latency only: p50/p99 are that mean (p50) and NaN.
 */
export async function pgbench(o: { url: string; script: string; connections: number; seconds: number }): Promise<WrkResult> {
  const u = new URL(o.url);
  const args = ['-n', '-M', 'extended', '-j', '2', '-c', String(o.connections), '-T', String(o.seconds), '-f', o.script];
  const env = { PGHOST: u.hostname, PGPORT: u.port, PGUSER: decodeURIComponent(u.username || 'postgres'), PGDATABASE: u.pathname.slice(1) };
  const r = await run('pgbench', args, { env, timeoutMs: (o.seconds + 60) * 1000 });
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(r.stdout);
  const tx = /number of transactions actually processed: (\d+)/.exec(r.stdout);
  const lat = /latency average = ([\d.]+) ms/.exec(r.stdout);
  const failed = /number of failed transactions: (\d+)/.exec(r.stdout);
  // a short warm-up on a stalled machine may finish no transaction (no tps line): that is 0 req/s, not a failure
  if (r.code !== 0 || !tx) throw new Error(`pgbench ${args.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).slice(-1000)}`);
  const mean = lat ? Number(lat[1]) : NaN;
  return {
    rps: tps ? Number(tps[1]) : 0,
    p50_ms: mean,
    p90_ms: NaN,
    p99_ms: NaN,
    max_ms: NaN,
    requests: Number(tx[1]),
    errors_socket: 0,
    non2xx: failed ? Number(failed[1]) : 0,
  };
}
