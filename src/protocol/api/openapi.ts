import { z } from 'zod';
import { responsesOf, type RouteContract } from './define.js';

/**
 * OpenAPI 3.1 from the route contracts (zod → JSON Schema 2020-12, the dialect 3.1 uses). Schemas
 * with a `meta({ id })` become `components.schemas` and are referenced; the rest is inlined.
 */
export interface OpenApiInfo {
  title: string;
  version: string;
  description: string;
}

type Json = Record<string, unknown>;

const SECURITY: Record<string, Json> = {
  apiKey: { type: 'apiKey', in: 'header', name: 'X-Santokit-Api-Key', description: 'a project API key (`stk apikey create`)' },
  session: { type: 'http', scheme: 'bearer', description: 'an operator session token (`stk login`)' },
  serviceToken: { type: 'apiKey', in: 'header', name: 'X-Santokit-Service-Token', description: "the Hub's service token (Bridges only)" },
  leakToken: { type: 'http', scheme: 'bearer', description: 'a leak-report token (`stk leaks token create`): secret scanners only' },
};

declare const __STK_VERSION__: string;
/** the package version (set by the build; tests run from source) */
export const API_VERSION = typeof __STK_VERSION__ === 'string' ? __STK_VERSION__ : '0.0.0-dev';

export function openApiDocument(info: OpenApiInfo, contracts: Record<string, RouteContract>): Json {
  const components: Record<string, unknown> = {};
  /** JSON Schema of a zod schema, its named parts hoisted into components */
  const schemaOf = (s: z.ZodType, io: 'input' | 'output'): Json => {
    const js = z.toJSONSchema(s, { target: 'draft-2020-12', io, unrepresentable: 'any' }) as Json;
    delete js.$schema;
    const defs = js.$defs as Record<string, Json> | undefined;
    delete js.$defs;
    if (defs) for (const [k, v] of Object.entries(defs)) components[k] ??= rewriteRefs(v);
    const out = rewriteRefs(js);
    // a schema that IS a named one: reference it
    const id = (z.globalRegistry.get(s) as { id?: string } | undefined)?.id;
    if (id) {
      components[id] ??= out;
      return { $ref: `#/components/schemas/${id}` };
    }
    return out;
  };

  const paths: Record<string, Record<string, Json>> = {};
  for (const [operationId, c] of Object.entries(contracts)) {
    const path = c.url.replace(/:([A-Za-z]+)/g, '{$1}');
    const parameters: Json[] = [];
    for (const [where, obj] of [
      ['path', c.params],
      ['query', c.query],
    ] as const) {
      if (!obj) continue;
      for (const [name, field] of Object.entries(obj.shape as Record<string, z.ZodType>)) {
        const optional = field.safeParse(undefined).success;
        parameters.push({ name, in: where, required: where === 'path' || !optional, schema: schemaOf(field, 'input') });
      }
    }
    const responses: Record<string, Json> = {};
    for (const [status, schema] of Object.entries(responsesOf(c))) {
      const ok = Number(status) < 400;
      const content =
        c.stream && ok ? { 'application/x-ndjson': { schema: { type: 'string' } } } : { 'application/json': { schema: schemaOf(schema, 'output') } };
      responses[status] = { description: ok ? 'success' : 'error (the envelope; see docs/errors.md)', ...(status === '304' ? {} : { content }) };
    }
    const op: Json = { operationId, summary: c.summary, tags: c.tags, parameters, responses, 'x-santokit-auth': c.auth };
    const sec = securityOf(c);
    op.security = sec;
    if (c.body) {
      const optional = c.body.safeParse(undefined).success;
      op.requestBody = { required: !optional, content: { 'application/json': { schema: schemaOf(c.body, 'input') } } };
    }
    (paths[path] ??= {})[c.method.toLowerCase()] = op;
  }
  const used = new Set(Object.values(contracts).flatMap((c) => securityOf(c).flatMap((s) => Object.keys(s))));
  return {
    openapi: '3.1.0',
    info,
    paths,
    components: { schemas: components, securitySchemes: Object.fromEntries(Object.entries(SECURITY).filter(([k]) => used.has(k))) },
  };
}

function securityOf(c: RouteContract): Array<Record<string, string[]>> {
  switch (c.auth.kind) {
    case 'public':
      return [];
    case 'apikey':
      return [{ apiKey: [] }];
    case 'service':
      return [{ serviceToken: [] }];
    case 'leakToken':
      return [{ leakToken: [] }];
    default:
      return [{ session: [] }];
  }
}

function rewriteRefs(v: Json): Json {
  return JSON.parse(JSON.stringify(v).replaceAll('"#/$defs/', '"#/components/schemas/')) as Json;
}
