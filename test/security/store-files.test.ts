/**
 * The Hub's SQLite store files (hub.db, -wal, -shm) hold password hashes, key hashes and encrypted DB
 * URLs: they are created 0600 in a 0700 directory whatever the umask lets through, and files an older
 * version left 0644 are tightened at the next start (issue 12, finding 7).
 */
import { chmodSync, existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHub, TEST_OWNER } from '../helpers/procs.js';
import { loginToken } from '../helpers/cli.js';

const mode = (f: string) => statSync(f).mode & 0o777;

describe("security: Hub store files are the owner's only", () => {
  let previous: number;
  beforeAll(() => {
    // the Hub inherits this: a umask that would leave new files 0644 and directories 0755
    previous = process.umask(0o022);
  });
  afterAll(() => {
    process.umask(previous);
  });

  it('a new store: hub.db, hub.db-wal and hub.db-shm are 0600, the new directory 0700', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'stk-store-')), 'data');
    const file = join(dir, 'hub.db');
    const hub = await startHub({ dbUrl: `sqlite://${file}` });
    try {
      await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password); // writes go through the WAL
      const files = [file, `${file}-wal`, `${file}-shm`];
      for (const f of files) expect(existsSync(f), f).toBe(true);
      const modes = files.map((f) => `${f.slice(dir.length + 1)} ${mode(f).toString(8)}`);
      console.log(`[security] store files: ${modes.join(', ')}, directory ${mode(dir).toString(8)} (umask 022)`);
      for (const f of files) expect(mode(f), f).toBe(0o600);
      expect(mode(dir)).toBe(0o700);
    } finally {
      await hub.stop();
    }
  });

  it('a store left 0644 by an older version is tightened to 0600 on start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stk-store-'));
    const file = join(dir, 'hub.db');
    const first = await startHub({ dbUrl: `sqlite://${file}` });
    await first.stop();
    for (const f of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(f)) chmodSync(f, 0o644);
    const second = await startHub({ dbUrl: `sqlite://${file}`, secretKey: first.secretKey });
    try {
      await loginToken(second.url, TEST_OWNER.email, TEST_OWNER.password);
      for (const f of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(f)) expect(mode(f), f).toBe(0o600);
    } finally {
      await second.stop();
    }
  });
});
