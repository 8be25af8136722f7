/**
 * How the Bridge answers and logs the requests it refuses from their headers (issue 19): an invalid
 * API key (401), a key or an address over its limit (429), a missing service token (401). A flood of
 * them must cost the Bridge a fraction of a served request, so the answer is the cheapest one it has:
 *
 * - decided before Fastify sees the request, from its headers (front-door.ts; a request the front door
 *   passes on, or one it does not look at, is decided in the route's `onRequest` hook, route-auth.ts),
 *   before the body is read or parsed;
 * - the envelope is pre-serialized per message around the request id (no JSON serialization, no error
 *   handler; the verifier's errors carry no stack: errors.ts stacklessError);
 * - no access line per refusal: they are counted per key id and per client address, and one warning
 *   line per interval (STK_REFUSAL_LOG_SECONDS) sums them up — the totals by status and the top keys
 *   and addresses. The counts are bounded (MAX_TRACKED keys and addresses per interval; beyond that only
 *   the totals grow), so a flood from a million addresses or key ids does not grow memory.
 *
 * Nothing secret is logged: a key id is counted only for a presented key whose checksum is right (the
 * key id is its public part), never the presented header itself.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import { lingerIfBodyUnread, withoutAccessLine } from '../common/http.js';
import { ulid } from '../common/ulid.js';
import { API_KEY_HEADER } from '../protocol/call.js';
import { type AppError, envelopeAround } from '../protocol/errors.js';
import { parseKey } from '../protocol/key-format.js';

/**
 * A refused request's body of up to this many declared bytes is read and discarded by Node after the
 * answer, and the connection is kept (the next request on it is served as usual). A larger or chunked
 * body is not worth reading: the answer says `Connection: close`, and the socket lingers up to 2 s
 * discarding what is in flight (so the client reads the answer, not a reset), then closes.
 */
export const REFUSED_BODY_KEEPALIVE_BYTES = 64 * 1024;
/** key ids and client addresses counted per interval (each); more are only in the totals */
export const MAX_TRACKED = 10_000;
/** distinct messages whose envelope is kept pre-serialized */
const MAX_PREPARED = 256;
/** keys and addresses named in a summary line */
const TOP = 5;

interface Tally {
  401: number;
  429: number;
}

function top<T>(m: Map<string, T>, n: (t: T) => number): Array<[string, T]> {
  return [...m].sort((a, b) => n(b[1]) - n(a[1])).slice(0, TOP);
}

interface Prepared {
  code: string;
  head: string;
  tail: string;
  /** bytes of head + a 26-character request id + tail */
  bytes: number;
}

/** the key id of a presented key whose checksum is right (its public part), else null */
function keyIdOf(presented: string | string[] | undefined): string | null {
  if (typeof presented !== 'string') return null;
  const p = parseKey(presented);
  return typeof p === 'string' ? null : p.keyId;
}

/** a request whose body is large or of unknown length: answered with `Connection: close` (see above) */
function bodyNotWorthReading(h: IncomingMessage['headers']): boolean {
  return h['transfer-encoding'] !== undefined || Number(h['content-length'] ?? 0) > REFUSED_BODY_KEEPALIVE_BYTES;
}

export class Refusals {
  readonly #prepared = new Map<string, Prepared>();
  #byKey = new Map<string, Tally>();
  #byAddress = new Map<string, number>();
  #total: Tally = { 401: 0, 429: 0 };
  #untracked = { keys: 0, addresses: 0 };
  #timer: NodeJS.Timeout | undefined;
  #since = 0;
  /**
   * Told of each refusal answered by `sendRaw` (which no Fastify hook sees): /metrics counts it
   * (src/bridge/metrics.ts). Null with metrics off.
   */
  onRawAnswer: ((status: number, code: string, bytes: number) => void) | null = null;

  constructor(
    readonly log: FastifyBaseLogger,
    /** how often a summary is logged while refusals happen (ms) */
    readonly intervalMs: number,
  ) {}

