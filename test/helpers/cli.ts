import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STK, ROOT } from './procs.js';
import { rememberSecret } from './secrets.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout + stderr */
  output: string;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  input?: string;
  cwd?: string;
  timeoutMs?: number;
}

/** A fresh STK_CONFIG_DIR so tests never touch the real ~/.config/santokit. */
export const tempConfigDir = () => mkdtempSync(join(tmpdir(), 'stk-cfg-'));

/** Runs the real `stk` binary (bin/stk.js → dist/) and captures its output. */
export async function runStk(args: string[], o: RunOptions = {}): Promise<RunResult> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, NO_COLOR: '1', STK_NO_INPUT: '1', ...o.env })) if (v !== undefined) env[k] = v;
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [STK, ...args], { cwd: o.cwd ?? ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code: code ?? -1, stdout, stderr, output: stdout + stderr });
    });
    child.stdin.end(o.input ?? '');
  });
}

/** Logs in through the HTTP API and returns a session token. */
export async function loginToken(hubUrl: string, email: string, password: string): Promise<string> {
  rememberSecret('password', password);
  const r = await fetch(`${hubUrl}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  if (!r.ok) throw new Error(`login failed: ${r.status} ${await r.text()}`);
  return rememberSecret('session-token', ((await r.json()) as { token: string }).token);
}
