import { z } from 'zod';
import { ERROR_CATALOGUE, type ErrorCode } from '../errors.js';
import type { RouteAuth } from '../route-auth.js';

/**
 * One route of the Hub or the Bridge, declared once: method, path, what it requires of its caller,
 * the zod schemas of its input and of every response (errors from the one catalogue). The Hub
 * registers its routes from these (src/hub/route.ts), the OpenAPI document is generated from them,
 * and the CLI, the typed client and the tests import their types.
 */
export interface RouteContract {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Fastify path, `:param` segments */
  url: string;
  auth: RouteAuth;
  summary: string;
  tags: string[];
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: z.ZodType;
  /** success responses by status */
  response: Record<number, z.ZodType>;
  /** the error codes this route answers with (beyond the ones every route may answer) */
  errors?: ErrorCode[];
  /** not JSON: e.g. the sync stream (NDJSON) */
  stream?: boolean;
  /** the largest body the route reads (default: the app's; 64 KB for a route without a body) */
  bodyLimit?: number;
}

export function defineRoute<const C extends RouteContract>(c: C): C {
  return c;
}

/** `{"error":{"code","message","requestId"}}`, every failure of Hub and Bridge. */
export const ErrorEnvelope = z
  .object({
    error: z.object({
      code: z.string().meta({ description: 'a code of the error catalogue (docs/errors.md)' }),
      message: z.string(),
      requestId: z.string(),
      details: z.unknown().optional(),
    }),
  })
  .meta({ id: 'ErrorEnvelope' });

/** Errors any route may answer: malformed requests, limits, server trouble. */
const ALWAYS: ErrorCode[] = ['BAD_REQUEST', 'PAYLOAD_TOO_LARGE', 'REQUEST_TIMEOUT', 'UNSUPPORTED_MEDIA_TYPE', 'TOO_MANY_REQUESTS', 'INTERNAL_ERROR'];

/** The response map Fastify and OpenAPI see: the success schemas plus the envelope for every error status. */
export function responsesOf(c: RouteContract): Record<number, z.ZodType> {
  const out: Record<number, z.ZodType> = { ...c.response };
  const auth: ErrorCode[] =
    c.auth.kind === 'public'
      ? []
      : c.auth.kind === 'service' || c.auth.kind === 'operator' || c.auth.kind === 'apikey' || c.auth.kind === 'leakToken'
        ? ['UNAUTHORIZED']
        : ['UNAUTHORIZED', 'FORBIDDEN', 'NOT_FOUND'];
  for (const code of [...ALWAYS, ...auth, ...(c.errors ?? [])]) {
    const status = (ERROR_CATALOGUE as Record<string, { status: number }>)[code]?.status;
    if (status !== undefined && !(status in out)) out[status] = ErrorEnvelope;
  }
  return out;
}

/** `{ ok: true }` */
export const Ok = z.object({ ok: z.literal(true) });

/** What a name must be (src/protocol/names.ts NAME_RE): the OpenAPI description of every name field. */
export const NAME_DESCRIPTION = "1-63 lowercase letters, digits, '_' or '-', starting and ending with a letter or digit (names.ts NAME_RE)";
/**
 * Names of projects, envs, connections, keys. Where a name is created the service checks NAME_RE and
 * answers 400 with the rule; a name that cannot exist simply finds nothing (404).
 */
export const Name = z.string().max(200).meta({ description: NAME_DESCRIPTION });
/** a path segment naming a project */
export const ProjectParams = z.object({ project: Name });
export const EnvParams = z.object({ project: Name, env: Name });
export const IsoTime = z.string().meta({ description: 'ISO-8601 time (UTC)' });

/** Bridges that loaded a change before the call returned. */
export const AckResult = z
  .object({
    bridges: z.number().int(),
    acked: z.number().int(),
    lagging: z.array(z.string()),
  })
  .meta({ id: 'AckResult', description: 'Bridges connected when the change committed, how many applied it before this returned, and which did not' });

/** The API description itself, served by Hub and Bridge alike. */
export const DOCS_API = {
  'docs.openapi': defineRoute({
    method: 'GET',
    url: '/openapi.json',
    auth: { kind: 'public' },
    summary: 'This document (OpenAPI 3.1)',
    tags: ['meta'],
    response: { 200: z.record(z.string(), z.unknown()) },
  }),
  'docs.page': defineRoute({
    method: 'GET',
    url: '/docs',
    auth: { kind: 'public' },
    summary: 'This API, rendered (Swagger UI, served locally)',
    tags: ['meta'],
    response: { 200: z.string().meta({ description: 'text/html' }) },
  }),
  'docs.asset': defineRoute({
    method: 'GET',
    url: '/docs/:file',
    auth: { kind: 'public' },
    summary: "The page's scripts and styles",
    tags: ['meta'],
    params: z.object({ file: z.string() }),
    response: { 200: z.string().meta({ description: 'a script, style sheet or icon' }) },
    errors: ['NOT_FOUND'],
  }),
};
export type AckResult = z.infer<typeof AckResult>;
