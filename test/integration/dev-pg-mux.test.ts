import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PGlite } from '@electric-sql/pglite';
import postgres from 'postgres';
import pg from 'pg';
import { PgMux, readyStatusAtEnd } from '../../src/dev/pg-mux.js';

/**
 * The wire front of `stk dev`'s embedded PostgreSQL: many client connections (postgres.js as the Bridge
 * uses it, pg as the Hub uses it) over the one PGlite session, with errors and transactions mixed in.
 * pglite-socket's own multiplexer fails this load with `portal "" does not exist`.
 */
describe('PgMux: one PGlite session, many PostgreSQL connections', () => {
  let db: PGlite;
  let mux: PgMux;
  let url: string;
  const warnings: string[] = [];

  beforeAll(async () => {
    db = await PGlite.create('memory://');
    mux = new PgMux({ db, port: 0, idleInTransactionMs: 500, onWarning: (m) => warnings.push(m) });
    const port = await mux.start();
    url = `postgres://postgres@127.0.0.1:${port}/postgres`;
    await db.exec(`create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 200) g`);
  });

  afterAll(async () => {
    await mux?.stop();
    await db?.close();
  });

  it('readyStatusAtEnd reads the transaction status only when the answer ends with ReadyForQuery', () => {
    const z = (s: string) => Buffer.from([0x5a, 0, 0, 0, 5, s.charCodeAt(0)]);
    const complete = Buffer.from([0x43, 0, 0, 0, 10, ...Buffer.from('BEGIN'), 0]);
    expect(readyStatusAtEnd(Buffer.concat([complete, z('T')]))).toBe('T');
    expect(readyStatusAtEnd(Buffer.concat([z('T'), complete, z('I')]))).toBe('I');
    expect(readyStatusAtEnd(Buffer.concat([z('I'), complete]))).toBeNull();
    expect(readyStatusAtEnd(Buffer.alloc(0))).toBeNull();
  });

  it('keeps concurrent pipelined queries, failing queries and transactions of different connections apart', async () => {
    const sql = postgres(url, { max: 5, onnotice: () => {} });
    const pool = new pg.Pool({ connectionString: url, max: 3 });
    let wrong = 0;
    const unexpected: string[] = [];
    let expectedErrors = 0;
    let failing = 0;
    const division = (e: Error) => (/division by zero/.test(e.message) ? void expectedErrors++ : void unexpected.push(e.message));
    const tasks: Array<Promise<unknown>> = [];
    try {
      for (let i = 0; i < 600; i++) {
        const n = (i % 200) + 1;
        if (i % 7 === 0) {
          failing++;
          tasks.push(sql`select 1 / ${n - n} as x`.then(() => wrong++, division));
        } else if (i % 11 === 0) {
          tasks.push(
            sql
              .begin(async (tx) => {
                await tx`update t set v = ${'tx' + i} where id = ${n}`;
                const [r] = await tx`select v from t where id = ${n}`;
                if (r!.v !== 'tx' + i) wrong++;
              })
              .catch((e: Error) => unexpected.push(e.message)),
          );
        } else if (i % 13 === 0) {
          failing++;
          tasks.push(
            sql
              .begin(async (tx) => {
                await tx`update t set v = 'must-roll-back' where id = ${n}`;
                await tx`select 1 / 0`;
              })
              .then(() => wrong++, division),
          );
        } else
          tasks.push(
            sql`select id, v from t where id = ${n}`.then(
              ([r]) => (r!.id !== n ? wrong++ : 0),
              (e: Error) => unexpected.push(e.message),
            ),
          );
      }
      for (let i = 0; i < 200; i++) {
        const n = (i % 200) + 1;
        if (i % 5 === 0) {
          failing++;
          tasks.push(pool.query('select 1 / $1::int', [0]).then(() => wrong++, division));
        } else
          tasks.push(
            pool.query('select id from t where id = $1', [n]).then(
              (r) => (r.rows[0].id !== n ? wrong++ : 0),
              (e: Error) => unexpected.push(e.message),
            ),
          );
      }
      await Promise.all(tasks);
      expect(unexpected).toEqual([]);
      expect(wrong).toBe(0);
      expect(expectedErrors).toBe(failing);
      expect((await sql`select count(*)::int as n from t where v = 'must-roll-back'`)[0]!.n).toBe(0);
    } finally {
      await sql.end({ timeout: 5 });
      await pool.end();
    }
  });

  it('rolls back what a connection that vanished mid-transaction left behind', async () => {
    const c = new pg.Client({ connectionString: url });
    c.on('error', () => {});
    await c.connect();
    await c.query('begin');
    await c.query("update t set v = 'from-a-dead-client' where id = 1");
    (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    try {
      const r = await other.query('select v from t where id = 1');
      expect(r.rows[0].v).not.toBe('from-a-dead-client');
      expect(mux.stats().busy).toBe(false);
    } finally {
      await other.end();
    }
  });

  it('terminates a connection idle inside a transaction while another one waits', async () => {
    const idle = new pg.Client({ connectionString: url });
    const errors: string[] = [];
    idle.on('error', (e) => errors.push(e.message));
    await idle.connect();
    await idle.query('begin');
    await idle.query("update t set v = 'idle-uncommitted' where id = 2");
    const waiter = new pg.Client({ connectionString: url });
    await waiter.connect();
    try {
      // waits for the session until the idle transaction is terminated (idleInTransactionMs = 500)
      const r = await waiter.query('select v from t where id = 2');
      expect(r.rows[0].v).not.toBe('idle-uncommitted');
      expect(warnings.some((w) => /idle inside a transaction/.test(w))).toBe(true);
      expect(errors.join(' ')).toMatch(/idle-in-transaction timeout|terminated/);
    } finally {
      await waiter.end();
      await idle.end().catch(() => {});
    }
  });

  it('answers an SSL request with N and serves the connection in plain text', async () => {
    const sql = postgres(url, { ssl: 'prefer', max: 1 });
    try {
      expect((await sql`select 2 as two`)[0]!.two).toBe(2);
    } finally {
      await sql.end({ timeout: 5 });
    }
  });
});
