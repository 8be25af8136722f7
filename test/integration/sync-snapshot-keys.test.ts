import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import type { HubContext } from '../../src/hub/context.js';
import { getSync, responseSink, type StreamSink } from '../../src/hub/services/sync/index.js';
import { KEY_BATCH } from '../../src/hub/services/sync/key-batches.js';
import { addKeyRows, KeyTable, toEntry, type KeyEntry } from '../../src/bridge/credentials/key-table.js';
import { newKeyId } from '../../src/protocol/key-format.js';
import { SYNC_CAPS, SYNC_SESSION_HEADER, type SyncMessage } from '../../src/protocol/sync.js';
import { waitFor } from '../helpers/procs.js';
import { createTestDatabase } from '../helpers/pg.js';

/**
 * The snapshot's keys (issue 18: a million keys). A Bridge that asks with `keyFormat=rows` gets them as
 * compact `keyrows` batches, any other gets the `keys` records older Bridges read: both must give a
 * Bridge the same table. Batches are bounded, written one at a time (the Hub never buffers a whole
 * snapshot), and a key revoked while the snapshot streams ends up revoked on the Bridge, acked.
 * On both stores (the keys are paged by rowid on SQLite, by id on PostgreSQL).
 */

const KEYS = 2 * KEY_BATCH + 517;
const OWNER = { email: 'snap-owner@example.com', password: 'snapshot-owner-password-1' };
const hex = () => randomBytes(32).toString('hex');

/** What a Bridge's verify path reads of an entry. */
const view = (e: KeyEntry) => ({
  keyId: e.keyId,
  project: e.project,
  env: e.env,
  roles: (e.principal.roles as string[]).join(','),
  hash: e.hash.toString('hex'),
  prevHash: e.prevHash?.toString('hex') ?? null,
  prevUntil: e.prevUntil,
  stopped: e.stopped,
  expiresAt: e.expiresAt,
  rateLimitPerMin: e.rateLimitPerMin,
  allowsLoopback: e.allow === null ? 'any' : e.allow.check('127.0.0.1'),
  allowsOther: e.allow === null ? 'any' : e.allow.check('10.9.9.9'),
});

/** A Bridge's handling of the snapshot messages (the same functions HubSync uses). */
function applySnapshot(messages: SyncMessage[]): { keys: Map<string, KeyEntry>; batches: number[]; seq: number; pepper: string } {
  const keys = new Map<string, KeyEntry>();
  const batches: number[] = [];
  let seq = -1;
  let pepper = '';
  for (const m of messages) {
    if (m.type === 'snapshot') pepper = m.pepper;
    else if (m.type === 'keyrows') {
      batches.push(m.rows.length);
      addKeyRows(m, keys);
    } else if (m.type === 'keys') {
      batches.push(m.keys.length);
      for (const k of m.keys) {
        const e = toEntry(k);
        if (e) keys.set(e.keyId, e);
      }
    } else if (m.type === 'snapshot-end') seq = m.seq;
  }
  return { keys, batches, seq, pepper };
}

