import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { hostname } from 'node:os';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
} from 'fastify';
import type { Bindings, ChildLoggerOptions } from 'pino';
import { ulid } from './ulid.js';
import { AppError, ERROR_CATALOGUE, codeForStatus, envelope, type FieldDetails, type FieldProblem } from '../protocol/errors.js';
import { RequestLogger, bufferedStdout, loggerOptions, stripQuery, type LogDestination } from './logger.js';
import type { RouteAuth, RouteInfo } from '../protocol/route-auth.js';
import { canonicalTarget } from './request-target.js';
import { MAX_JSON_DEPTH, jsonTooDeep } from './json-depth.js';
import { RouteMatcher } from './route-match.js';
import { isTrustedProxy } from './trust-proxy.js';
import { DEFAULT_HTTP, type HttpSettings } from './http-config.js';
import { BodyGauge, chargeBodies } from './body-gauge.js';
import { BodyDeadlines } from './body-deadline.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** what the route requires of its caller: every route declares it (registration fails otherwise) */
    auth?: RouteAuth;
    /** 'own': the route bounds its request bodies in memory itself (the Bridge's /call, per tenant) */
    bodyBudget?: 'own';
  }
  interface FastifyInstance {
    /** every route registered on this app, with its declared auth (the security sweep walks it) */
    routeTable: RouteInfo[];
  }
}

export const BODY_LIMIT_BYTES = 10 * 1024 * 1024;
/** total size of the request line and headers */
export const MAX_HEADER_BYTES = 16 * 1024;
/** body limit of routes anyone may call (login, invite acceptance, health): no reason to take megabytes */
export const PUBLIC_BODY_LIMIT_BYTES = 64 * 1024;
/** a client has this long to send its whole request (headers and body); slower ones get 408 */
export const REQUEST_TIMEOUT_MS = 30_000;

export interface BaseAppOptions {
  name: 'hub' | 'bridge';
  /** a pino logger config, `false` to disable, or a destination stream for tests */
  logger?: FastifyServerOptions['logger'] | false;
  loggerStream?: NodeJS.WritableStream;
  /** the process's HTTP settings (HubConfig.http, BridgeConfig.http); default: every variable unset */
  http?: HttpSettings;
  /**
   * A front door ahead of Fastify on the HTTP server: each request goes to `front.handle` first (when
   * set); if it answered the request (returns true), Fastify never sees it. The Bridge refuses /call
   * requests with a bad or over-limit key there (src/bridge/front-door.ts). Unset again on close, so
   * a closing server answers through Fastify (503).
   */
  front?: FrontDoor;
  /** overrides REQUEST_TIMEOUT_MS (and how often Node checks it) — for tests */
  requestTimeoutMs?: number;
  timeoutCheckIntervalMs?: number;
}

export interface FrontDoor {
  handle: ((req: IncomingMessage, res: ServerResponse) => boolean) | null;
}

/** the error code a request was answered with (set where the envelope is built), for the access line */
const kErrorCode = Symbol('errorCode');
/** set on a request whose answer is counted elsewhere instead of logged line by line (withoutAccessLine) */
const kNoAccessLine = Symbol('noAccessLine');
type WithCode = { [kErrorCode]?: string; [kNoAccessLine]?: boolean };

/**
 * This request gets no access line: what answered it counts it and logs a summary instead (the
 * Bridge's refusals, src/bridge/refusals.ts: one line per interval for a flood, not one per request).
 */
export function withoutAccessLine(req: FastifyRequest): void {
  (req as unknown as WithCode)[kNoAccessLine] = true;
}

/** the catalogue's code for each status, for answers sent without going through the envelope builders here */
const CODE_OF_STATUS = new Map<number, string>();
for (const [code, v] of Object.entries(ERROR_CATALOGUE)) if (!CODE_OF_STATUS.has(v.status)) CODE_OF_STATUS.set(v.status, code);

/**
 * The error code a request was answered with (undefined for a success), for metrics and traces: the
 * one recorded where its envelope was built, else the catalogue's code for its status (the Bridge's
 * refusals are answered from pre-serialized envelopes: src/bridge/refusals.ts).
 */
export function errorCodeOf(req: FastifyRequest, status: number): string | undefined {
  const code = (req as unknown as WithCode)[kErrorCode];
  if (code !== undefined || status < 400) return code;
  return CODE_OF_STATUS.get(status) ?? (status >= 500 ? 'INTERNAL_ERROR' : 'BAD_REQUEST');
}