  #envelope(err: AppError): Prepared {
    let env = this.#prepared.get(err.message);
    if (env === undefined || env.code !== err.code) {
      const { head, tail } = envelopeAround(err.code, err.message);
      env = { code: err.code, head, tail, bytes: Buffer.byteLength(head) + 26 + Buffer.byteLength(tail) };
      if (this.#prepared.size < MAX_PREPARED) this.#prepared.set(err.message, env);
    }
    return env;
  }

  /**
   * Answers `err` (a 401 or 429 AppError) for a request still in its `onRequest` hook: the caller does
   * not call the hook's `done`.
   */
  send(req: FastifyRequest, reply: FastifyReply, err: AppError): void {
    const env = this.#envelope(err);
    this.#count(err.status, keyIdOf(req.headers[API_KEY_HEADER]), req.ip);
    withoutAccessLine(req);
    reply.code(err.status).header('content-type', 'application/json; charset=utf-8');
    if (err.headers) reply.headers(err.headers);
    if (bodyNotWorthReading(req.headers)) {
      reply.header('connection', 'close');
      lingerIfBodyUnread(req.raw);
    }
    reply.send(env.head + req.id + env.tail);
  }

  /**
   * The same answer straight onto the HTTP response, for a request Fastify never saw (the front door,
   * front-door.ts): a new request id, the same headers and body as `send`.
   */
  sendRaw(req: IncomingMessage, res: ServerResponse, ip: string, keyId: string | null, err: AppError): void {
    const env = this.#envelope(err);
    const id = ulid();
    this.#count(err.status, keyId, ip);
    const headers: OutgoingHttpHeaders = {
      'content-type': 'application/json; charset=utf-8',
      'content-length': env.bytes,
      'x-request-id': id,
    };
    if (err.headers) Object.assign(headers, err.headers);
    if (bodyNotWorthReading(req.headers)) {
      headers.connection = 'close';
      lingerIfBodyUnread(req);
    }
    res.writeHead(err.status, headers);
    res.end(env.head + id + env.tail);
    this.onRawAnswer?.(err.status, err.code, env.bytes);
  }

  /** `keyId`: of a well-formed presented key (right checksum), else null */
  #count(status: number, keyId: string | null, ip: string): void {
    if (status === 401) this.#total[401]++;
    else if (status === 429) this.#total[429]++;
    else return;
    if (keyId !== null) {
      let t = this.#byKey.get(keyId);
      if (t === undefined && this.#byKey.size < MAX_TRACKED) this.#byKey.set(keyId, (t = { 401: 0, 429: 0 }));
      if (t) t[status]++;
      else this.#untracked.keys++;
    }
    const n = this.#byAddress.get(ip);
    if (n !== undefined) this.#byAddress.set(ip, n + 1);
    else if (this.#byAddress.size < MAX_TRACKED) this.#byAddress.set(ip, 1);
    else this.#untracked.addresses++;
    if (this.#timer === undefined) {
      this.#since = Date.now();
      this.#timer = setTimeout(() => this.flush(), this.intervalMs);
      this.#timer.unref();
    }
  }

  /** Logs the summary of what was counted since the last one (if anything) and starts over. */
  flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const total = this.#total;
    if (total[401] + total[429] === 0) return;
    const byKey = this.#byKey;
    const byAddress = this.#byAddress;
    const untracked = this.#untracked;
    this.#byKey = new Map();
    this.#byAddress = new Map();
    this.#total = { 401: 0, 429: 0 };
    this.#untracked = { keys: 0, addresses: 0 };
    this.log.warn(
      {
        refused: { '401': total[401], '429': total[429] },
        seconds: Math.round((Date.now() - this.#since) / 100) / 10,
        keys: byKey.size,
        addresses: byAddress.size,
        ...(untracked.keys || untracked.addresses ? { untracked } : {}),
        topKeys: top(byKey, (t) => t[401] + t[429]).map(([keyId, t]) => ({ keyId, '401': t[401], '429': t[429] })),
        topAddresses: top(byAddress, (n) => n).map(([ip, n]) => ({ ip, refused: n })),
      },
      'requests refused (invalid API key, rate limit, service token): summary of the interval',
    );
  }

  /** what is being counted (tests) */
  get tracked(): { keys: number; addresses: number } {
    return { keys: this.#byKey.size, addresses: this.#byAddress.size };
  }
}
