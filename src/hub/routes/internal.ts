import type { FastifyInstance } from 'fastify';
import { randomBytes } from 'node:crypto';
import { badRequest, conflict } from '../../protocol/errors.js';
import { SYNC_SESSION_HEADER, SYNC_STREAM_CONTENT_TYPE, type SyncAck, type UsageReport } from '../../protocol/sync.js';
import { SERVICE } from '../../protocol/route-auth.js';
import type { HubContext } from '../context.js';
import { recordUsage } from '../services/apikeys.js';
import { buildSnapshot, getSync, responseSink } from '../services/sync/index.js';

const BRIDGE_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * The Bridge sync channel: every route requires the service token (declared `auth: SERVICE`, enforced
 * on the matched route by route-auth.ts).
 * Bodies here hold key hashes, the pepper and decrypted DB URLs: they are never logged (Fastify
 * logs no bodies; these routes log at warn level only) and never cached.
 */
export default async function internalRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  const sync = getSync(ctx);
  const svc = { logLevel: 'warn' as const, config: { auth: SERVICE } };
  // end the long-lived streams first, or the server would wait for them on shutdown
  app.addHook('preClose', async () => {
    await sync.close();
  });

  app.get('/internal/sync/snapshot', svc, async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    return buildSnapshot(ctx);
  });

  app.get('/internal/sync/stream', svc, async (req, reply) => {
    const q = req.query as { since?: string; bridgeId?: string };
    if (typeof q.bridgeId !== 'string' || !BRIDGE_ID_RE.test(q.bridgeId)) {
      throw badRequest('bridgeId is required: 1-128 of letters, digits, . _ : -');
    }
    let since: number | undefined;
    if (q.since !== undefined && q.since !== '') {
      since = Number(q.since);
      if (!Number.isSafeInteger(since) || since < 0) throw badRequest('since must be a non-negative integer');
    }
    reply.hijack();
    const res = reply.raw;
    // acks and usage reports are accepted only with this stream's session
    const session = randomBytes(18).toString('base64url');
    res.writeHead(200, {
      [SYNC_SESSION_HEADER]: session,
      'content-type': SYNC_STREAM_CONTENT_TYPE,
      'cache-control': 'no-store',
      'x-request-id': req.id,
      'x-accel-buffering': 'no',
    });
    res.flushHeaders();
    req.raw.socket.setNoDelay(true);
    req.raw.socket.setKeepAlive(true, 10_000);
    const sink = responseSink(res);
    await sync.openStream(q.bridgeId, since, sink, req.ip ?? null, session);
  });

  app.post('/internal/sync/ack', svc, async (req) => {
    const b = (req.body ?? {}) as Partial<SyncAck>;
    if (typeof b.bridgeId !== 'string' || !BRIDGE_ID_RE.test(b.bridgeId)) throw badRequest('bridgeId is required');
    const seqs = Array.isArray(b.seqs) ? b.seqs.filter((s): s is number => Number.isSafeInteger(s) && (s as number) > 0) : [];
    const snapshot = Number.isSafeInteger(b.snapshot) && (b.snapshot as number) >= 0 ? (b.snapshot as number) : undefined;
    sync.ack(b.bridgeId, b.session, seqs, snapshot);
    return { ok: true };
  });

  app.post('/internal/sync/usage', svc, async (req) => {
    const r = (req.body ?? {}) as Partial<UsageReport>;
    if (typeof r.bridgeId !== 'string' || !sync.ownsStream(r.bridgeId, r.session)) {
      throw conflict('usage is accepted only from a Bridge with an open sync stream on this Hub (bridgeId and session of that stream)');
    }
    return recordUsage(ctx, r as UsageReport);
  });

  // Bridges streaming from this Hub
  app.get('/internal/sync/bridges', { config: { auth: SERVICE } }, async () => ({ items: sync.connected() }));
  // every Bridge a revoke waits for: this Hub's and the live ones of other Hubs on the same store
  app.get('/internal/sync/cluster', { config: { auth: SERVICE } }, async () => ({ hubId: sync.hubId, items: await sync.cluster() }));
}
