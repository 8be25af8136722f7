import { spawn, type ChildProcess } from 'node:child_process';
import { shellWord } from '../../src/common/shell-quote.js';

/**
 * A command on a real pseudo-terminal, through util-linux `script` (no native module needed): inside,
 * stdin, stdout and stderr are a TTY, so the CLI behaves as with a person at the keyboard. What we
 * write goes to the terminal's input (a Ctrl-C byte, "\x03", interrupts the foreground job).
 */
export interface Pty {
  child: ChildProcess;
  output(): string;
  write(s: string): void;
  /** resolves once the output contains `text` (rejects after timeoutMs) */
  waitFor(text: string | RegExp, timeoutMs?: number): Promise<void>;
  /** the command's exit status (script -e passes it through; 128+n for a signal) */
  exit: Promise<number>;
}

/** POSIX shell quoting for one word (the CLI's own). */
export const shellQuote = shellWord;

export function spawnPty(argv: string[], o: { cwd?: string; env?: Record<string, string | undefined> } = {}): Pty {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, TERM: 'xterm', COLUMNS: '100', LINES: '40', ...o.env })) if (v !== undefined) env[k] = v;
  const child = spawn('script', ['-qefc', argv.map(shellQuote).join(' '), '/dev/null'], { cwd: o.cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString('utf8');
    for (const w of [...waiters]) w();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exit = new Promise<number>((resolve) => child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : -1))));
  return {
    child,
    output: () => out,
    write: (s) => void child.stdin!.write(s),
    exit,
    waitFor(text, timeoutMs = 30_000) {
      const hit = () => (typeof text === 'string' ? out.includes(text) : text.test(out));
      if (hit()) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${String(text)} on the terminal; it shows:\n${out.slice(-2000)}`));
        }, timeoutMs);
        const check = () => {
          if (!hit()) return;
          clearTimeout(t);
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        void exit.then(() => setTimeout(check, 50));
      });
    },
  };
}
