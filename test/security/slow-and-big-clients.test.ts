/**
 * Input bounds that hold for every route of Hub and Bridge (they live in the shared base app):
 * a route anyone may call reads at most PUBLIC_BODY_LIMIT_BYTES, and a client that trickles its
 * request (slowloris) is answered 408 and cut off once the request timeout passes.
 */
import { DEFAULT_HTTP } from '../../src/common/http-config.js';
import { mkdtempSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import { createBaseApp, PUBLIC_BODY_LIMIT_BYTES } from '../../src/common/http.js';
import { PUBLIC } from '../../src/protocol/route-auth.js';
import { rawRequest } from '../helpers/raw-http.js';

/** Sends `first`, then one byte every `everyMs`, and resolves with what the server answered and when it closed. */
function trickle(url: string, first: string, everyMs: number): Promise<{ text: string; ms: number }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const started = Date.now();
    const sock = connect({ host: u.hostname, port: Number(u.port) });
    let text = '';
    sock.write(first);
    const t = setInterval(() => sock.writable && sock.write('a'), everyMs);
    sock.on('data', (d) => (text += d.toString()));
    sock.on('error', () => {});
    sock.on('close', () => {
      clearInterval(t);
      resolve({ text, ms: Date.now() - started });
    });
  });
}

describe('security: oversized bodies on public routes, slow clients', () => {
  let hub: FastifyInstance;
  let hubUrl: string;
  let slow: FastifyInstance;
  let slowUrl: string;

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stk-bounds-'));
    ({ app: hub } = await buildHub(
      loadHubConfig({
        STK_SECRET_KEY: 'b'.repeat(64),
        STK_SERVICE_TOKEN: 'bounds-token-xxxxxxxx',
        STK_HUB_DB_URL: `sqlite://${join(dir, 'hub.db')}`,
        STK_OWNER_EMAIL: 'bounds-owner@example.com',
        STK_OWNER_PASSWORD: 'bounds-owner-password',
      }),
      { logger: false },
    ));
    hubUrl = await hub.listen({ port: 0, host: '127.0.0.1' });
    slow = createBaseApp({ name: 'hub', logger: false, requestTimeoutMs: 800, timeoutCheckIntervalMs: 100 });
    slow.post('/echo', { config: { auth: PUBLIC } }, async (req) => ({ got: JSON.stringify(req.body).length }));
    slowUrl = await slow.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(async () => {
    await hub?.close();
    await slow?.close();
  });

  it('public routes (login, invite acceptance) refuse a body above 64 KB, with or without Content-Length', async () => {
    const big = JSON.stringify({ email: 'a@example.com', password: 'x'.repeat(PUBLIC_BODY_LIMIT_BYTES) });
    for (const path of ['/api/auth/login', '/api/invites/accept']) {
      const r = await rawRequest(hubUrl, 'POST', path, { 'content-type': 'application/json' }, big);
      expect(r.status, `${path}: ${r.body}`).toBe(413);
      expect(r.json.error.code).toBe('PAYLOAD_TOO_LARGE');
      expect(r.json.error.message).toContain(String(PUBLIC_BODY_LIMIT_BYTES));
      const chunked = await fetch(hubUrl + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: new ReadableStream({
          start(c) {
            c.enqueue(new TextEncoder().encode(big));
            c.close();
          },
        }),
        duplex: 'half',
      } as RequestInit);
      expect(chunked.status).toBe(413);
    }
    // an ordinary login body still gets through to the password check
    const ok = await rawRequest(
      hubUrl,
      'POST',
      '/api/auth/login',
      { 'content-type': 'application/json' },
      JSON.stringify({ email: 'a@example.com', password: 'wrong-password' }),
    );
    expect(ok.status).toBe(401);
  });

  it('routes that take no body (logout, connection test, revoke…) read at most 64 KB, even for a signed-in caller', async () => {
    const login = await rawRequest(
      hubUrl,
      'POST',
      '/api/auth/login',
      { 'content-type': 'application/json' },
      JSON.stringify({ email: 'bounds-owner@example.com', password: 'bounds-owner-password' }),
    );
    expect(login.status).toBe(200);
    const auth = { authorization: `Bearer ${login.json.token as string}` };
    // before: any operator (a viewer too) could park 10 MB per request here; 450 at once took the Hub to 2 GB
    const big = JSON.stringify({ pad: 'x'.repeat(PUBLIC_BODY_LIMIT_BYTES) });
    const r = await rawRequest(hubUrl, 'POST', '/api/auth/logout', { 'content-type': 'application/json', ...auth }, big);
    expect(r.status, r.body).toBe(413);
    expect(r.json.error.code).toBe('PAYLOAD_TOO_LARGE');
    expect(r.json.error.message).toContain(String(PUBLIC_BODY_LIMIT_BYTES));
    // the handler never ran: the session still works, and a small body still logs out
    expect((await rawRequest(hubUrl, 'GET', '/api/auth/whoami', auth)).status).toBe(200);
    expect((await rawRequest(hubUrl, 'POST', '/api/auth/logout', { 'content-type': 'application/json', ...auth }, '{}')).status).toBe(200);
    // routes that declare a body keep the general limit
    const login2 = await rawRequest(
      hubUrl,
      'POST',
      '/api/auth/login',
      { 'content-type': 'application/json' },
      JSON.stringify({ email: 'bounds-owner@example.com', password: 'bounds-owner-password' }),
    );
    const create = await rawRequest(
      hubUrl,
      'POST',
      '/api/projects',
      { 'content-type': 'application/json', authorization: `Bearer ${login2.json.token as string}` },
      JSON.stringify({ name: 'bounds', pad: 'x'.repeat(PUBLIC_BODY_LIMIT_BYTES) }),
    );
    expect(create.status, create.body).toBe(201);
  });

  it('one address cannot hold more than its share of connections; the server keeps a total cap; both answer 503 and recover', async () => {
    const app = createBaseApp({ name: 'bridge', logger: false, http: { ...DEFAULT_HTTP, maxConnections: 8, maxConnectionsPerAddress: 3 } });
    app.get('/ping', { config: { auth: PUBLIC } }, async () => ({ ok: true }));
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    const port = Number(new URL(url).port);
    const held: Array<ReturnType<typeof connect>> = [];
    /** a raw connection from `localAddress`: resolves with the first bytes the server sends, or '' once the socket is open and silent */
    const open = (localAddress: string) =>
      new Promise<{ sock: ReturnType<typeof connect>; first: string }>((resolve) => {
        const sock = connect({ host: '127.0.0.1', port, localAddress });
        sock.on('error', () => {});
        let done = false;
        sock.once('data', (d) => !done && ((done = true), resolve({ sock, first: d.toString() })));
        sock.once('connect', () => setTimeout(() => !done && ((done = true), resolve({ sock, first: '' })), 200));
      });
    try {
      for (let i = 0; i < 3; i++) {
        const c = await open('127.0.0.1');
        expect(c.first).toBe('');
        held.push(c.sock);
      }
      const over = await open('127.0.0.1');
      expect(over.first).toMatch(/^HTTP\/1\.1 503 [^]*Retry-After: 1[^]*too many open connections from your address/);
      // an HTTP client from that address reads the refusal as an ordinary 503 envelope
      const refused = await fetch(url + '/ping');
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('1');
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('SERVICE_UNAVAILABLE');
      // other addresses are still served while 127.0.0.1 holds its 3
      for (let i = 0; i < 3; i++) {
        const c = await open(`127.0.0.${i + 2}`);
        expect(c.first, `127.0.0.${i + 2}`).toBe('');
        held.push(c.sock);
      }
      for (let i = 0; i < 2; i++) held.push((await open('127.0.0.9')).sock);
      // 8 open in all: the total cap answers the next one, whatever its address
      const full = await open('127.0.0.20');
      expect(full.first).toMatch(/^HTTP\/1\.1 503 [^]*maximum of 8 connections/);
      // closing one of 127.0.0.1's frees its place
      held.shift()!.destroy();
      await new Promise((r) => setTimeout(r, 100));
      const again = await new Promise<string>((resolve) => {
        const sock = connect({ host: '127.0.0.1', port, localAddress: '127.0.0.1' }, () =>
          sock.write('GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
        );
        let text = '';
        sock.on('data', (d) => (text += d.toString()));
        sock.on('close', () => resolve(text));
      });
      expect(again).toMatch(/^HTTP\/1\.1 200/);
      console.log('[security] connections: 4th from one address → 503 (limit 3 per address), 9th overall → 503 (limit 8), a freed place is reusable');
    } finally {
      for (const h of held) h.destroy();
      await app.close();
    }
  });

  it('a client trickling its headers or its body is answered 408 and disconnected', async () => {
    const headers = await trickle(slowUrl, 'POST /echo HTTP/1.1\r\nHost: x\r\nX-Slow: ', 50);
    expect(headers.text).toMatch(/^HTTP\/1\.1 408/);
    expect(headers.ms).toBeLessThan(5_000);
    const body = await trickle(slowUrl, 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n{"a":"', 50);
    expect(body.text).toMatch(/^HTTP\/1\.1 408/);
    expect(body.ms).toBeLessThan(5_000);
    // a normal request on the same server is unaffected
    const r = await rawRequest(slowUrl, 'POST', '/echo', { 'content-type': 'application/json' }, '{"a":1}');
    expect(r.status).toBe(200);
    console.log(`[security] slow clients: headers trickle cut after ${headers.ms} ms, body trickle after ${body.ms} ms (timeout 800 ms)`);
  });
});