describe.each(['sqlite', 'postgres'] as const)('sync snapshot keys (%s store)', (kind) => {
  let app: FastifyInstance;
  let ctx: HubContext;
  let url: string;
  let dir: string | undefined;
  let pg: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  const token = randomBytes(24).toString('hex');
  let bearer = '';
  const ids: string[] = [];

  beforeAll(async () => {
    let dbUrl: string;
    if (kind === 'sqlite') {
      dir = mkdtempSync(join(tmpdir(), 'stk-snapkeys-'));
      dbUrl = `sqlite://${join(dir, 'hub.db')}`;
    } else {
      pg = await createTestDatabase('snapkeys');
      dbUrl = pg.url;
    }
    const cfg = loadHubConfig({
      STK_SECRET_KEY: randomBytes(32).toString('hex'),
      STK_SERVICE_TOKEN: token,
      STK_HUB_DB_URL: dbUrl,
      STK_OWNER_EMAIL: OWNER.email,
      STK_OWNER_PASSWORD: OWNER.password,
      STK_REVOKE_ACK_TIMEOUT_MS: '20000',
    });
    ({ app, ctx } = await buildHub(cfg, { logger: false }));
    url = await app.listen({ port: 0, host: '127.0.0.1' });
    bearer = (
      await (await fetch(`${url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(OWNER) })).json()
    ).token as string;
    const api = (method: string, path: string, body?: unknown) =>
      fetch(url + path, { method, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) });
    expect((await api('POST', '/api/projects', { name: 'snap' })).status).toBe(201);
    for (const env of ['dev', 'prod']) expect((await api('POST', '/api/projects/snap/envs', { name: env })).status).toBe(201);
    // an env of another project, with keys: names come from the env, not from the page
    expect((await api('POST', '/api/projects', { name: 'other' })).status).toBe(201);
    expect((await api('POST', '/api/projects/other/envs', { name: 'dev' })).status).toBe(201);
    const envs = await ctx.db
      .selectFrom('envs')
      .innerJoin('projects', 'projects.id', 'envs.project_id')
      .select(['envs.id', 'envs.project_id'])
      .orderBy('projects.name')
      .orderBy('envs.name')
      .execute();
    const now = new Date().toISOString();
    const soon = new Date(Date.now() + 3600_000).toISOString();
    const rows = [];
    for (let i = 0; i < KEYS; i++) {
      const env = envs[i % envs.length]!;
      const id = newKeyId();
      ids.push(id);
      rows.push({
        id,
        project_id: env.project_id,
        env_id: env.id,
        name: `key-${i}`,
        roles_json: JSON.stringify(i % 3 === 0 ? ['reader', 'writer'] : ['reader']),
        secret_hash: hex(),
        // every field that is not the common case, on some keys
        prev_secret_hash: i % 17 === 0 ? hex() : null,
        prev_expires_at: i % 17 === 0 ? soon : null,
        status: i % 7 === 0 ? ('revoked' as const) : ('active' as const),
        suspended_at: i % 23 === 0 ? now : null,
        rate_limit_per_min: i % 13 === 0 ? 60 + i : null,
        expires_at: i % 11 === 0 ? soon : null,
        allowed_ips_json: i % 29 === 0 ? JSON.stringify(['127.0.0.1', '192.168.0.0/16']) : null,
        created_at: now,
      });
    }
    // inserted in a shuffled order: the rowid order is not the id order
    rows.sort(() => Math.random() - 0.5);
    for (let i = 0; i < rows.length; i += 500)
      await ctx.db
        .insertInto('api_keys')
        .values(rows.slice(i, i + 500))
        .execute();
  });
  afterAll(async () => {
    await app?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    await pg?.drop();
  });

  /** Reads a stream over HTTP until its snapshot ended (then closes it). */
  async function snapshotOverHttp(bridgeId: string, keyFormat?: string, caps?: string): Promise<SyncMessage[]> {
    const qs = new URLSearchParams({ bridgeId, ...(keyFormat === undefined ? {} : { keyFormat }), ...(caps === undefined ? {} : { caps }) });
    const ac = new AbortController();
    const res = await fetch(`${url}/internal/sync/stream?${qs}`, { headers: { 'x-santokit-service-token': token }, signal: ac.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get(SYNC_SESSION_HEADER)).toBeTruthy();
    const out: SyncMessage[] = [];
    let buf = '';
    const decoder = new TextDecoder();
    for await (const chunk of res.body!) {
      buf += decoder.decode(chunk as Uint8Array, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        out.push(JSON.parse(buf.slice(0, nl)) as SyncMessage);
        buf = buf.slice(nl + 1);
      }
      if (out.some((m) => m.type === 'snapshot-end')) break;
    }
    ac.abort();
    return out;
  }

  it('keyrows (keyFormat=rows) and keys (older Bridges, or a format this Hub does not know) give a Bridge the same table, in bounded batches', async () => {
    const rows = await snapshotOverHttp('snap-rows', 'rows');
    // a Bridge reading `keys` that declares what it enforces (an older one that does not: next test)
    const records = await snapshotOverHttp('snap-records', undefined, SYNC_CAPS.join(','));
    const later = await snapshotOverHttp('snap-later', 'columns-v9', SYNC_CAPS.join(','));
    expect(rows.filter((m) => m.type === 'keys')).toHaveLength(0);
    expect(records.filter((m) => m.type === 'keyrows')).toHaveLength(0);
    expect(later.filter((m) => m.type === 'keyrows')).toHaveLength(0);
    const a = applySnapshot(rows);
    const b = applySnapshot(records);
    // every key once, in batches of at most KEY_BATCH
    expect(a.keys.size).toBe(KEYS);
    expect(a.batches).toEqual([KEY_BATCH, KEY_BATCH, 517]);
    expect(b.batches).toEqual([KEY_BATCH, KEY_BATCH, 517]);
    expect(new Set(a.keys.keys())).toEqual(new Set(ids));
    const byId = (m: Map<string, KeyEntry>) => [...m.values()].map(view).sort((x, y) => x.keyId.localeCompare(y.keyId));
    expect(byId(a.keys)).toEqual(byId(b.keys));
    // and what they say is the store's: spot checks of every kind of field
    const k0 = view(a.keys.get(ids[0]!)!); // i = 0: revoked, prev hash, rate limit, expiry, allowlist, suspended (revoked wins)
    expect(k0).toMatchObject({ project: 'other', env: 'dev', roles: 'reader,writer', stopped: 'revoked', rateLimitPerMin: 60 });
    expect(k0.prevHash).toMatch(/^[0-9a-f]{64}$/);
    expect(k0.prevUntil).toBeGreaterThan(Date.now());
    expect(k0.expiresAt).toBeGreaterThan(Date.now());
    expect([k0.allowsLoopback, k0.allowsOther]).toEqual([true, false]);
    expect(view(a.keys.get(ids[23]!)!)).toMatchObject({ stopped: 'suspended' });
    expect(view(a.keys.get(ids[1]!)!)).toMatchObject({
      project: 'snap',
      env: 'dev',
      roles: 'reader',
      stopped: null,
      prevHash: null,
      prevUntil: 0,
      expiresAt: Infinity,
      rateLimitPerMin: null,
      allowsLoopback: 'any',
    });
    expect(a.seq).toBe(b.seq);
  });

  it('a Bridge that predates suspend and IP allowlists (no caps, no keyrows) gets those keys as revoked, in the snapshot and in changes; active again when resumed', async () => {
    const current = applySnapshot(await snapshotOverHttp('snap-current', undefined, SYNC_CAPS.join(','))).keys;
    const old = applySnapshot(await snapshotOverHttp('snap-old')).keys;
    const partial = applySnapshot(await snapshotOverHttp('snap-partial', undefined, 'suspend')).keys;
    let closed = 0;
    for (let i = 0; i < KEYS; i++) {
      const c = view(current.get(ids[i]!)!);
      const o = view(old.get(ids[i]!)!);
      expect(view(partial.get(ids[i]!)!)).toEqual(o); // both capabilities or neither
      if (c.stopped === 'suspended' || c.allowsLoopback !== 'any') {
        // what an old Bridge could not enforce, it refuses
        expect(o).toEqual({ ...c, stopped: 'revoked', allowsLoopback: c.allowsLoopback, allowsOther: c.allowsOther });
        if (c.stopped !== 'revoked') closed++;
      } else expect(o).toEqual(c);
    }
    expect(closed).toBeGreaterThan(100);

    // live changes: an old Bridge's stream, acking what it gets (as a Bridge does)
    const sync = getSync(ctx);
    const changes: Array<Extract<SyncMessage, { type: 'change' }>> = [];
    const sink: StreamSink = {
      closed: false,
      async write(line: string) {
        const m = JSON.parse(line) as SyncMessage;
        if (m.type === 'snapshot-end') sync.ack('snap-old-live', 's-old-live', [], m.seq);
        if (m.type === 'change') {
          changes.push(m);
          sync.ack('snap-old-live', 's-old-live', [m.seq]);
        }
      },
      end() {},
    };
    void sync.openStream('snap-old-live', undefined, sink, null, 's-old-live', { failClosed: true });
    const keyId = ids[1]!; // snap/dev, active, no allowlist
    const post = async (action: string) => {
      const r = await fetch(`${url}/api/projects/snap/envs/dev/apikeys/${keyId}/${action}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
        body: '{}',
      });
      const text = await r.text();
      expect(r.status, text).toBe(200);
      expect((JSON.parse(text) as { ack: { lagging: string[] } }).ack.lagging).toEqual([]);
    };
    const last = () => [...changes].reverse().find((m) => m.kind === 'apikey' && m.keyId === keyId) as Extract<SyncMessage, { kind: 'apikey' }> | undefined;
    await waitFor(async () => sync.connected().some((b) => b.bridgeId === 'snap-old-live'), 10_000, 'the old stream');
    // the snapshots read over HTTP above were aborted: their streams end when the Hub sees the socket close
    await waitFor(async () => sync.connected().every((b) => b.bridgeId === 'snap-old-live'), 10_000, 'the aborted streams to end');
    await post('suspend');
    await waitFor(async () => last()?.key?.status === 'revoked', 10_000, 'the suspend, as revoked');
    await post('resume');
    await waitFor(async () => last()?.key?.status === 'active', 10_000, 'the resume, as active');
  });

  it('writes one batch at a time (never the next before the previous one was taken), and a key revoked while the snapshot streams ends up revoked and acked', async () => {
    const sync = getSync(ctx);
    const got: SyncMessage[] = [];
    let pending = 0;
    let maxPending = 0;
    let gate: Promise<void> | null = null;
    let open!: () => void;
    const closers: Array<() => void> = [];
    const sink: StreamSink = {
      closed: false,
      async write(line: string) {
        pending++;
        maxPending = Math.max(maxPending, pending);
        const m = JSON.parse(line) as SyncMessage;
        got.push(m);
        // the first key batch is "on the wire" until the test opens the gate
        if (m.type === 'keyrows' && gate === null) gate = new Promise<void>((r) => (open = r));
        if (gate) await gate;
        await new Promise((r) => setImmediate(r));
        pending--;
      },
      end() {},
      onClose: (fn) => closers.push(fn),
    };
    const stream = sync.openStream('snap-race', undefined, sink, null, 's-snap-race', { keyRows: true });
    await waitFor(async () => gate !== null, 10_000, 'the first key batch');
    const first = got.find((m) => m.type === 'keyrows') as Extract<SyncMessage, { type: 'keyrows' }>;
    // one key already sent as it was (active), one from the end of the table (not read yet, or read ahead)
    const sent = first.rows.find((r) => r[4] === 'active')![2];
    const sentIds = new Set(first.rows.map((r) => r[2]));
    const later = [...ids].reverse().find((id, i) => !sentIds.has(id) && (KEYS - 1 - i) % 7 !== 0 && (KEYS - 1 - i) % 23 !== 0)!;
    const revoke = async (keyId: string) => {
      const envRow = await ctx.db
        .selectFrom('api_keys')
        .innerJoin('envs', 'envs.id', 'api_keys.env_id')
        .innerJoin('projects', 'projects.id', 'envs.project_id')
        .select(['envs.name as env', 'projects.name as project'])
        .where('api_keys.id', '=', keyId)
        .executeTakeFirstOrThrow();
      const r = await fetch(`${url}/api/projects/${envRow.project}/envs/${envRow.env}/apikeys/${keyId}/revoke`, {
        method: 'POST',
        headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
        body: '{}',
      });
      return { status: r.status, body: (await r.json()) as { ack: { bridges: number; acked: number; lagging: string[] } | null } };
    };
    const revokes = [revoke(sent), revoke(later)];
    await waitFor(
      async () => (await ctx.db.selectFrom('api_keys').select('id').where('id', 'in', [sent, later]).where('status', '=', 'revoked').execute()).length === 2,
      10_000,
      'both revokes committed',
    );
    open();
    await stream;
    // the Bridge: snapshot, then every change after it, then its acks (as HubSync does)
    await waitFor(
      async () => got.filter((m) => m.type === 'change' && m.kind === 'apikey' && (m.keyId === sent || m.keyId === later)).length >= 2,
      10_000,
      'both changes streamed after the snapshot',
    );
    expect(maxPending).toBe(1);
    const snap = applySnapshot(got);
    expect(snap.keys.size).toBe(KEYS);
    const table = new KeyTable();
    table.install(Buffer.from(snap.pepper, 'base64'), snap.keys);
    const end = got.findIndex((m) => m.type === 'snapshot-end');
    const seqs: number[] = [];
    for (const m of got.slice(end + 1)) {
      if (m.type === 'change' && m.kind === 'apikey') {
        table.upsert(m.keyId, m.key);
        seqs.push(m.seq);
      }
    }
    expect(table.get(sent)?.stopped).toBe('revoked');
    expect(table.get(later)?.stopped).toBe('revoked');
    sync.ack('snap-race', 's-snap-race', seqs, snap.seq);
    for (const r of await Promise.all(revokes)) {
      expect(r.status).toBe(200);
      expect(r.body.ack).toMatchObject({ lagging: [] });
      expect(r.body.ack!.acked).toBeGreaterThanOrEqual(1);
    }
    for (const fn of closers) fn();
  });
});

describe('responseSink (a stream over a slow connection)', () => {
  it('keeps one pair of listeners however many writes had to wait for drain', async () => {
    const res = new Writable({
      highWaterMark: 64,
      write(_chunk, _enc, cb) {
        setImmediate(cb);
      },
    });
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const sink = responseSink(res);
      const base = res.listenerCount('close');
      for (let i = 0; i < 40; i++) {
        await sink.write('x'.repeat(200)); // over the high-water mark: every write waits for drain
        expect(res.listenerCount('drain')).toBe(0);
        expect(res.listenerCount('close')).toBe(base);
      }
      sink.end();
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
  });
});
