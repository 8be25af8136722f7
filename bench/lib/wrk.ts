import { run } from './procs.js';

export interface WrkResult {
  rps: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  requests: number;
  errors_socket: number;
  non2xx: number;
}

/**
 * One wrk run with a yardstick lua script (call.lua / get.lua print a final `RESULT {json}` line).
 * `-t2`, `--timeout 5s` so a slow response counts as latency, not as a socket error.
 */
export async function wrk(o: {
  url: string;
  script: string;
  connections: number;
  seconds: number;
  threads?: number;
  env?: Record<string, string>;
}): Promise<WrkResult> {
  const args = [`-t${o.threads ?? 2}`, `-c${o.connections}`, `-d${o.seconds}s`, '--timeout', '5s', '-s', o.script, o.url];
  const r = await run('wrk', args, { env: o.env, timeoutMs: (o.seconds + 30) * 1000 });
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  if (r.code !== 0 || !line) throw new Error(`wrk ${args.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).slice(-1000)}`);
  return JSON.parse(line.slice(7)) as WrkResult;
}
