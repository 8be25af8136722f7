/**
 * Request bodies in flight on the shared Bridge are bounded per project/env (half of
 * STK_RESPONSE_INFLIGHT_MAX_BYTES) and per Bridge: a body that would pass the bound gets 503 with
 * Retry-After before it is buffered, whether it declares its length or comes chunked; other tenants
 * are served meanwhile, and the bytes come back once the response is sent. Before this bound one
 * read-only key's 600 concurrent 9.9 MB bodies took the Bridge to 2.8 GB RSS (and stalled other
 * tenants up to 30 s); with it, ~300 MB.
 */
import { request, type ClientRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, withPassword, type KeyInfo, type Stack } from '../helpers/fuzz-stack.js';
import { createTestDatabase } from '../helpers/pg.js';
import { waitFor, type Proc } from '../helpers/procs.js';

const MB = 1024 * 1024;

/** a valid /call whose body is about `bytes` long (a select whose where names a long string) */
const bigCall = (bytes: number) => JSON.stringify({ path: 'db/users/select', params: { where: { name: 'x'.repeat(bytes) } } });

type Answer = { status: number; headers: Record<string, string | string[] | undefined>; json: any };

/** POST /call; `chunked`: without Content-Length. `hold`: send all but the last byte and wait for `finish()`. */
function post(url: string, key: string, body: string, o: { chunked?: boolean; hold?: boolean } = {}): { done: Promise<Answer>; finish(): void; req: ClientRequest } {
  const buf = Buffer.from(body);
  const headers: Record<string, string | number> = { 'content-type': 'application/json', 'x-santokit-api-key': key };
  if (!o.chunked) headers['content-length'] = buf.length;
  let req!: ClientRequest;
  const done = new Promise<Answer>((resolve, reject) => {
    req = request(`${url}/call`, { method: 'POST', headers }, (res) => {
      let data = '';
      res.on('data', (d) => (data += d));
      res.on('end', () => {
        let json: any;
        try {
          json = JSON.parse(data);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, json });
      });
    });
    req.on('error', reject);
  });
  if (o.hold) req.write(buf.subarray(0, buf.length - 1));
  else req.end(buf);
  return { done, finish: () => req.end(buf.subarray(buf.length - 1)), req };
}

describe('security: request bodies in flight on the Bridge', () => {
  let s: Stack;
  let bridge: Proc;
  let reader: KeyInfo;
  let other: KeyInfo;
  let otherDb: Awaited<ReturnType<typeof createTestDatabase>>;

  beforeAll(async () => {
    s = await startStack({ bridges: 0 });
    otherDb = await createTestDatabase('reqbytes-other');
    const must = async (args: string[]) => {
      const r = await s.stk(args);
      if (r.code !== 0) throw new Error(`stk ${args.join(' ')} exited ${r.code}\n${r.output}`);
    };
    await must(['env', 'create', '--project', s.project, 'other']);
    await must(['connections', 'set', '--project', s.project, '--env', 'other', '--name', 'main', '--engine', 'postgres', '--db-url', withPassword(otherDb.url)]);
    await must(['apply', '--project', s.project, '--env', 'other', '--dir', 'examples/basic']);
    // 8 MB in flight per Bridge: 4 MB per project/env (reserved in 1 MB steps: a 2.5 MB body holds ~3.4 MB)
    bridge = await s.startBridge({ STK_RESPONSE_INFLIGHT_MAX_BYTES: String(8 * MB) });
    reader = await s.createKey('reqbytes-reader', ['reader']);
    other = await s.createKey('reqbytes-other', ['reader'], 'other');
    await waitFor(async () => (await post(bridge.url, reader.key, bigCall(10)).done).status === 200 && (await post(bridge.url, other.key, bigCall(10)).done).status === 200, 30_000, 'both tenants served');
  }, 180_000);

  afterAll(async () => {
    await s?.stop();
    await otherDb?.drop();
  });

  it("a tenant's bodies past its share get 503 + Retry-After before they are read; other tenants go on; the bytes come back", async () => {
    // one 2.5 MB body held open (all but its last byte sent): it holds most of the tenant's 4 MB
    const held = post(bridge.url, reader.key, bigCall(2.5 * MB), { hold: true });
    // a second 2.5 MB body of the same tenant: refused once the first is charged
    let refused: Answer | undefined;
    await waitFor(async () => {
      const r = await post(bridge.url, reader.key, bigCall(2.5 * MB)).done;
      if (r.status === 503) refused = r;
      else expect(r.status).toBe(200);
      return r.status === 503;
    }, 20_000, 'a second body of the tenant refused');
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
