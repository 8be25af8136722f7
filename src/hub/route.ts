import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { responsesOf, type RouteContract } from '../protocol/api/define.js';
import { AppError } from '../protocol/errors.js';
import { PUBLIC_BODY_LIMIT_BYTES } from '../common/http.js';
import type { Actor } from './services/actor.js';
import type { Operator } from './services/auth.js';

type Out<T> = T extends z.ZodType ? z.output<T> : Record<string, never>;
/** What a handler gets: the validated params, query and body of its contract. */
export interface RouteInput<C extends RouteContract> {
  params: Out<C['params']>;
  query: Out<C['query']>;
  body: Out<C['body']>;
}
type SuccessBody<C extends RouteContract> = { [S in keyof C['response']]: C['response'][S] extends z.ZodType ? z.input<C['response'][S]> : never }[keyof C['response']];

export type RouteHandler<C extends RouteContract> = (
  input: RouteInput<C>,
  actor: Actor,
  http: { req: FastifyRequest; reply: FastifyReply },
) => Promise<SuccessBody<C> | FastifyReply | void>;

/**
 * Registers one route from its contract (src/protocol/api): Fastify validates params, query and
 * body with the contract's zod schemas and serializes each response through its schema; the route's
 * declared auth is enforced by the auth hook (route-auth.ts) before the body is read; the handler gets
 * typed input and the Actor. A contract with a 201 and no 200 answers 201.
 */
export function route<C extends RouteContract>(app: FastifyInstance, c: C, handler: RouteHandler<C>, opts: { logLevel?: 'warn' } = {}): void {
  const created = 201 in c.response && !(200 in c.response);
  app.route({
    method: c.method,
    url: c.url,
    config: { auth: c.auth },
    // a route whose contract takes no body reads a small one at most (a signed-in caller of logout,
    // connection test, revoke… cannot park 10 MB per request on the Hub)
    ...(c.body ? {} : { bodyLimit: PUBLIC_BODY_LIMIT_BYTES }),
    ...(opts.logLevel ? { logLevel: opts.logLevel } : {}),
    schema: {
      summary: c.summary,
      tags: c.tags,
      ...(c.params ? { params: c.params } : {}),
      ...(c.query ? { querystring: c.query } : {}),
      ...(c.body ? { body: c.body } : {}),
      // a stream writes its own response (hijacked): only documented
      ...(c.stream ? {} : { response: responsesOf(c) }),
    },
    handler: async (req, reply) => {
      if (created) reply.code(201);
      const actor: Actor = { operator: req.operator, requestId: req.id, ip: req.ip ?? null };
      return handler({ params: req.params, query: req.query, body: req.body } as RouteInput<C>, actor, { req, reply });
    },
  });
}

/** The operator of a route that declared operator, org or project auth (the auth hook put it there). */
export function signedIn(actor: Actor): Operator {
  if (!actor.operator) throw new AppError('INTERNAL_ERROR', 'no authenticated operator on this route');
  return actor.operator;
}
