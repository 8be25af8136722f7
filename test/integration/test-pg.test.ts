import { describe, expect, it } from 'vitest';
import { createServer } from 'node:net';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { ensurePostgres, probe } from '../helpers/test-pg.js';

/** `npm test` alone on a fresh machine: global-setup starts the throwaway PostgreSQL when none answers. */

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

describe('test setup: the throwaway PostgreSQL', () => {
  it('starts one when nothing answers on the port, leaves a running one alone, stops only its own', async () => {
    const port = await freePort();
    const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
    const dir = join(tmpdir(), `stk-test-pg-selftest-${process.pid}-${port}`);
    const lines: string[] = [];
    expect(await probe(url, 1000)).toBeTruthy(); // nothing there yet

    // DATABASE_URL given explicitly: never start anything in its place, say which variable
    await expect(ensurePostgres({ url, explicit: true, dir })).rejects.toThrow(/not reachable at DATABASE_URL \(127\.0\.0\.1:\d+\).*unset DATABASE_URL/);

    const first = await ensurePostgres({ url, explicit: false, dir, log: (l) => lines.push(l) });
    try {
      expect(first.started).toBe(true);
      expect(first.url).toBe(url);
      expect(lines.join('\n')).toMatch(/no PostgreSQL at 127\.0\.0\.1:\d+ .*starting a throwaway one/);
      expect(await probe(url)).toBeUndefined();

      // a second run finds it answering: uses it, does not own it
      const second = await ensurePostgres({ url, explicit: false, dir });
      expect(second.started).toBe(false);
      await second.stop();
      expect(await probe(url)).toBeUndefined();

      // someone else connected when the first run ends: it stays up and says so
      const other = new pg.Client({ connectionString: url });
      await other.connect();
      try {
        await first.stop();
        expect(await probe(url)).toBeUndefined();
        expect(lines.join('\n')).toMatch(/leaving the throwaway PostgreSQL at 127\.0\.0\.1:\d+ running: 1 other client connection/);
      } finally {
        await other.end();
      }
    } finally {
      await first.stop();
    }
    expect(await probe(url, 1000)).toBeTruthy();
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});
