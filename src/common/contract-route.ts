import type { FastifyInstance, FastifyReply, FastifyRequest, preParsingHookHandler, RouteOptions } from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import { responsesOf, type RouteContract } from '../protocol/api/define.js';
import { PUBLIC_BODY_LIMIT_BYTES } from './http.js';

export interface ContractRouteOptions {
  /**
   * `checked` (default): Fastify validates params, query and body with the contract's zod schemas and
   * serializes each response through its schema. `described`: the schemas only describe the route
   * (OpenAPI); the handler checks its own input — the Bridge's `/call`, whose hand-written planner is
   * its hot path, and the API docs routes.
   */
  schemas?: 'checked' | 'described';
  logLevel?: 'warn';
  preParsing?: preParsingHookHandler;
  /** 'own': the route bounds its bodies in memory itself (its preParsing); the process-wide bound skips it */
  bodyBudget?: 'own';
}

/** Sets the zod compilers a `checked` contract route needs (fastify-type-provider-zod); once per app. */
export function useContractSchemas(app: FastifyInstance): void {
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
}

/**
 * The one way Hub and Bridge register a route: from its contract (src/protocol/api), so method, path,
 * the auth the route-auth hook enforces (`config.auth`) and the schemas are written once, in the
 * contract, and the OpenAPI document cannot disagree with what is served. A route whose contract
 * takes no body reads a small one at most (nobody parks 10 MB per request on a bodiless route).
 */
export function contractRoute(
  app: FastifyInstance,
  c: RouteContract,
  handler: (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>,
  opts: ContractRouteOptions = {},
): void {
  const route: RouteOptions = {
    method: c.method,
    url: c.url,
    config: opts.bodyBudget ? { auth: c.auth, bodyBudget: opts.bodyBudget } : { auth: c.auth },
    handler,
  };
  if (!c.body) route.bodyLimit = PUBLIC_BODY_LIMIT_BYTES;
  if (c.bodyLimit !== undefined) route.bodyLimit = c.bodyLimit;
  if (opts.logLevel) route.logLevel = opts.logLevel;
  if (opts.preParsing) route.preParsing = opts.preParsing;
  if ((opts.schemas ?? 'checked') === 'checked') {
    route.schema = {
      summary: c.summary,
      tags: c.tags,
      ...(c.params ? { params: c.params } : {}),
      ...(c.query ? { querystring: c.query } : {}),
      ...(c.body ? { body: c.body } : {}),
      // a stream writes its own response (hijacked): only documented
      ...(c.stream ? {} : { response: responsesOf(c) }),
    };
  }
  app.route(route);
}
