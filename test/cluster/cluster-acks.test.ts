import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import type { HubContext } from '../../src/hub/context.js';
import { notifyChanged, recordChange } from '../../src/hub/services/events.js';
import { getSync, type StreamSink, type SyncHub } from '../../src/hub/services/sync/index.js';
import type { SyncMessage } from '../../src/protocol/sync.js';
import { waitFor } from '../helpers/procs.js';
import { createTestDatabase, query, TEST_ALLOW_HOSTS } from '../helpers/pg.js';

/**
 * Cluster-wide acknowledgements, in process: two Hubs on one PostgreSQL store, Bridges simulated by
 * stream sinks. A Hub waits for the Bridges of the other Hub (presence in `sync_bridges`, acks through
 * NOTIFY on `stk_acks`), stops counting a Bridge that closed its stream, keeps counting the Bridges of a
 * Hub that went away until they come back (and resume), and ignores stale presence.
 */
describe('cluster-wide acks (two Hubs, one PostgreSQL store)', () => {
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  const hubs: Array<{ app: FastifyInstance; ctx: HubContext; sync: SyncHub }> = [];
  const token = randomBytes(24).toString('hex');
  const secret = randomBytes(32).toString('hex');

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
  /** a committed change through one Hub, as a revoke would write it */
  const change = async (h: { ctx: HubContext }) => {
    const seq = await h.ctx.db.transaction().execute((trx) => recordChange(trx, { project: 'p', env: 'e', kind: 'test', payload: {} }));
    notifyChanged(h.ctx, seq);
    return seq;
  };
  /** a Bridge connected to `h` that has applied everything so far (snapshot acknowledged) */
  const connect = async (h: { sync: SyncHub }, id: string, since?: number) => {
    const s = sink();
    await h.sync.openStream(id, since, s, '127.0.0.1', 's-' + id);
    const end = s.got.find((m) => m.type === 'snapshot-end') as { seq: number } | undefined;
    if (end) h.sync.ack(id, 's-' + id, [], end.seq);
    return s;
  };
  const clusterIds = async (h: { sync: SyncHub }) => (await h.sync.cluster()).map((b) => b.bridgeId).sort();

  beforeAll(async () => {
    store = await createTestDatabase('clusteracks');
    for (let i = 0; i < 2; i++) {
      const cfg = loadHubConfig({ STK_SECRET_KEY: secret, STK_SERVICE_TOKEN: token, STK_HUB_DB_URL: store.url, STK_CONNECTION_ALLOW_HOSTS: TEST_ALLOW_HOSTS });
      const { app, ctx } = await buildHub(cfg, { logger: false });
      await app.ready();
      hubs.push({ app, ctx, sync: getSync(ctx) });
    }
  });
  afterAll(async () => {
    for (const h of hubs) await h.app.close();
    await store?.drop();
  });

  it("a change committed through Hub B waits for Hub A's Bridges, and resolves on their acks", async () => {
    const [a, b] = hubs as [(typeof hubs)[0], (typeof hubs)[0]];
    const x = await connect(a, 'bridge-x');
    const y = await connect(b, 'bridge-y');
    expect(await clusterIds(a)).toEqual(['bridge-x', 'bridge-y']);
    expect(await clusterIds(b)).toEqual(['bridge-x', 'bridge-y']);

    const seq = await change(b);
    const pending = b.sync.waitForAcks(seq, 10_000);
    await waitFor(async () => x.seqs().includes(seq) && y.seqs().includes(seq), 5000, 'both streams deliver the change');
    b.sync.ack('bridge-y', 's-bridge-y', [seq]);
    a.sync.ack('bridge-x', 's-bridge-x', [seq]); // acknowledged to Hub A: Hub B learns it through stk_acks
    expect(await pending).toEqual({ bridges: 2, acked: 2, lagging: [] });

    // without the ack of Hub A's Bridge, Hub B names it
    const seq2 = await change(b);
    await waitFor(async () => y.seqs().includes(seq2), 5000, 'change 2 on y');
    b.sync.ack('bridge-y', 's-bridge-y', [seq2]);
    expect(await b.sync.waitForAcks(seq2, 300)).toEqual({ bridges: 2, acked: 1, lagging: ['bridge-x'] });
    a.sync.ack('bridge-x', 's-bridge-x', [seq2]);
    expect(await b.sync.waitForAcks(seq2, 5000)).toEqual({ bridges: 2, acked: 2, lagging: [] });
    // the shared row holds the high-water mark
    const [row] = await query<{ hub_id: string; acked_seq: string }>(
      store.url,
      `select hub_id, acked_seq::text from sync_bridges where bridge_id = 'bridge-x'`,
    );
    expect(row).toEqual({ hub_id: a.sync.hubId, acked_seq: String(seq2) });
    x.disconnect();
    y.disconnect();
  });

  it('a Bridge that closed its stream stops counting on every Hub', async () => {
    const [a, b] = hubs as [(typeof hubs)[0], (typeof hubs)[0]];
    const z = await connect(a, 'bridge-z');
    expect(await clusterIds(b)).toEqual(['bridge-z']);
    z.disconnect();
    expect(await clusterIds(a)).toEqual([]); // its own Hub knows at once
    await waitFor(async () => (await clusterIds(b)).length === 0, 5000, 'the other Hub to see the disconnect');
    const seq = await change(b);
    expect(await b.sync.waitForAcks(seq, 5000)).toEqual({ bridges: 0, acked: 0, lagging: [] });
  });

  it('stale presence (a Hub that crashed long ago) does not count', async () => {
    const [a, b] = hubs as [(typeof hubs)[0], (typeof hubs)[0]];
    await query(
      store.url,
      `insert into sync_bridges (bridge_id, hub_id, acked_seq, address, connected_at, last_seen_at, disconnected_at)
      values ('bridge-ghost', 'gone-hub', 0, null, $1, $1, null)`,
      [new Date(Date.now() - 3600_000).toISOString()],
    );
    expect(await clusterIds(a)).toEqual([]);
    const seq = await change(b);
    expect(await b.sync.waitForAcks(seq, 5000)).toMatchObject({ bridges: 0, lagging: [] });
    // the same row, fresh: a Bridge of a Hub that just died is still serving, so it is waited for
    await query(store.url, `update sync_bridges set last_seen_at = $1 where bridge_id = 'bridge-ghost'`, [new Date().toISOString()]);
    expect(await b.sync.waitForAcks(seq, 200)).toEqual({ bridges: 1, acked: 0, lagging: ['bridge-ghost'] });
    await query(store.url, `delete from sync_bridges where bridge_id = 'bridge-ghost'`);
  });

  it('Hub A goes away: its Bridges are still waited for, until they resume on Hub B', async () => {
    const [a, b] = hubs as [(typeof hubs)[0], (typeof hubs)[0]];
    const v = await connect(a, 'bridge-v');
    const w = await connect(a, 'bridge-w');
    const before = await change(a);
    await waitFor(async () => v.seqs().includes(before) && w.seqs().includes(before), 5000, 'v and w at the same seq');
    a.sync.ack('bridge-v', 's-bridge-v', [before]);
    a.sync.ack('bridge-w', 's-bridge-w', [before]);
    await a.sync.close(); // streams end; presence rows stay (as after a crash)
    expect(v.closed && w.closed).toBe(true);

    const seq = await change(b);
    const pending = b.sync.waitForAcks(seq, 10_000);
    // v resumes on Hub B from its cursor and applies the change there
    const v2 = await connect(b, 'bridge-v', before);
    await waitFor(async () => v2.seqs().includes(seq), 5000, 'v gets the change from Hub B');
    b.sync.ack('bridge-v', 's-bridge-v', [seq]);
    // w had already applied it before its Hub went away (it resumes past it): resuming is its ack
    await connect(b, 'bridge-w', seq);
    expect(await pending).toEqual({ bridges: 2, acked: 2, lagging: [] });
    const rows = await query<{ bridge_id: string; hub_id: string }>(
      store.url,
      `select bridge_id, hub_id from sync_bridges where bridge_id in ('bridge-v', 'bridge-w') order by 1`,
    );
    expect(rows).toEqual([
      { bridge_id: 'bridge-v', hub_id: b.sync.hubId },
      { bridge_id: 'bridge-w', hub_id: b.sync.hubId },
    ]);
  });
});
