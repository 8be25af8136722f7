/**
 * Request bodies in flight on the shared Bridge are bounded per project/env (half of
 * STK_RESPONSE_INFLIGHT_MAX_BYTES) and per Bridge: a body that would pass the bound gets 503 with
 * Retry-After before it is buffered, whether it declares its length or comes chunked; other tenants
 * are served meanwhile, and the bytes come back once the response is sent. Before this bound one
 * read-only key's 600 concurrent 9.9 MB bodies took the Bridge to 2.8 GB RSS (and stalled other
 * tenants up to 30 s); with it, ~300 MB.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type KeyInfo, type Stack } from '../helpers/fuzz-stack.js';
import { waitFor, type Proc } from '../helpers/procs.js';
import { postBody, type BodyAnswer } from '../helpers/raw-http.js';

const MB = 1024 * 1024;

/** a valid /call whose body is about `bytes` long (a select whose where names a long string) */
const bigCall = (bytes: number) => JSON.stringify({ path: 'db/users/select', params: { where: { name: 'x'.repeat(bytes) } } });

/** POST /call with this key (see postBody: `chunked`, `hold` + `finish()`) */
const post = (url: string, key: string, body: string, o: { chunked?: boolean; hold?: boolean } = {}) =>
  postBody(`${url}/call`, { 'content-type': 'application/json', 'x-santokit-api-key': key }, body, o);

describe('security: request bodies in flight on the Bridge', () => {
  let s: Stack;
  let bridge: Proc;
  let reader: KeyInfo;
  let other: KeyInfo;

  beforeAll(async () => {
    s = await startStack({ bridges: 0 });
    await s.addEnv('other');
    // 8 MB in flight per Bridge: 4 MB per project/env (reserved in 1 MB steps: a 2.5 MB body holds ~3.4 MB)
    bridge = await s.startBridge({ STK_RESPONSE_INFLIGHT_MAX_BYTES: String(8 * MB) });
    reader = await s.createKey('reqbytes-reader', ['reader']);
    other = await s.createKey('reqbytes-other', ['reader'], 'other');
    await waitFor(
      async () => (await post(bridge.url, reader.key, bigCall(10)).done).status === 200 && (await post(bridge.url, other.key, bigCall(10)).done).status === 200,
      30_000,
      'both tenants served',
    );
  }, 180_000);

  afterAll(async () => {
    await s?.stop();
  });

  it("a tenant's bodies past its share get 503 + Retry-After before they are read; other tenants go on; the bytes come back", async () => {
    // one 2.5 MB body held open (all but its last byte sent): it holds most of the tenant's 4 MB
    const held = post(bridge.url, reader.key, bigCall(2.5 * MB), { hold: true });
    // a second 2.5 MB body of the same tenant: refused once the first is charged
    let refused: BodyAnswer | undefined;
    await waitFor(
      async () => {
        const r = await post(bridge.url, reader.key, bigCall(2.5 * MB)).done;
        if (r.status === 503) refused = r;
        else expect(r.status).toBe(200);
        return r.status === 503;
      },
      20_000,
      'a second body of the tenant refused',
    );
    expect(refused!.json.error.code).toBe('SERVICE_UNAVAILABLE');
    expect(refused!.json.error.message).toMatch(/request bodies/);
    expect(refused!.headers['retry-after']).toBe('1');
    // the same without Content-Length (chunked): counted as it arrives
    const chunked = await post(bridge.url, reader.key, bigCall(2.5 * MB), { chunked: true }).done;
    expect(chunked.status).toBe(503);
    expect(chunked.json.error.code).toBe('SERVICE_UNAVAILABLE');
    // small bodies of the same tenant, and another tenant's big one, are served meanwhile
    expect((await post(bridge.url, reader.key, bigCall(100)).done).status).toBe(200);
    expect((await post(bridge.url, other.key, bigCall(2.5 * MB)).done).status).toBe(200);
    // the held body completes and is answered; its bytes come back
    held.finish();
    expect((await held.done).status).toBe(200);
    expect((await post(bridge.url, reader.key, bigCall(2.5 * MB)).done).status).toBe(200);
    expect((await post(bridge.url, reader.key, bigCall(2.5 * MB), { chunked: true }).done).status).toBe(200);
    expect(bridge.child.exitCode).toBeNull();
  }, 60_000);
});
