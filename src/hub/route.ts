import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { contractRoute } from '../common/contract-route.js';
import type { RouteContract } from '../protocol/api/define.js';
import type { Actor } from './services/actor.js';

type Out<T> = T extends z.ZodType ? z.output<T> : Record<string, never>;
/** What a handler gets: the validated params, query and body of its contract. */
export interface RouteInput<C extends RouteContract> {
  params: Out<C['params']>;
  query: Out<C['query']>;
  body: Out<C['body']>;
}
type SuccessBody<C extends RouteContract> = {
  [S in keyof C['response']]: C['response'][S] extends z.ZodType ? z.input<C['response'][S]> : never;
}[keyof C['response']];

export type RouteHandler<C extends RouteContract> = (
  input: RouteInput<C>,
  actor: Actor,
  http: { req: FastifyRequest; reply: FastifyReply },
) => Promise<SuccessBody<C> | FastifyReply | void>;

/**
 * Registers one Hub route from its contract (src/protocol/api) through `contractRoute`: Fastify
 * validates params, query and body with the contract's zod schemas and serializes each response
 * through its schema; the route's declared auth is enforced by the auth hook (route-auth.ts) before
 * the body is read; the handler gets typed input and the Actor. A contract with a 201 and no 200
 * answers 201.
 */
export function route<C extends RouteContract>(app: FastifyInstance, c: C, handler: RouteHandler<C>, opts: { logLevel?: 'warn' } = {}): void {
  const created = 201 in c.response && !(200 in c.response);
  contractRoute(
    app,
    c,
    async (req, reply) => {
      if (created) reply.code(201);
      const actor: Actor = req.actor ?? { operator: null, requestId: req.id, ip: req.ip ?? null };
      return handler({ params: req.params, query: req.query, body: req.body } as RouteInput<C>, actor, { req, reply });
    },
    opts,
  );
}
