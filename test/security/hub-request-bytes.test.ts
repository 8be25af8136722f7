/**
 * Request bodies a Hub holds in memory at once are bounded (src/common/body-gauge.ts): past
 * STK_BODY_INFLIGHT_MAX_BYTES in all, or a quarter of it from one client address, a body gets 503 with
 * Retry-After before it is buffered — with or without Content-Length — and the bytes come back when the
 * response has been sent. Before, an authenticated operator's concurrent 10 MB bodies were all buffered
 * (and parsed): a few hundred of them take gigabytes of the control plane.
 */
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import { FREE_BODY_BYTES } from '../../src/common/body-gauge.js';
import { postBody } from '../helpers/raw-http.js';

const KB = 1024;
/** the whole Hub's bound: 4 MB, so one address may hold 1 MB of bodies (past each body's free 64 KB) */
const INFLIGHT = 4 * 1024 * KB;
const OWNER = { email: 'bytes-owner@example.com', password: 'bytes-owner-password' };

/** POST `path` with a JSON body of about `bytes` (an unknown field padded out); `hold`, `chunked`, `from`: see postBody. */
const post = (url: string, token: string, path: string, bytes: number, o: { hold?: boolean; chunked?: boolean; from?: string } = {}) =>
  postBody(
    `${url}${path}`,
    { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    JSON.stringify({ name: 'bytes-x', pad: 'x'.repeat(bytes) }),
    o,
  );

const settle = () => new Promise((r) => setTimeout(r, 150));

describe('security: request bodies in flight on the Hub', () => {
  let hub: FastifyInstance;
  let url: string;
  let token: string;

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stk-hub-bytes-'));
    ({ app: hub } = await buildHub(
      loadHubConfig({
        STK_SECRET_KEY: 'c'.repeat(64),
        STK_SERVICE_TOKEN: 'hub-bytes-token-xxxxxxxx',
        STK_HUB_DB_URL: `sqlite://${join(dir, 'hub.db')}`,
        STK_OWNER_EMAIL: OWNER.email,
        STK_OWNER_PASSWORD: OWNER.password,
        STK_BODY_INFLIGHT_MAX_BYTES: String(INFLIGHT),
      }),
      { logger: false },
    ));
    // an operator route whose own hook awaits until the client has gone (as the session check's read of
    // a PostgreSQL store may): the body hook then runs for a request whose connection closed already
    hub.route({
      method: 'POST',
      url: '/test/after-abort',
      config: { auth: { kind: 'operator' } },
      onRequest: async (_req, reply) => {
        if (!reply.raw.closed) await once(reply.raw, 'close');
      },
      handler: async () => ({ ok: true }),
    });
    url = await hub.listen({ port: 0, host: '127.0.0.1' });
    const r = await fetch(`${url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(OWNER) });
    token = ((await r.json()) as { token: string }).token;
  });
  afterAll(async () => {
    await hub?.close();
  });

  it('one address holding its share gets 503 + Retry-After for the next big body (declared or chunked); small bodies and other addresses pass; the bytes come back', async () => {
    // 700 KB held (636 KB charged past the free 64 KB): one more such body would pass the 1 MB share
    const held = post(url, token, '/api/projects', 700 * KB, { hold: true });
    await settle();

    const declared = await post(url, token, '/api/projects', 700 * KB).done;
    expect(declared.status).toBe(503);
    expect(declared.json.error.code).toBe('SERVICE_UNAVAILABLE');
    expect(declared.json.error.requestId).toBeTruthy();
    expect(declared.headers['retry-after']).toBe('1');

    const chunked = await post(url, token, '/api/projects', 700 * KB, { chunked: true }).done;
    expect(chunked.status).toBe(503);
    expect(chunked.json.error.code).toBe('SERVICE_UNAVAILABLE');

    // a body within the free allowance is never refused (an ordinary request gets its normal answer)
    const small = await post(url, token, '/api/projects', FREE_BODY_BYTES - 2 * KB).done;
    expect(small.status).not.toBe(503);

    // another client address has its own share
    const other = await post(url, token, '/api/projects', 700 * KB, { from: '127.0.0.2' }).done;
    expect(other.status).not.toBe(503);

    // the held body completes normally, then its bytes are given back: the same address may send again
    held.finish();
    expect((await held.done).status).not.toBe(503);
    await settle();
    const again = await post(url, token, '/api/projects', 700 * KB).done;
    expect(again.status).not.toBe(503);
  });

  it('the whole Hub stops taking big bodies at its bound, whatever the addresses', async () => {
    // four addresses × 900 KB held (836 KB charged each, 3.3 MB) leave less than 836 KB of the 4 MB
    const holds = ['127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6'].map((from) => post(url, token, '/api/projects', 900 * KB, { hold: true, from }));
    await settle();
    const refused = await post(url, token, '/api/projects', 900 * KB, { from: '127.0.0.7' }).done;
    expect(refused.status).toBe(503);
    for (const h of holds) h.finish();
    for (const h of holds) expect((await h.done).status).not.toBe(503);
    await settle();
    const after = await post(url, token, '/api/projects', 900 * KB, { from: '127.0.0.7' }).done;
    expect(after.status).not.toBe(503);
  });

  it('bodies a client keeps sending after its answer (413 past the body limit) are not charged: no leak, no crash', async () => {
    // POST /api/auth/logout declares no body: its limit is 64 KB. 3 MB chunked from one address (a 1 MB
    // share): the Hub answers 413 at 64 KB while the rest is still arriving. Before, those bytes were
    // charged after the answer had given the request's bytes back — held for good — and past the share
    // the refusal was raised on a stream nobody listened to any more: the process ended.
    const login = await fetch(`${url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(OWNER) });
    const session = ((await login.json()) as { token: string }).token;
    for (let i = 0; i < 4; i++) {
      const r = await postBody(
        `${url}/api/auth/logout`,
        { 'content-type': 'application/json', authorization: `Bearer ${session}` },
        JSON.stringify({ pad: 'x'.repeat(3 * 1024 * KB) }),
        { chunked: true, from: '127.0.0.8' },
      ).done.catch((e: Error) => ({ status: 0, error: e.message }));
      // the answer is 413, or the connection is cut while the client still writes
      expect([0, 413]).toContain(r.status);
    }
    await settle();
    // the address's whole share is free again: a 900 KB body (836 KB charged) passes
    const after = await post(url, token, '/api/projects', 900 * KB, { from: '127.0.0.8' }).done;
    expect(after.status).not.toBe(503);
  });

  it('a request whose client left before its body was charged holds nothing', async () => {
    // headers declaring 900 KB (836 KB charged), then the connection closes while a hook awaits:
    // before, the body hook charged it afterwards and waited for a close that had already happened
    for (let i = 0; i < 3; i++) {
      const s = connect({ host: '127.0.0.1', port: Number(new URL(url).port), localAddress: '127.0.0.9' });
      await once(s, 'connect');
      s.write(
        `POST /test/after-abort HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${900 * KB}\r\n\r\n{`,
      );
      await settle();
      s.destroy();
      await settle();
    }
    const after = await post(url, token, '/api/projects', 900 * KB, { from: '127.0.0.9' }).done;
    expect(after.status).not.toBe(503);
  });

  it('a bad STK_BODY_INFLIGHT_MAX_BYTES is a start-up error, not NaN', () => {
    expect(() => loadHubConfig({ STK_SECRET_KEY: 'c'.repeat(64), STK_SERVICE_TOKEN: 'hub-bytes-token-xxxxxxxx', STK_BODY_INFLIGHT_MAX_BYTES: 'lots' })).toThrow(
      /STK_BODY_INFLIGHT_MAX_BYTES/,
    );
  });
});
