import { Transform } from 'node:stream';
import type { preParsingHookHandler } from 'fastify';
import { AppError } from '../protocol/errors.js';

/** the first bytes of every body are free: small requests (a login, a key create) are never refused */
export const FREE_BODY_BYTES = 64 * 1024;
/** STK_BODY_INFLIGHT_MAX_BYTES default: request bodies one process holds in memory at once */
export const BODY_INFLIGHT_MAX_BYTES = 64 * 1024 * 1024;

/**
 * Request bodies in memory, bounded per process and per client address: a body is charged (past its
 * first FREE_BODY_BYTES) from its Content-Length before it is read, or chunk by chunk when it has
 * none, and held until its response has been sent. Over the process's bound, or over a quarter of it
 * for one address → 503 with Retry-After before the body is buffered. Without it, a few hundred
 * concurrent 10 MB bodies from one authenticated client take gigabytes of a Hub. (The Bridge's `/call`
 * charges its bodies to the caller's project/env instead: src/bridge/routes/call.ts.)
 */
export class BodyGauge {
  inflight = 0;
  readonly perClientMax: number;
  readonly #clients = new Map<string, number>();

  constructor(readonly maxBytes: number) {
    this.perClientMax = Math.max(1, Math.floor(maxBytes / 4));
  }

  take(client: string, n: number): boolean {
    const held = this.#clients.get(client) ?? 0;
    if (this.inflight + n > this.maxBytes || held + n > this.perClientMax) return false;
    this.inflight += n;
    this.#clients.set(client, held + n);
    return true;
  }

  give(client: string, n: number): void {
    if (n <= 0) return;
    this.inflight -= n;
    const held = (this.#clients.get(client) ?? n) - n;
    if (held > 0) this.#clients.set(client, held);
    else this.#clients.delete(client);
  }

  /** bytes held for one client address (tests) */
  held(client: string): number {
    return this.#clients.get(client) ?? 0;
  }
}

const busy = () =>
  new AppError('SERVICE_UNAVAILABLE', 'this server is holding its limit of request bodies in memory; retry shortly, or send smaller bodies', {
    headers: { 'retry-after': '1' },
  });

/**
 * The preParsing step that charges each body to `gauge` (http.ts skips routes with `config.bodyBudget: 'own'`).
 * What a request took is given back when its response closes, and nothing is charged after that: the
 * bytes a client keeps sending once it was answered (a 413 from the body limit, say) are discarded, not
 * held; and no more than the route's body limit is ever charged for one body. A request whose
 * connection closed before this hook ran (aborted while an earlier hook awaited) is charged nothing:
 * its close has fired already and would never give the bytes back.
 */
export function chargeBodies(gauge: BodyGauge, bodyLimit: number): preParsingHookHandler {
  return (req, reply, payload, done) => {
    if (reply.raw.closed) return done(null, payload);
    const client = req.ip;
    const limit = req.routeOptions.bodyLimit ?? bodyLimit;
    let charged = 0;
    let seen = 0;
    let closed = false;
    const charge = (n: number): boolean => {
      if (closed) return true;
      seen += n;
      const want = Math.max(0, Math.min(seen, limit) - FREE_BODY_BYTES) - charged;
      if (want <= 0) return true;
      if (!gauge.take(client, want)) return false;
      charged += want;
      return true;
    };
    reply.raw.once('close', () => {
      closed = true;
      gauge.give(client, charged);
      charged = 0;
    });
    const length = req.headers['content-length'];
    if (length !== undefined) {
      const declared = Number(length);
      // over the route's body limit, Fastify answers 413 from the header without reading the body
      if (Number.isSafeInteger(declared) && declared <= limit && !charge(declared)) return done(busy());
      return done(null, payload);
    }
    if (req.raw.complete) return done(null, payload);
    const counted = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        if (charge(chunk.length)) cb(null, chunk);
        else cb(busy());
      },
    });
    payload.once('error', (e) => counted.destroy(e));
    // the body parser listens for this error while it reads; once it has stopped (its 413, the answer
    // sent) an error nobody listens to would end the process
    counted.on('error', () => {});
    done(null, payload.pipe(counted));
  };
}