/**
 * One access line per request, written when the response has been sent (level info):
 * `{"level":30,"time","pid","hostname","name","reqId","method","url","statusCode","responseTime","ip",
 * "code"?,"msg":"request completed"}`, with the query string cut from the URL and no headers (nothing
 * secret-bearing, so the line skips pino's serializers and redaction and is assembled directly, in
 * pino's format, onto the same destination). `code` is the error envelope's code for a failed request.
 * Fastify's default is two lines per request (incoming + completed, the first with every header); at
 * STK_LOG_LEVEL=warn there is none and requests cost no logging work at all. Errors (5xx) are logged at
 * error level with their reqId either way.
 */
class AccessLog extends LogController {
  readonly #prefix: string;
  readonly #write: (line: string) => void;

  constructor(name: string, write: (line: string) => void) {
    super();
    this.#prefix = `,"pid":${process.pid},"hostname":${JSON.stringify(hostname())},"name":${JSON.stringify(name)},"reqId":"`;
    this.#write = write;
  }

  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    // the request's own logger: a route declared quiet (logLevel 'warn': the sync stream, acks, usage
    // reports) writes no access line
    const log = request.log as FastifyBaseLogger & { isLevelEnabled(level: string): boolean };
    if (error) {
      log.warn({ reqId: request.id, method: request.method, url: stripQuery(request.url), err: error }, 'request errored');
      return;
    }
    if (!log.isLevelEnabled('info') || (request as unknown as WithCode)[kNoAccessLine] === true) return;
    const code = (request as unknown as WithCode)[kErrorCode];
    const ip = request.ip;
    this.#write(
      `{"level":30,"time":${Date.now()}${this.#prefix}${request.id}","method":${JSON.stringify(request.method)},"url":${JSON.stringify(stripQuery(request.url))},"statusCode":${reply.statusCode},"responseTime":${Math.round(reply.elapsedTime * 100) / 100},"ip":${ip ? JSON.stringify(ip) : 'null'}${code ? `,"code":"${code}"` : ''},"msg":"request completed"}\n`,
    );
  }
}

/** The same access line through pino, for a logger configured from outside (no known destination). */
class AccessLogViaPino extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const log = request.log;
    if (error) log.warn({ reqId: request.id, method: request.method, url: stripQuery(request.url), err: error }, 'request errored');
    else if ((request as unknown as WithCode)[kNoAccessLine] !== true) {
      const code = (request as unknown as WithCode)[kErrorCode];
      log.info(
        {
          reqId: request.id,
          method: request.method,
          url: stripQuery(request.url),
          statusCode: reply.statusCode,
          responseTime: Math.round(reply.elapsedTime * 100) / 100,
          ip: request.ip,
          code,
        },
        'request completed',
      );
    }
  }
}

const kLinger = Symbol('linger');
/** set on the raw request by `rewriteUrl` when the request target is refused */
const kBadTarget = Symbol('badTarget');
type WithBadTarget = { [kBadTarget]?: string };

/**
 * A failure answered before the request body was read (413 on Content-Length, a parser error) is sent
 * with `Connection: close`, and Node then closes the socket with the unread body still queued: the
 * kernel answers with a reset, which can reach the client before it has read the response (it sees
 * EPIPE/ECONNRESET instead of the envelope). So such a socket lingers, like nginx's lingering_close:
 * it half-closes after the response and keeps reading and discarding for up to 2 s (or until the
 * client closes its side), then closes.
 */
export function lingerIfBodyUnread(raw: IncomingMessage): void {
  const socket = raw.socket as (Socket & { destroySoon?: () => void; [kLinger]?: boolean }) | null;
  if (raw.complete || !socket || socket[kLinger] || typeof socket.destroySoon !== 'function') return;
  socket[kLinger] = true;
  socket.destroySoon = function (this: Socket) {
    if (this.destroyed) return;
    raw.resume(); // body bytes the parser still delivers are discarded
    this.resume();
    const t = setTimeout(() => this.destroy(), 2000);
    t.unref();
    this.once('end', () => {
      clearTimeout(t);
      this.destroy();
    });
    this.once('close', () => clearTimeout(t));
    this.end();
  };
}

