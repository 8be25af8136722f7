/**
 * santokit/client (src/client/index.ts) where the Bridge is not the one answering: a proxy's HTML
 * error page, a server that is not Santokit, nothing listening, bad options. The Bridge's own answers
 * are covered against a live Bridge in test/integration/typed-client.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createClient, SantokitError } from '../../src/client/index.js';

const KEY = 'stk_abcdefgh_secretsecretsecretsecret_000000';
let server: Server;
let url = '';
const seen: Array<{ method?: string; url?: string; headers: IncomingMessage['headers']; body: string }> = [];
let answer: { status: number; type: string; body: string; headers?: Record<string, string> } = { status: 200, type: 'application/json', body: '{"data":[]}' };

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d));
    req.on('end', () => {
      seen.push({ method: req.method, url: req.url, headers: req.headers, body });
      res.writeHead(answer.status, { 'content-type': answer.type, ...answer.headers });
      res.end(answer.body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

async function caught(p: Promise<unknown>): Promise<SantokitError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(SantokitError);
    return e as SantokitError;
  }
  throw new Error('expected a SantokitError');
}

describe('santokit/client on the wire', () => {
  it('POSTs {path, params} to <url>/call with the key header, and answers data', async () => {
    answer = { status: 200, type: 'application/json', body: '{"data":[{"id":"1"}]}' };
    seen.length = 0;
    const stk = createClient({ url: url + '/bridge/', apiKey: KEY, headers: { 'x-santokit-project': 'shop' } });
    const rows = await stk.db('users').select({ where: { created_at: { $lt: new Date('2020-01-02T03:04:05Z') } }, limit: 5 });
    expect(rows).toEqual([{ id: '1' }]);
    expect(seen[0]).toMatchObject({ method: 'POST', url: '/bridge/call' });
    expect(seen[0]!.headers['x-santokit-api-key']).toBe(KEY);
    expect(seen[0]!.headers['x-santokit-project']).toBe('shop');
    expect(seen[0]!.headers['content-type']).toBe('application/json');
    expect(JSON.parse(seen[0]!.body)).toEqual({ path: 'db/users/select', params: { where: { created_at: { $lt: '2020-01-02T03:04:05.000Z' } }, limit: 5 } });
    await stk.db('users').insert([{ email: 'a' }]);
    await stk.db('users').update({ where: { id: '1' }, data: { name: null } });
    await stk.db('users').delete({ where: { id: '1' } });
    expect(seen.slice(1).map((s) => JSON.parse(s.body))).toEqual([
      { path: 'db/users/insert', params: { data: [{ email: 'a' }] } },
      { path: 'db/users/update', params: { where: { id: '1' }, data: { name: null } } },
      { path: 'db/users/delete', params: { where: { id: '1' } } },
    ]);
  });

  it('the error envelope becomes SantokitError {code, status, requestId, details}', async () => {
    answer = {
      status: 400,
      type: 'application/json',
      body: JSON.stringify({ error: { code: 'RESPONSE_TOO_LARGE', message: 'too large', requestId: 'req-1', details: { applied: true, affected: 3 } } }),
      headers: { 'x-request-id': 'req-1' },
    };
    const e = await caught(createClient({ url, apiKey: KEY }).db('users').select());
    expect(e).toMatchObject({
      name: 'SantokitError',
      code: 'RESPONSE_TOO_LARGE',
      status: 400,
      requestId: 'req-1',
      message: 'too large',
      details: { applied: true, affected: 3 },
    });
  });

  it("a proxy's HTML error page: the status's catalogue code, the request id from the header if any", async () => {
    answer = { status: 502, type: 'text/html', body: '<html><body>Bad Gateway</body></html>', headers: { 'x-request-id': 'edge-7' } };
    const e = await caught(createClient({ url, apiKey: KEY }).db('users').select());
    expect(e).toMatchObject({ code: 'INTERNAL_ERROR', status: 502, requestId: 'edge-7' });
    expect(e.message).toBe('the Bridge answered 502 Bad Gateway');
    answer = { status: 503, type: 'text/plain', body: 'down' };
    expect(await caught(createClient({ url, apiKey: KEY }).db('users').select())).toMatchObject({ code: 'SERVICE_UNAVAILABLE', status: 503, requestId: null });
  });

  it('a 200 that is not {"data": …} is INVALID_RESPONSE, not a silent undefined', async () => {
    answer = { status: 200, type: 'text/html', body: '<html>login portal</html>' };
    const e = await caught(createClient({ url, apiKey: KEY }).db('users').select());
    expect(e).toMatchObject({ code: 'INVALID_RESPONSE', status: 200 });
    answer = { status: 200, type: 'application/json', body: '{"rows":[]}' };
    expect(await caught(createClient({ url, apiKey: KEY }).db('users').select())).toMatchObject({ code: 'INVALID_RESPONSE' });
  });

  it('nothing listening: NETWORK_ERROR with status 0, no request id, the key nowhere in the message', async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const e = await caught(
      createClient({ url: `http://127.0.0.1:${port}`, apiKey: KEY })
        .db('users')
        .select(),
    );
    expect(e).toMatchObject({ code: 'NETWORK_ERROR', status: 0, requestId: null });
    expect(e.message).toBe(`cannot reach the Bridge at http://127.0.0.1:${port} (ECONNREFUSED)`);
    expect(JSON.stringify({ ...e, message: e.message, stack: e.stack })).not.toContain('secret');
  });

  it('bad options fail at createClient, before any request', () => {
    expect(() => createClient({ url: 'localhost:3000', apiKey: KEY })).toThrow(/url must be http or https/);
    expect(() => createClient({ url: 'not a url', apiKey: KEY })).toThrow(/absolute http\(s\) URL/);
    expect(() => createClient({ url: 'http://user:pw@localhost:3000', apiKey: KEY })).toThrow(/must not hold credentials/);
    expect(() => createClient({ url, apiKey: '' })).toThrow(/apiKey is required/);
    expect(() => createClient(undefined as never)).toThrow(/pass \{ url, apiKey \}/);
    expect(() => createClient({ url, apiKey: KEY }).db('' as string)).toThrow(/non-empty string/);
  });
});
