import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { DOCS_API, type RouteContract } from '../protocol/api/define.js';
import { contractRoute } from './contract-route.js';
import { notFound } from '../protocol/errors.js';

/** Files of swagger-ui-dist the page loads, served from node_modules (no CDN). */
const ASSETS: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'application/javascript; charset=utf-8',
  'swagger-ui-standalone-preset.js': 'application/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
};

const INIT = `window.onload = () => {
  window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#swagger-ui', deepLinking: true, presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: 'BaseLayout' });
};
`;

/**
 * `GET /openapi.json` (the document built from the route contracts) and `GET /docs` (Swagger UI,
 * its assets served locally), registered from their contracts (DOCS_API). Both public: the API description is no secret, the routes are.
 */
export function installApiDocs(app: FastifyInstance, title: string, document: () => unknown): void {
  let cached: string | undefined;
  // the handlers check their one parameter themselves: the pages are served the same with or without the zod compilers
  const reg = (c: RouteContract, handler: (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>) =>
    contractRoute(app, c, handler, { schemas: 'described' });
  reg(DOCS_API['docs.openapi'], async (_req, reply) => {
    cached ??= JSON.stringify(document());
    return reply.type('application/json; charset=utf-8').send(cached);
  });
  const dir = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
  const files = new Map<string, Buffer>();
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title} API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"><link rel="icon" href="/docs/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script><script src="/docs/swagger-ui-standalone-preset.js"></script><script src="/docs/init.js"></script>
</body></html>`;
  reg(DOCS_API['docs.page'], async (_req, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(html));
  reg(DOCS_API['docs.asset'], async (req, reply) => {
    const name = (req.params as { file: string }).file;
    if (name === 'init.js') return reply.type('application/javascript; charset=utf-8').send(INIT);
    const type = Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined;
    if (!type) throw notFound(`no file ${JSON.stringify(name.slice(0, 80))} in /docs`);
    let body = files.get(name);
    if (!body) {
      body = readFileSync(join(dir, name));
      files.set(name, body);
    }
    return reply.type(type).header('cache-control', 'public, max-age=3600').send(body);
  });
}
