/**
 * The one error catalogue shared by Hub, Bridge and CLI.
 * Every error response is `{"error":{"code","message","requestId"}}`.
 * Codes are never reused; test/unit/errors.test.ts keeps this table and docs/errors.md in sync. The first
 * code listed for a status is its generic one (`codeForStatus`); a later code with the same status
 * names a case a client may want to tell apart.
 */
import { cleanText } from './text.js';

export const ERROR_CATALOGUE = {
  BAD_REQUEST: { status: 400, message: 'invalid request' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  FORBIDDEN: { status: 403, message: 'permission denied' },
  NOT_FOUND: { status: 404, message: 'not found' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'method not allowed' },
  REQUEST_TIMEOUT: { status: 408, message: 'request timed out' },
  CONFLICT: { status: 409, message: 'conflict' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'request body too large' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'send the body as application/json' },
  INVALID_ROLE: { status: 422, message: 'invalid role' },
  INVALID_IP_ALLOWLIST: { status: 422, message: 'invalid IP allowlist' },
  TOO_MANY_REQUESTS: { status: 429, message: 'too many requests' },
  INTERNAL_ERROR: { status: 500, message: 'internal error' },
  SERVICE_UNAVAILABLE: { status: 503, message: 'service unavailable' },
  GATEWAY_TIMEOUT: { status: 504, message: 'query timed out' },
  RESPONSE_TOO_LARGE: { status: 400, message: 'the answer is too large; select fewer columns, narrow the where, or page' },
} as const;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export interface ErrorEnvelope {
  error: { code: ErrorCode | string; message: string; requestId: string; details?: unknown };
}

/** An error meant for the client: its message is public and must never hold a secret. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details?: unknown;
  readonly headers?: Record<string, string>;
  constructor(code: ErrorCode, message?: string, opts: { details?: unknown; headers?: Record<string, string>; cause?: unknown } = {}) {
    super(message ?? ERROR_CATALOGUE[code].message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'AppError';
    this.code = code;
    this.status = ERROR_CATALOGUE[code].status;
    this.details = opts.details;
    this.headers = opts.headers;
  }
}

export const badRequest = (m: string, details?: unknown) => new AppError('BAD_REQUEST', m, { details });
export const unauthorized = (m = 'authentication required') => new AppError('UNAUTHORIZED', m);
export const forbidden = (m = 'permission denied') => new AppError('FORBIDDEN', m);
export const notFound = (m = 'not found') => new AppError('NOT_FOUND', m);
export const conflict = (m: string) => new AppError('CONFLICT', m);
export const invalidRole = (m: string, details?: unknown) => new AppError('INVALID_ROLE', m, { details });
export const tooManyRequests = (m: string, retryAfterSeconds: number) =>
  new AppError('TOO_MANY_REQUESTS', m, { headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSeconds))) } });
export const unavailable = (m: string) => new AppError('SERVICE_UNAVAILABLE', m);

/**
 * The same AppError without a captured stack trace: for refusals made per request in bulk (the Bridge's
 * 401/429, which a flood makes by the thousand per second). Capturing a stack is most of what an Error
 * costs, and a refusal's stack is never read: it is answered, not logged.
 */
export function stacklessError(code: ErrorCode, message?: string, opts?: { headers?: Record<string, string> }): AppError {
  const E = Error as { stackTraceLimit?: number }; // V8's (Node); this file is also built for browsers
  const limit = E.stackTraceLimit;
  E.stackTraceLimit = 0;
  try {
    return new AppError(code, message, opts);
  } finally {
    E.stackTraceLimit = limit;
  }
}

/**
 * An input field that was refused, named as the API calls it (`expiresIn`, `query.limit` is
 * `{in: 'query', field: 'limit'}`). A 400 carries them as `details.fields`, so a client that took the
 * value under another name can say that name instead: the CLI says `--expires-in`.
 */
export interface FieldProblem {
  in: 'body' | 'query' | 'path' | 'headers';
  field: string;
  message: string;
}
export interface FieldDetails {
  fields: FieldProblem[];
}

/** 400 for one or more body fields; the message names them as the API does. */
export const badField = (fields: string | string[], message: string) =>
  new AppError('BAD_REQUEST', message, {
    details: { fields: (Array.isArray(fields) ? fields : [fields]).map((field) => ({ in: 'body', field, message })) } satisfies FieldDetails,
  });

/** The refused fields of an error's details (`details.fields`), or none. */
export function fieldProblems(details: unknown): FieldProblem[] {
  const fields = (details as { fields?: unknown } | null | undefined)?.fields;
  if (!Array.isArray(fields)) return [];
  return fields.filter(
    (f): f is FieldProblem =>
      typeof f === 'object' && f !== null && typeof (f as FieldProblem).field === 'string' && typeof (f as FieldProblem).in === 'string',
  );
}

export function codeForStatus(status: number): ErrorCode {
  for (const [code, v] of Object.entries(ERROR_CATALOGUE)) if (v.status === status) return code as ErrorCode;
  return status >= 500 ? 'INTERNAL_ERROR' : 'BAD_REQUEST';
}

/**
 * The error body. The message is cleaned of terminal escapes and control characters on the way out:
 * parts of it may come from elsewhere (a tenant database server's error text, a client's input).
 */
export function envelope(code: string, message: string, requestId: string, details?: unknown): ErrorEnvelope {
  const m = cleanText(message, { multiline: true, max: MAX_ERROR_MESSAGE });
  return { error: details === undefined ? { code, message: m, requestId } : { code, message: m, requestId, details } };
}

/**
 * An envelope without details, serialized once around its request id: `head + requestId + tail` is
 * `JSON.stringify(envelope(code, message, requestId))` for a request id that needs no JSON escaping (a
 * ULID). For answers sent in bulk, so each costs a string concatenation instead of a serialization.
 */
export function envelopeAround(code: string, message: string): { head: string; tail: string } {
  const m = cleanText(message, { multiline: true, max: MAX_ERROR_MESSAGE });
  return { head: `{"error":{"code":${JSON.stringify(code)},"message":${JSON.stringify(m)},"requestId":"`, tail: '"}}' };
}

/** characters of an error message on the wire */
export const MAX_ERROR_MESSAGE = 16_000;