/** See MAX_CONNECTIONS: the overall cap and the per-address count, enforced as connections open. */
function limitConnections(app: FastifyInstance, o: { max: number; perAddress: number; exempt: (address: string) => boolean }): void {
  const open = new Map<string, number>();
  let total = 0;
  const refuse = (socket: Socket, why: string) => {
    const id = ulid();
    const body = JSON.stringify(envelope('SERVICE_UNAVAILABLE', why, id));
    socket.on('error', () => {});
    socket.end(
      `HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nRetry-After: 1\r\nX-Request-Id: ${id}\r\nConnection: close\r\n\r\n${body}`,
    );
    socket.destroySoon();
  };
  app.server.on('connection', (socket: Socket) => {
    if (total >= o.max) return refuse(socket, `the server holds its maximum of ${o.max} connections; retry shortly`);
    const address = socket.remoteAddress ?? '';
    const counted = !o.exempt(address);
    if (counted) {
      const n = open.get(address) ?? 0;
      if (n >= o.perAddress)
        return refuse(socket, `too many open connections from your address (at most ${o.perAddress}); reuse connections or close idle ones`);
      open.set(address, n + 1);
    }
    total++;
    socket.once('close', () => {
      total--;
      if (!counted) return;
      const n = (open.get(address) ?? 1) - 1;
      if (n <= 0) open.delete(address);
      else open.set(address, n);
    });
  });
}

/** Fastify's name for the part of a request a schema checked → what the caller calls it. */
function validationPlace(context: string | undefined): FieldProblem['in'] {
  return context === 'querystring' ? 'query' : context === 'params' ? 'path' : context === 'headers' ? 'headers' : 'body';
}

function setCode(req: FastifyRequest, code: string): void {
  (req as unknown as WithCode)[kErrorCode] = code;
}

/**
 * A Fastify instance with the conventions shared by Hub and Bridge: a request id per request
 * (returned in `x-request-id`), the error envelope for every failure (unknown route, malformed JSON,
 * oversized body, thrown AppError, unexpected error), 10 MB body limit, redacted JSON logs.
 */
