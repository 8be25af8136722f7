/**
 * The published API description: `GET /openapi.json` on Hub and Bridge is a valid OpenAPI 3.1
 * document (checked by an OpenAPI validator) that describes every route the running app registered,
 * with the auth each declares; `GET /docs` renders it locally (no CDN), and a real browser finds the
 * `/call` operation on the Bridge's page.
 */
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Validator } from '@seriousme/openapi-schema-validator';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import { buildBridge } from '../../src/bridge/app.js';
import { loadBridgeConfig } from '../../src/bridge/config.js';

const CHROMIUM = '/usr/bin/chromium';

describe('OpenAPI and /docs', () => {
  const apps: Record<'hub' | 'bridge', { app: FastifyInstance; url: string }> = {} as never;

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stk-openapi-'));
    const { app: hub } = await buildHub(
      loadHubConfig({ STK_SECRET_KEY: 'c'.repeat(64), STK_SERVICE_TOKEN: 'openapi-token-xxxxxxxx', STK_HUB_DB_URL: `sqlite://${join(dir, 'hub.db')}` }),
      { logger: false },
    );
    apps.hub = { app: hub, url: await hub.listen({ port: 0, host: '127.0.0.1' }) };
    const { app: bridge } = await buildBridge(loadBridgeConfig({ STK_SERVICE_TOKEN: 'openapi-token-xxxxxxxx', STK_HUB_URL: 'http://127.0.0.1:9' }), {
      logger: false,
    });
    apps.bridge = { app: bridge, url: await bridge.listen({ port: 0, host: '127.0.0.1' }) };
  });
  afterAll(async () => {
    await apps.hub?.app.close();
    await apps.bridge?.app.close();
  });

  for (const name of ['hub', 'bridge'] as const) {
    it(`${name}: /openapi.json is valid OpenAPI 3.1 and covers every registered route with its declared auth`, async () => {
      const { app, url } = apps[name];
      const res = await fetch(`${url}/openapi.json`);
      expect(res.status).toBe(200);
      const doc = (await res.json()) as { openapi: string; paths: Record<string, Record<string, { 'x-santokit-auth': unknown; security: unknown[] }>> };
      expect(doc.openapi).toBe('3.1.0');
      const validator = new Validator();
      const result = await validator.validate(doc as never);
      expect(result.errors ?? [], JSON.stringify(result.errors ?? []).slice(0, 2000)).toEqual([]);
      expect(result.valid).toBe(true);
      // the validator does refuse a broken document (a parameter without its `in`)
      const broken = structuredClone(doc) as unknown as { paths: Record<string, Record<string, { parameters: Array<{ in?: string }> }>> };
      const withParams = Object.values(broken.paths)
        .flatMap((ops) => Object.values(ops))
        .find((o) => o.parameters.length > 0)!;
      delete withParams.parameters[0]!.in;
      expect((await new Validator().validate(broken as never)).valid).toBe(false);
      const routes = app.routeTable.filter((r) => r.method !== 'HEAD');
      expect(routes.length).toBeGreaterThan(name === 'hub' ? 35 : 5);
      const missing: string[] = [];
      for (const r of routes) {
        const op = doc.paths[r.url.replace(/:([A-Za-z]+)/g, '{$1}')]?.[r.method.toLowerCase()];
        if (!op) missing.push(`${r.method} ${r.url}`);
        else expect(op['x-santokit-auth'], `${r.method} ${r.url}`).toEqual(r.auth);
      }
      expect(missing).toEqual([]);
      // and nothing documented that does not exist
      const registered = new Set(routes.map((r) => `${r.method} ${r.url.replace(/:([A-Za-z]+)/g, '{$1}')}`));
      const documented = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`));
      expect(documented.filter((d) => !registered.has(d))).toEqual([]);
      console.log(`[openapi] ${name}: ${documented.length} operations, all registered routes documented, document valid`);
    });

    it(`${name}: /docs is served locally`, async () => {
      const { url } = apps[name];
      const page = await fetch(`${url}/docs`);
      expect(page.status).toBe(200);
      const html = await page.text();
      expect(html).not.toMatch(/https?:\/\//);
      for (const asset of html.matchAll(/(?:src|href)="([^"]+)"/g)) {
        const r = await fetch(url + asset[1]);
        expect(r.status, asset[1]).toBe(200);
      }
      expect((await fetch(`${url}/docs/..%2Fpackage.json`)).status).toBe(400);
      expect((await fetch(`${url}/docs/package.json`)).status).toBe(404);
      // names an object inherits are no assets either (they were a 500 that logged the file path)
      for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']) {
        const r = await fetch(`${url}/docs/${name}`);
        expect(r.status, name).toBe(404);
        expect(((await r.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
      }
    });
  }

  it('a real browser renders the Bridge page and finds the /call operation', async () => {
    expect(existsSync(CHROMIUM), `${CHROMIUM} (Debian package chromium; .ci/run installs it)`).toBe(true);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    try {
      const page = await browser.newPage();
      const external: string[] = [];
      page.on('request', (r) => {
        if (!r.url().startsWith(apps.bridge.url)) external.push(r.url());
      });
      await page.goto(`${apps.bridge.url}/docs`);
      const op = page.locator('.opblock-summary-path', { hasText: '/call' }).first();
      await op.waitFor({ timeout: 30_000 });
      expect(await op.textContent()).toContain('/call');
      expect(await page.locator('.opblock-post').count()).toBeGreaterThan(0);
      expect(external.filter((u) => !u.startsWith('data:'))).toEqual([]);
    } finally {
      await browser.close();
    }
  }, 90_000);
});
