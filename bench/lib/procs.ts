import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from './util.js';

export interface Proc {
  name: string;
  child: ChildProcess;
  pid: number;
  logFile: string;
  logs(): string;
  stop(): Promise<void>;
}

const running = new Set<Proc>();

/** Spawns a long-running process with its output in `<logDir>/<name>.log`. */
export function start(name: string, cmd: string, args: string[], o: { env?: Record<string, string>; cwd?: string; logDir: string }): Proc {
  mkdirSync(o.logDir, { recursive: true });
  const logFile = join(o.logDir, `${name}.log`);
  const out = createWriteStream(logFile);
  const child = spawn(cmd, args, { cwd: o.cwd, env: { ...process.env, ...o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(out, { end: false });
  child.stderr!.pipe(out, { end: false });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const p: Proc = {
    name,
    child,
    pid: child.pid ?? -1,
    logFile,
    logs: () => {
      try {
        return readFileSync(logFile, 'utf8');
      } catch {
        return '';
      }
    },
    async stop() {
      running.delete(p);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
  running.add(p);
  return p;
}

/** Waits until `url` answers 2xx; fails early (with the log tail) if the process exits. */
export async function waitHttp(p: Proc, url: string, timeoutMs = 60_000, headers: Record<string, string> = {}): Promise<void> {
  await waitFor(
    async () => {
      if (p.child.exitCode !== null) throw new Error(`${p.name} exited with ${p.child.exitCode}`);
      return (await fetch(url, { headers })).ok;
    },
    timeoutMs,
    `${p.name} at ${url}`,
  ).catch((e: Error) => {
    throw new Error(`${e.message}\n--- ${p.name} log (${p.logFile}) ---\n${p.logs().slice(-3000)}`);
  });
}

export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop()));
}

/** Resident set size of a process in MB (Linux /proc). */
export function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** CPU time (user + system) a process has used so far, in ms (Linux /proc, clock ticks of 10 ms). */
export function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
  } catch {
    return NaN;
  }
}

/** read-family and write-family syscalls a process has made so far (Linux /proc/<pid>/io). */
export function syscalls(pid: number): { r: number; w: number } {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    return { r: Number(/syscr:\s+(\d+)/.exec(io)?.[1] ?? NaN), w: Number(/syscw:\s+(\d+)/.exec(io)?.[1] ?? NaN) };
  } catch {
    return { r: NaN, w: NaN };
  }
}

/** Runs a command to completion and captures its output. */
export function run(
  cmd: string,
  args: string[],
  o: { env?: Record<string, string>; cwd?: string; input?: string; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: o.cwd, env: { ...process.env, ...o.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 600_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(o.input ?? '');
  });
}

export async function runOk(cmd: string, args: string[], o: Parameters<typeof run>[2] = {}): Promise<string> {
  const r = await run(cmd, args, o);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}):\n${(r.stderr || r.stdout).slice(-2000)}`);
  return r.stdout;
}

/**
 * CPU time (ms) PostgreSQL has used so far: the postmaster, its live children (backends, walwriter, …)
 * and the children it has already reaped (a backend that exited moves its time into the postmaster's
 * cutime/cstime), so the difference over a run counts every backend that worked during it.
 */
export function pgClusterCpuMs(dataDir: string): number {
  try {
    const pm = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    const fields = (pid: number | string) => {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    };
    const f = fields(pm);
    let ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const c = fields(d);
        if (Number(c[1]) === pm) ticks += Number(c[11]) + Number(c[12]);
      } catch {
        /* gone */
      }
    }
    return (ticks * 1000) / 100;
  } catch {
    return NaN;
  }
}
