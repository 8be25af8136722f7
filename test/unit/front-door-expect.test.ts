import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { buildBridge } from '../../src/bridge/app.js';
import { loadBridgeConfig } from '../../src/bridge/config.js';
import { formatKey, newKeyId, newSecret } from '../../src/protocol/key-format.js';

/**
 * `Expect: 100-continue` (curl sends it for large bodies): the client waits for `100 Continue` before
 * sending its body. Node answers 100 by itself before any request listener runs, so a POST /call with a
 * bad key was told "go on" and uploaded its body only to be refused. The front door decides first: a
 * refusal goes out instead of the 100 (no body is asked for); a request it passes on gets the 100.
 * An in-process Bridge that has not synced with a Hub: a malformed key is refused (401) at the door, a
 * well-formed unknown one is passed on and answered 503 (keys not loaded yet).
 */
describe('front door and Expect: 100-continue', () => {
  let app: FastifyInstance;
  let port = 0;
  beforeAll(async () => {
    ({ app } = await buildBridge(loadBridgeConfig({ STK_SERVICE_TOKEN: 'expect-token-xxxxxxxxx', STK_HUB_URL: 'http://127.0.0.1:9' }), { logger: false }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    port = (app.server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await app?.close();
  });

  /** sends the headers only and returns what the Bridge says within `ms` */
  const headersOnly = (key: string, ms = 700, length = 5_000_000) =>
    new Promise<string>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      let buf = '';
      s.on('data', (d) => (buf += d.toString('latin1')));
      s.on('error', () => {});
      s.write(
        `POST /call HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nX-Santokit-Api-Key: ${key}\r\nContent-Length: ${length}\r\nExpect: 100-continue\r\n\r\n`,
      );
      setTimeout(() => {
        s.destroy();
        resolve(buf);
      }, ms);
    });

  it('a key refused at the door: the refusal, never a 100 Continue', async () => {
    const out = await headersOnly('stk_not-a-key');
    expect(out.split('\r\n')[0]).toBe('HTTP/1.1 401 Unauthorized');
    expect(out).not.toContain('100 Continue');
    expect(out).toContain('"code":"UNAUTHORIZED"');
    // a small body too: the client may still send the body it was not asked for, so the connection closes
    const small = await headersOnly('stk_not-a-key', 700, 20);
    expect(small.split('\r\n')[0]).toBe('HTTP/1.1 401 Unauthorized');
    expect(small.toLowerCase()).toContain('connection: close');
  });

  it('a request the door passes on: 100 Continue, then the route answers', async () => {
    const out = await headersOnly(formatKey(newKeyId(), newSecret()));
    expect(out.split('\r\n')[0]).toBe('HTTP/1.1 100 Continue');
    expect(out).toContain('HTTP/1.1 503 Service Unavailable');
  });
});
