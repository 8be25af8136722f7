import type { FastifyInstance } from 'fastify';
import { randomBytes } from 'node:crypto';
import { internal as api } from '../../protocol/api/hub.js';
import { conflict } from '../../protocol/errors.js';
import { SYNC_CAPS, SYNC_KEY_ROWS_VALUE, SYNC_SESSION_HEADER, SYNC_STREAM_CONTENT_TYPE } from '../../protocol/sync.js';
import type { HubContext } from '../context.js';
import { route } from '../route.js';
import { recordUsage } from '../services/apikeys.js';
import { buildSnapshot, getSync, responseSink } from '../services/sync/index.js';

/**
 * The Bridge sync channel: every route requires the service token (declared `auth: SERVICE` in the
 * contract, enforced on the matched route by route-auth.ts).
 * Bodies here hold key hashes, the pepper and decrypted DB URLs: they are never logged (Fastify
 * logs no bodies; these routes log at warn level only) and never cached.
 */
export default async function internalRoutes(app: FastifyInstance, { ctx }: { ctx: HubContext }) {
  const sync = getSync(ctx);
  const quiet = { logLevel: 'warn' as const };
  // end the long-lived streams first, or the server would wait for them on shutdown
  app.addHook('preClose', async () => {
    await sync.close();
  });

  route(
    app,
    api.snapshot,
    async (_in, _actor, { reply }) => {
      reply.header('cache-control', 'no-store');
      return buildSnapshot(ctx);
    },
    quiet,
  );

  route(
    app,
    api.stream,
    async ({ query }, _actor, { req, reply }) => {
      const since = query.since === undefined || query.since === '' ? undefined : Number(query.since);
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
      await sync.openStream(
        query.bridgeId,
        since !== undefined && Number.isSafeInteger(since) ? since : undefined,
        responseSink(res),
        req.ip ?? null,
        session,
        {
          keyRows: query.keyFormat === SYNC_KEY_ROWS_VALUE,
          // a Bridge that asks for keyrows came after suspend and allowlists; one that asks for neither
          // and does not declare them is older: keys it cannot enforce go to it as revoked
          failClosed: query.keyFormat !== SYNC_KEY_ROWS_VALUE && !SYNC_CAPS.every((c) => (query.caps ?? '').split(',').includes(c)),
        },
      );
    },
    quiet,
  );

  route(
    app,
    api.ack,
    async ({ body }) => {
      const seqs = (body.seqs ?? []).filter((s) => Number.isSafeInteger(s) && s > 0);
      const snapshot = body.snapshot !== undefined && Number.isSafeInteger(body.snapshot) && body.snapshot >= 0 ? body.snapshot : undefined;
      sync.ack(body.bridgeId, body.session, seqs, snapshot);
      return { ok: true as const };
    },
    quiet,
  );

  route(
    app,
    api.usage,
    async ({ body }) => {
      if (!sync.ownsStream(body.bridgeId, body.session)) {
        throw conflict('usage is accepted only from a Bridge with an open sync stream on this Hub (bridgeId and session of that stream)');
      }
      return recordUsage(ctx, body);
    },
    quiet,
  );

  // Bridges streaming from this Hub
  route(app, api.bridges, async () => ({ items: sync.connected() }));
  // every Bridge a revoke waits for: this Hub's and the live ones of other Hubs on the same store
  route(app, api.cluster, async () => ({ hubId: sync.hubId, items: await sync.cluster() }));
}
