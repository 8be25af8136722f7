import type { IncomingMessage } from 'node:http';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { clientAddress, parseTrustProxy } from '../../src/common/trust-proxy.js';

/**
 * The Bridge's front door reads the client address before Fastify does (clientAddress): it must be the
 * address Fastify's `req.ip` gives for the same request and setting — the one the per-address limits,
 * the IP allowlists and the access line use. Compared here against a real Fastify instance per setting.
 */
const SETTINGS = ['', 'true', '127.0.0.1', '10.0.0.0/8,127.0.0.1', 'loopback', '192.0.2.1'];
const PEERS = ['127.0.0.1', '10.1.2.3', '203.0.113.9', '::1', '::ffff:127.0.0.1'];
const XFF: Array<string | undefined> = [
  undefined,
  '',
  '198.51.100.7',
  ' 198.51.100.7 ',
  '198.51.100.7, 10.0.0.2',
  '198.51.100.7,10.0.0.2,127.0.0.1',
  'garbage',
  'a, b , c',
  '2001:db8::1',
  ',,',
  '198.51.100.7,',
  // whitespace other than a space around a lone address: Fastify (@fastify/forwarded) trims it with
  // String.prototype.trim; a no-break space (0xA0, legal obs-text in a header value) reaches it as is
  '\t198.51.100.7',
  '\u00a0198.51.100.7',
  '198.51.100.7\u00a0',
  '\u00a0',
];

function fakeRequest(peer: string, xff: string | undefined): IncomingMessage {
  const headers: Record<string, string> = {};
  if (xff !== undefined) headers['x-forwarded-for'] = xff;
  return { headers, socket: { remoteAddress: peer }, connection: { remoteAddress: peer } } as unknown as IncomingMessage;
}

describe('clientAddress (front door) = Fastify req.ip', () => {
  for (const setting of SETTINGS) {
    it(`STK_TRUST_PROXY=${JSON.stringify(setting)}`, async () => {
      const trust = parseTrustProxy(setting);
      const app = Fastify({ trustProxy: trust });
      app.post('/ip', async (req) => ({ ip: req.ip }));
      await app.ready();
      const mine = clientAddress(trust);
      let n = 0;
      for (const peer of PEERS) {
        for (const xff of XFF) {
          const r = await app.inject({
            method: 'POST',
            url: '/ip',
            remoteAddress: peer,
            headers: xff === undefined ? {} : { 'x-forwarded-for': xff },
            payload: {},
          });
          const fastify = (r.json() as { ip: string }).ip;
          // each request on a fresh "socket" (the per-connection trust cache starts empty), then the
          // same socket again (the cached answer)
          const req = fakeRequest(peer, xff);
          expect(mine(req), `peer ${peer}, X-Forwarded-For ${JSON.stringify(xff)}`).toBe(fastify);
          expect(mine(req), `peer ${peer}, X-Forwarded-For ${JSON.stringify(xff)} (again)`).toBe(fastify);
          n++;
        }
      }
      expect(n).toBe(PEERS.length * XFF.length);
      await app.close();
    });
  }
});
