import { resolve } from 'node:path';

/**
 * What `stk dev` leaves for `stk status` to read: the data dir, `.santokit/dev.json`, and whether the
 * process that wrote it still runs. Kept apart from the dev stack's modules so `stk status` loads none of them.
 */

/** `.santokit/dev.json`: what `stk status` reads while the stack runs. */
export interface DevState {
  pid: number;
  startedAt: string;
  hubUrl: string;
  bridgeUrl: string;
  pgUrl: string;
  ownerEmail: string;
  /** absolute path of dev-owner.txt */
  passwordFile: string;
}

/** STK_DATA_DIR, else `.santokit` in the current directory. */
export const devDataDir = (env: NodeJS.ProcessEnv = process.env) => resolve(env.STK_DATA_DIR || '.santokit');

/** Whether a process with this id runs (one of another user's counts). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
