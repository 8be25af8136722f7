import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import dns from 'node:dns';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { buildBridge } from '../../src/bridge/app.js';
import { loadBridgeConfig } from '../../src/bridge/config.js';
import { formatKey, newKeyId, newSecret } from '../../src/protocol/key-format.js';

/**
 * STK_BRIDGE_HOST=localhost: Fastify listens on every address `localhost` resolves to (127.0.0.1 and
 * ::1 on most hosts), so clients reach the Bridge whichever one they pick. Fastify skips those extra
 * bindings for a server made by a `serverFactory`, which is how the Bridge's front door was first put
 * in front of Fastify: the Bridge then answered on one of them only. This host resolves `localhost` to
 * 127.0.0.1 alone, so here it resolves to two loopback addresses (127.0.0.1, 127.0.0.2) as a dual-stack
 * host would to two, and the Bridge must answer — with the same refusal — on both.
 */
describe('a Bridge on STK_BRIDGE_HOST=localhost listens on every address localhost resolves to', () => {
  let app: FastifyInstance;
  const lookup = dns.lookup;

  beforeAll(async () => {
    // only the all-addresses lookup (Fastify's), for localhost; everything else as usual
    (dns as { lookup: unknown }).lookup = (host: string, opts: unknown, cb: unknown) => {
      if (host === 'localhost' && typeof opts === 'object' && opts !== null && (opts as { all?: boolean }).all && typeof cb === 'function') {
        process.nextTick(() =>
          (cb as (e: null, a: unknown) => void)(null, [
            { address: '127.0.0.1', family: 4 },
            { address: '127.0.0.2', family: 4 },
          ]),
        );
        return;
      }
      return (lookup as (...a: unknown[]) => unknown)(host, opts, cb);
    };
    ({ app } = await buildBridge(loadBridgeConfig({ STK_SERVICE_TOKEN: 'bindings-token-xxxxxxxx', STK_HUB_URL: 'http://127.0.0.1:9' }), { logger: false }));
    await app.listen({ port: 0, host: 'localhost' });
  });
  afterAll(async () => {
    (dns as { lookup: unknown }).lookup = lookup;
    await app?.close();
  });

  it('both addresses answer POST /call, the front door refusing a bad key on each', async () => {
    const bound = app.addresses() as AddressInfo[];
    const addresses = bound.map((a) => a.address).sort();
    expect(addresses).toEqual(['127.0.0.1', '127.0.0.2']);
    const port = bound[0]!.port;
    for (const host of addresses) {
      const r = await fetch(`http://${host}:${port}/call`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-santokit-api-key': formatKey(newKeyId(), newSecret()) },
        body: '{"path":"db/users/select"}',
      });
      // not synced with any Hub: an unknown key id is answered 503 (keys not loaded yet), the same on both
      const body = (await r.json()) as { error: { code: string; requestId: string } };
      expect([r.status, body.error.code], host).toEqual([503, 'SERVICE_UNAVAILABLE']);
      expect(body.error.requestId).toBe(r.headers.get('x-request-id'));
    }
  });
});
