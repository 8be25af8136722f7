import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import type { HubContext } from '../../src/hub/context.js';
import { getSync, type StreamSink } from '../../src/hub/services/sync/index.js';
import { CHANGE_LOG_LOCK, notifyChanged, recordChange } from '../../src/hub/services/events.js';
import type { SyncMessage } from '../../src/protocol/sync.js';
import { waitFor } from '../helpers/procs.js';
import { createTestDatabase, query, TEST_ALLOW_HOSTS } from '../helpers/pg.js';

/**
 * The Hub's change stream on a PostgreSQL store, in process: ordering (the change-log lock), gaps left
 * by rolled-back transactions or writers without the lock, late rows, and the acknowledgement
 * bookkeeping revoke relies on.
 */
describe('Hub sync stream (PostgreSQL store)', () => {
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  let app: FastifyInstance;
  let ctx: HubContext;
  const token = randomBytes(24).toString('hex');

  const sink = () => {
    const got: SyncMessage[] = [];
    const closers: Array<() => void> = [];
    const s: StreamSink & { got: SyncMessage[]; seqs(): number[]; disconnect(): void } = {
      got,
      closed: false,
      async write(line: string) {
        got.push(JSON.parse(line) as SyncMessage);
      },
      end() {
        (s as { closed: boolean }).closed = true;
      },
      onClose(fn) {
        closers.push(fn);
      },
      disconnect() {
        (s as { closed: boolean }).closed = true;
        for (const fn of closers) fn();
      },
      seqs: () => got.flatMap((m) => (m.type === 'change' ? [m.seq] : [])),
    };
    return s;
  };
  const insert = async (seq: number) => {
    await query(store.url, `insert into change_events (seq, ts, project, env, kind, payload_json) values ($1, now()::text, 'p', 'e', 'test', '{}')`, [seq]);
    notifyChanged(ctx);
  };

  beforeAll(async () => {
    store = await createTestDatabase('syncstream');
    const cfg = loadHubConfig({
      STK_SECRET_KEY: randomBytes(32).toString('hex'),
      STK_SERVICE_TOKEN: token,
      STK_HUB_DB_URL: store.url,
      STK_CONNECTION_ALLOW_HOSTS: TEST_ALLOW_HOSTS,
    });
    ({ app, ctx } = await buildHub(cfg, { logger: false }));
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    await store?.drop();
  });

  it('the HTTP stream needs the service token and a bridge id', async () => {
    expect((await app.inject({ method: 'GET', url: '/internal/sync/stream?bridgeId=x' })).statusCode).toBe(401);
    const r = await app.inject({ method: 'GET', url: '/internal/sync/stream', headers: { 'x-santokit-service-token': token } });
    expect(r.statusCode).toBe(400);
    expect(r.json().error.code).toBe('BAD_REQUEST');
    const bad = await app.inject({ method: 'GET', url: '/internal/sync/stream?bridgeId=a&since=-1', headers: { 'x-santokit-service-token': token } });
    expect(bad.statusCode).toBe(400);
  });

  it('snapshot first; then changes in order', async () => {
    const sync = getSync(ctx);
    const a = sink();
    await sync.openStream('bridge-a', undefined, a, null, 's-bridge-a');
    expect(a.got[0]!.type).toBe('snapshot');
    expect(a.got.some((m) => m.type === 'snapshot-end')).toBe(true);
    await insert(1);
    await waitFor(async () => a.seqs().includes(1), 5000, 'seq 1');
    await insert(2);
    await insert(3);
    await waitFor(async () => a.seqs().length === 3, 5000, 'seqs 2 and 3');
    expect(a.seqs()).toEqual([1, 2, 3]);
    const last = a.got.at(-1) as Extract<SyncMessage, { type: 'change' }>;
    expect(last).toMatchObject({ seq: 3, cursor: 3, kind: 'other', original: 'test' });
  });

  it('a gap (a rolled-back seq, or a writer without the change-log lock) is skipped after a short wait, and delivered late if it shows up', async () => {
    const a = sink();
    await getSync(ctx).openStream('bridge-b', 3, a, null, 's-bridge-b');
    await insert(5); // 4 missing: rolled back, or a slow transaction
    await waitFor(async () => a.seqs().includes(5), 10_000, 'seq 5 after the gap wait');
    await insert(4);
    await waitFor(async () => a.seqs().includes(4), 10_000, 'late seq 4');
    expect(a.seqs()).toEqual([5, 4]);
    const late = a.got.find((m) => m.type === 'change' && m.seq === 4) as Extract<SyncMessage, { type: 'change' }>;
    expect(late.cursor).toBe(5); // the cursor never moves backwards
  });

  it('acks: explicit per seq, or covered by an acknowledged snapshot; connected laggards are named', async () => {
    const sync = getSync(ctx);
    const c = sink();
    await sync.openStream('bridge-c', undefined, c, null, 's-bridge-c');
    const snap = c.got.find((m) => m.type === 'snapshot-end') as { seq: number };
    expect(snap.seq).toBe(5);
    // bridge-c has not confirmed its snapshot yet
    let r = await sync.waitForAcks(5, 100);
    expect(r.lagging).toContain('bridge-c');
    sync.ack('bridge-c', 's-bridge-c', [], 5);
    sync.ack('bridge-a', 's-bridge-a', [5]);
    sync.ack('bridge-b', 's-bridge-b', [5]);
    r = await sync.waitForAcks(5, 100);
    expect(r.lagging).toEqual([]);
    expect(r.bridges).toBeGreaterThanOrEqual(3);
    // a waiter resolves as soon as the last ack arrives
    await insert(6);
    await waitFor(async () => c.seqs().includes(6), 5000, 'seq 6');
    const pending = sync.waitForAcks(6, 5000);
    for (const id of ['bridge-a', 'bridge-b', 'bridge-c']) sync.ack(id, 's-' + id, [6]);
    expect((await pending).lagging).toEqual([]);
    // a Bridge whose stream closed no longer counts for new changes, at once
    expect(sync.connected().map((b) => b.bridgeId)).toContain('bridge-c');
    c.disconnect();
    expect(sync.connected().map((b) => b.bridgeId)).not.toContain('bridge-c');
    await insert(7);
    const after = sync.waitForAcks(7, 5000);
    // a Bridge acks what it received: retried until the stream delivered seq 7 (an ack ahead of it is refused)
    const ackWhenSent = (id: string) => async () => {
      try {
        sync.ack(id, 's-' + id, [7]);
        return true;
      } catch {
        return false;
      }
    };
    for (const id of ['bridge-a', 'bridge-b']) await waitFor(ackWhenSent(id), 5000, `seq 7 sent to ${id}`);
    expect(await after).toMatchObject({ lagging: [], acked: 2 });
  });
  it('concurrent writers: the change-log lock makes seqs commit in the order they are drawn', async () => {
    // the rows above were inserted with explicit seqs: move the sequence past them
    await query(store.url, `select setval(pg_get_serial_sequence('change_events', 'seq'), (select max(seq) from change_events))`);
    const d = sink();
    await getSync(ctx).openStream('bridge-d', undefined, d, null, 's-bridge-d');
    const change = { project: 'p', env: 'e', kind: 'test', payload: {} };
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let first = 0;
    let second = 0;
    const t1 = ctx.db.transaction().execute(async (trx) => {
      first = await recordChange(trx, change);
      await held; // still uncommitted
    });
    await waitFor(async () => first > 0, 5000, 'first writer');
    const t2 = ctx.db.transaction().execute(async (trx) => {
      second = await recordChange(trx, change);
    });
    // the second writer queues on the lock before drawing a seq
    const lo = CHANGE_LOG_LOCK % 2 ** 32;
    await waitFor(
      async () => {
        const rows = await query(
          store.url,
          `select count(*)::int as n from pg_locks l join pg_database d on d.oid = l.database
        where d.datname = current_database() and l.locktype = 'advisory' and l.objid = $1 and not l.granted`,
          [lo],
        );
        return rows[0]!.n === 1;
      },
      5000,
      'second writer waiting on the change-log lock',
    );
    expect(second).toBe(0);
    release();
    await Promise.all([t1, t2]);
    expect(second).toBe(first + 1);
    notifyChanged(ctx);
    await waitFor(async () => d.seqs().includes(second), 5000, 'both changes streamed');
    expect(d.seqs()).toEqual([first, second]);
  });
});