export function createBaseApp(opts: BaseAppOptions): FastifyInstance {
  const http = opts.http ?? DEFAULT_HTTP;
  // the destination every line goes to: the test's stream, or stdout with access lines batched
  let dest: (LogDestination & { writeBuffered?(line: string): void }) | undefined;
  let logger: FastifyServerOptions['logger'] | false;
  if (opts.logger === false) logger = false;
  else if (opts.loggerStream) {
    dest = opts.loggerStream as unknown as LogDestination;
    logger = { ...loggerOptions(opts.name, http.logLevel), stream: dest } as FastifyServerOptions['logger'];
  } else if (opts.logger) logger = opts.logger;
  else {
    dest = bufferedStdout();
    logger = { ...loggerOptions(opts.name, http.logLevel), stream: dest } as FastifyServerOptions['logger'];
  }
  const accessWrite = dest?.writeBuffered ? dest.writeBuffered.bind(dest) : dest ? (line: string) => void dest!.write(line) : undefined;
  const trustProxy = http.trustProxy;
  const app = Fastify({
    logger: logger as FastifyServerOptions['logger'],
    ...(logger
      ? {
          logController: accessWrite ? new AccessLog(opts.name, accessWrite) : new AccessLogViaPino(),
          // req.log becomes a pino child only when something logs through it
          childLoggerFactory: (parent: FastifyBaseLogger, bindings: Bindings, opts: ChildLoggerOptions) =>
            opts.level !== undefined || opts.serializers !== undefined
              ? parent.child(bindings, opts)
              : (new RequestLogger(parent as never, bindings) as unknown as FastifyBaseLogger),
        }
      : {}),
    bodyLimit: BODY_LIMIT_BYTES,
    genReqId: () => ulid(),
    requestIdHeader: false,
    trustProxy,
    return503OnClosing: true,
    // one canonical path before routing (see request-target.ts); a refused target is answered 400 by
    // the first onRequest hook, before any route's hooks or handler
    rewriteUrl(req) {
      const raw = req.url ?? '/';
      const t = canonicalTarget(raw);
      if (typeof t === 'string') return t;
      (req as WithBadTarget)[kBadTarget] = t.error;
      return '/';
    },
    // URL-level failures (bad percent-encoding, …) get the envelope too, not Fastify's default body
    frameworkErrors(err, req, reply) {
      const status = (err as { statusCode?: number }).statusCode ?? 400;
      (reply as unknown as { code(n: number): { header(k: string, v: string): { send(b: unknown): void } } })
        .code(status)
        .header('x-request-id', req.id)
        .send(envelope(codeForStatus(status), status === 414 ? 'URL too long' : 'malformed request URL', req.id));
    },
    // slow clients (slowloris: headers or a body trickled in) are cut off: 408, connection closed
    requestTimeout: opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS,
    http: { maxHeaderSize: MAX_HEADER_BYTES, connectionsCheckingInterval: opts.timeoutCheckIntervalMs ?? 5_000 } as never,
    // malformed HTTP (bad header line, oversized headers, conflicting lengths…) never reaches a route:
    // answer with the envelope too, and close the connection (the parser cannot resync)
    clientErrorHandler(err, socket) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ECONNRESET' || socket.destroyed) return;
      // the request was already answered from its headers (a 401 before the body was read) and its
      // body turned out malformed: one response per request, so close without a second one
      const current = (socket as unknown as { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
      if (current?.headersSent) {
        socket.destroySoon();
        return;
      }
      const [status, reason, message] =
        code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'Request Timeout', 'request timed out']
          : code === 'HPE_HEADER_OVERFLOW'
            ? [431, 'Request Header Fields Too Large', `request headers exceed ${MAX_HEADER_BYTES} bytes`]
            : [400, 'Bad Request', 'malformed HTTP request'];
      const id = ulid();
      const body = JSON.stringify(envelope(codeForStatus(status), message, id));
      if (socket.writable) {
        socket.end(
          `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Request-Id: ${id}\r\nConnection: close\r\n\r\n${body}`,
        );
        socket.once('finish', () => socket.destroy());
      } else socket.destroy();
    },
  });

  limitConnections(app, {
    max: http.maxConnections,
    perAddress: http.maxConnectionsPerAddress,
    exempt: isTrustedProxy(trustProxy),
  });

  // the front door: asked first by the HTTP server's request listener, then Fastify's own. Not through a
  // `serverFactory`: Fastify skips the extra bindings of host `localhost` (127.0.0.1 and ::1) for a
  // server it did not make. Those extra servers get Fastify's listener alone: the route hook checks
  // every request the front door did not (it is a shortcut, never the only check).
  if (opts.front) {
    const front = opts.front;
    const server = app.server;
    const fastifyListeners = server.listeners('request') as RequestListener[];
    if (fastifyListeners.length !== 1) throw new Error(`expected Fastify's one request listener, found ${fastifyListeners.length}`);
    const handler = fastifyListeners[0]!;
    server.removeListener('request', handler);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const h = front.handle;
      if (h === null || !h(req, res)) handler(req, res);
    });
    // `Expect: 100-continue`: the front door decides before the client is told to send its body (Node
    // would send the 100 itself before any request listener ran, the body then uploaded to be refused)
    server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
      const h = front.handle;
      if (h !== null && h(req, res)) return;
      res.writeContinue();
      handler(req, res);
    });
    // a closing server answers every request through Fastify (503 while closing)
    app.addHook('preClose', (done) => {
      front.handle = null;
      done();
    });
  }

  // Node answers an unknown `Expect:` with a bare 417 unless someone listens: send the envelope
  app.server.on('checkExpectation', (_req, res) => {
    const id = ulid();
    const body = JSON.stringify(envelope('BAD_REQUEST', 'unsupported Expect header: only 100-continue is supported', id));
    res.writeHead(417, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'x-request-id': id,
      connection: 'close',
    });
    res.end(body);
  });

  app.addHook('onRequest', (req, reply, done) => {
    reply.header('x-request-id', req.id);
    const bad = (req.raw as WithBadTarget)[kBadTarget];
    if (bad !== undefined) {
      done(new AppError('BAD_REQUEST', bad));
      return;
    }
    done();
  });

  // a body trickled in (slowloris) is cut off when the request timeout passes: Node's own request
  // timeout covers the headers only once the route is running, so the body gets its own deadline,
  // kept by one shared sweep rather than a timer per request (body-deadline.ts)
  const requestTimeoutMs = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
  const deadlines = new BodyDeadlines(
    requestTimeoutMs,
    () => new AppError('REQUEST_TIMEOUT', `the request body did not arrive within ${requestTimeoutMs / 1000} s`),
  );
  app.addHook('onClose', (_app, done) => {
    deadlines.close();
    done();
  });
  // request bodies held in memory at once: bounded per process and per client address (body-gauge.ts);
  // one hook with the deadline above (each preParsing hook costs every request)
  const chargeBody = chargeBodies(new BodyGauge(http.bodyInflightMaxBytes), BODY_LIMIT_BYTES);
  app.addHook('preParsing', (req, reply, payload, done) => {
    // past the deadline: an error on the body stream, the reader stops and the 408 goes out
    if (!req.raw.complete) deadlines.watch(req.raw, payload);
    // a route that bounds its bodies itself (the Bridge's /call, per tenant)
    if (req.routeOptions.config.bodyBudget === 'own') return done(null, payload);
    chargeBody.call(app, req, reply, payload, done);
  });

  // every route must say what it requires of its caller: an undeclared route fails at start-up
  app.decorate('routeTable', [] as RouteInfo[]);
  app.addHook('onRoute', (route) => {
    const auth = route.config?.auth;
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    if (!auth) throw new Error(`route ${methods.join(',')} ${route.url} declares no auth requirement (config.auth)`);
    // routes anyone may call read small bodies: an unauthenticated caller cannot park megabytes here
    if (auth.kind === 'public' && route.bodyLimit === undefined) route.bodyLimit = PUBLIC_BODY_LIMIT_BYTES;
    for (const method of methods) app.routeTable.push({ method, url: route.url, auth });
  });

  // bodies: JSON only (anything else → 415), nested at most MAX_JSON_DEPTH deep, checked on the raw
  // text before parsing; Fastify's own parser (prototype-poisoning checks included) does the rest
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (jsonTooDeep(body as string, MAX_JSON_DEPTH)) {
      done(new AppError('BAD_REQUEST', `JSON body nested deeper than ${MAX_JSON_DEPTH} levels`), undefined);
      return;
    }
    void parseJson(req, body as string, done); // the default parser answers through `done`
  });

  // an unknown method on a known path → 405 with Allow (GET /call, POST /healthz, …)
  const routes = new RouteMatcher(app.routeTable);
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0]!;
    const allowed = routes.allowed(path);
    if (allowed.length > 0 && !allowed.includes(req.method)) {
      setCode(req, 'METHOD_NOT_ALLOWED');
      reply
        .code(405)
        .header('allow', allowed.join(', '))
        .send(envelope('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${path}; allowed: ${allowed.join(', ')}`, req.id));
      return;
    }
    setCode(req, 'NOT_FOUND');
    reply.code(404).send(envelope('NOT_FOUND', `no route ${req.method} ${path}`, req.id));
  });

  app.setErrorHandler((err: unknown, req, reply) => {
    lingerIfBodyUnread(req.raw);
    if (err instanceof AppError) {
      setCode(req, err.code);
      if (err.headers) reply.headers(err.headers);
      if (err.status >= 500) req.log.error({ err }, err.message);
      return reply.code(err.status).send(envelope(err.code, err.message, req.id, err.details));
    }
    const e = err as { statusCode?: number; code?: string; message?: string; validation?: unknown };
    if (e.validation) {
      // a schema refused the input: name each field as the caller sent it (`body.expiresIn: …`)
      setCode(req, 'BAD_REQUEST');
      const where = validationPlace((e as { validationContext?: string }).validationContext);
      const problems: FieldProblem[] = (Array.isArray(e.validation) ? e.validation : []).slice(0, 10).map((v: { instancePath?: string; message?: string }) => {
        const field = (v.instancePath ?? '').split('/').filter(Boolean).join('.');
        return { in: where, field, message: String(v.message ?? 'invalid') };
      });
      const message = problems.length
        ? problems.map((p) => `${p.field ? `${p.in}.${p.field}` : p.in}: ${p.message}`).join('; ')
        : (e.message ?? 'invalid request');
      const named = problems.filter((p) => p.field);
      return reply.code(400).send(envelope('BAD_REQUEST', message, req.id, named.length ? ({ fields: named } satisfies FieldDetails) : undefined));
    }
    const status = typeof e.statusCode === 'number' ? e.statusCode : 500;
    if (status >= 400 && status < 500) {
      let code: string = codeForStatus(status);
      let message = e.message ?? ERROR_CATALOGUE.BAD_REQUEST.message;
      if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
        code = 'PAYLOAD_TOO_LARGE';
        message = `request body exceeds ${req.routeOptions.bodyLimit ?? BODY_LIMIT_BYTES} bytes`;
      } else if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
        code = 'UNSUPPORTED_MEDIA_TYPE';
        message = 'send the body as application/json';
      } else if (e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err instanceof SyntaxError) {
        code = 'BAD_REQUEST';
        message = 'malformed JSON body';
      } else if (e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') {
        code = 'BAD_REQUEST';
        message = 'empty JSON body';
      }
      setCode(req, code);
      return reply.code(status).send(envelope(code, message, req.id));
    }
    req.log.error({ err }, 'unhandled error');
    setCode(req, 'INTERNAL_ERROR');
    return reply.code(500).send(envelope('INTERNAL_ERROR', 'internal error', req.id));
  });

  return app;
}
