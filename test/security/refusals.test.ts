/**
 * Issue 19: a refused request (401 invalid key, 429 rate limit) is answered from its headers — the
 * body is never waited for — on a real Bridge process, and a flood of refusals is logged as a summary
 * per interval, not a line per request, with no secret in it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { formatKey, newKeyId, newSecret } from '../../src/protocol/key-format.js';
import { startStack, type Stack } from '../helpers/fuzz-stack.js';
import type { Proc } from '../helpers/procs.js';
import { waitFor } from '../helpers/procs.js';

const CALL = JSON.stringify({ path: 'db/users/select', params: { limit: 1 } });

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A keep-alive connection that reads answers one after another (Content-Length framed). */
class Conn {
  readonly sock: Socket;
  #buf = Buffer.alloc(0);
  #waiters: Array<() => void> = [];
  closed = false;
  constructor(url: string) {
    const u = new URL(url);
    this.sock = connect({ host: u.hostname, port: Number(u.port) });
    this.sock.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      for (const w of this.#waiters.splice(0)) w();
    });
    this.sock.on('error', () => {});
    this.sock.on('close', () => {
      this.closed = true;
      for (const w of this.#waiters.splice(0)) w();
    });
  }
  write(s: string): void {
    this.sock.write(s);
  }
  async answer(timeoutMs = 5000): Promise<Answer> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const h = this.#buf.indexOf('\r\n\r\n');
      if (h >= 0) {
        const [statusLine, ...lines] = this.#buf.subarray(0, h).toString('latin1').split('\r\n');
        const headers: Record<string, string> = {};
        for (const l of lines) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
        const len = Number(headers['content-length'] ?? 0);
        if (this.#buf.length >= h + 4 + len) {
          const body = this.#buf.subarray(h + 4, h + 4 + len).toString('utf8');
          this.#buf = this.#buf.subarray(h + 4 + len);
          return { status: Number(statusLine!.split(' ')[1]), headers, body };
        }
      }
      if (this.closed) throw new Error(`connection closed without a (complete) answer: ${this.#buf.toString('latin1').slice(0, 200)}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`no answer within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
  async closedWithin(ms: number): Promise<boolean> {
    await waitFor(async () => this.closed, ms, 'the Bridge to close the connection').catch(() => undefined);
    return this.closed;
  }
}

const head = (key: string, contentLength: number, more = '') =>
  `POST /call HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\nX-Santokit-Api-Key: ${key}\r\nContent-Length: ${contentLength}\r\n${more}\r\n`;

describe('security: refusals are answered from the headers and logged in summary', () => {
  let s: Stack;
  let bridge: Proc;
  let good: string;
  let limited: string;

  beforeAll(async () => {
    s = await startStack({ bridges: 0 });
    bridge = await s.startBridge({ STK_LOG_LEVEL: 'info', STK_REFUSAL_LOG_SECONDS: '1', STK_TRUST_PROXY: '127.0.0.1' });
    good = (await s.createKey('good', ['reader'])).key;
    const r = await s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apikeys`, { name: 'limited', roles: ['reader'], rateLimitPerMin: 1 });
    expect(r.status, r.text).toBe(201);
    limited = r.json.apiKey as string;
    // both keys are on the Bridge: the limited one spends its one request of the minute here
    const call = (key: string) =>
      fetch(`${bridge.url}/call`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-santokit-api-key': key }, body: CALL });
    await waitFor(async () => (await call(good)).status === 200, 20_000, 'the good key on the Bridge');
    await waitFor(async () => (await call(limited)).status === 200, 20_000, 'the limited key on the Bridge');
    expect((await call(limited)).status).toBe(429);
  }, 120_000);
  afterAll(async () => {
    await s?.stop();
  });

  for (const kind of ['401', '429'] as const) {
    it(`${kind}: a 1,000,000-byte body that never finishes still gets its answer at once, and the connection is closed`, async () => {
      const key = kind === '401' ? formatKey(newKeyId(), newSecret()) : limited;
      const c = new Conn(bridge.url);
      c.write(head(key, 1_000_000) + '{"path":"db/');
      const t0 = Date.now();
      const a = await c.answer(5000);
      expect(a.status).toBe(Number(kind));
      const env = JSON.parse(a.body) as { error: { code: string; message: string; requestId: string } };
      expect(env.error.code).toBe(kind === '401' ? 'UNAUTHORIZED' : 'TOO_MANY_REQUESTS');
      expect(env.error.requestId).toBe(a.headers['x-request-id']);
      expect(env.error.requestId).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
      if (kind === '429') expect(Number(a.headers['retry-after'])).toBeGreaterThan(0);
      // not worth reading a megabyte it will refuse anyway: the Bridge says so and closes
      expect(a.headers.connection).toBe('close');
      expect(await c.closedWithin(5000)).toBe(true);
      expect(Date.now() - t0).toBeLessThan(5000);
    });
  }

  it('a small body after a refusal is read and dropped: the next requests on the keep-alive connection are served', async () => {
    const c = new Conn(bridge.url);
    const wrong = formatKey(newKeyId(), newSecret());
    // headers and part of the body: the 401 comes before the rest is sent
    c.write(head(wrong, CALL.length) + CALL.slice(0, 10));
    const a = await c.answer();
    expect(a.status).toBe(401);
    expect(a.headers.connection).not.toBe('close');
    // the rest of the refused body, then a good request, then a 429 and another good one, pipelined
    c.write(CALL.slice(10) + head(good, CALL.length) + CALL + head(limited, CALL.length) + CALL + head(good, CALL.length) + CALL);
    const b = await c.answer();
    expect(b.status, b.body).toBe(200);
    expect(Array.isArray(JSON.parse(b.body).data)).toBe(true);
    expect((await c.answer()).status).toBe(429);
    expect((await c.answer()).status).toBe(200);
    expect(c.closed).toBe(false);
    c.sock.destroy();
  });

  it('front door and router agree: /call spelled otherwise is checked by the route (same answers), a verdict is taken once (no double rate-limit count), 403s keep their envelope', async () => {
    const send = (path: string, key: string, extra: Record<string, string> = {}) =>
      fetch(`${bridge.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-santokit-api-key': key, ...extra }, body: CALL });
    const wrong = formatKey(newKeyId(), newSecret());
    // the front door answers exactly POST /call; these reach the router, whose route hook refuses the same way
    for (const path of ['/call', '/call?x=1', '/%63all', '/call?']) {
      const r = await send(path, wrong);
      const text = await r.text();
      expect(r.status, `${path}: ${text}`).toBe(401);
      const env = JSON.parse(text) as { error: { code: string; message: string; requestId: string } };
      expect(env.error.code).toBe('UNAUTHORIZED');
      expect(env.error.message).toBe('invalid API key');
      expect(env.error.requestId).toBe(r.headers.get('x-request-id'));
      const ok = await send(path, good);
      expect(ok.status, `${path} with a good key`).toBe(200);
    }
    // a verdict from the door is not checked again by the route: a key with a limit of 3/min is served
    // exactly 3 times, through the door and the router alike (a double check would spend 2 per call)
    const r = await s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apikeys`, { name: 'three', roles: ['reader'], rateLimitPerMin: 3 });
    expect(r.status, r.text).toBe(201);
    const three = r.json.apiKey as string;
    await waitFor(async () => (await send('/call?warm=1', formatKey(newKeyId(), newSecret()))).status === 401, 5000, 'the Bridge');
    let served = 0;
    await waitFor(
      async () => {
        const a = await send('/call', three);
        if (a.status === 200) served++;
        return a.status === 200;
      },
      20_000,
      'the new key on the Bridge',
    );
    const statuses: number[] = [];
    for (const path of ['/call?x=1', '/call', '/call', '/call?y=2']) statuses.push((await send(path, three)).status);
    expect([served, ...statuses]).toEqual([1, 200, 200, 429, 429]);
    // a 403 decided at the door (hint header against the key's env) goes through the error handler as before
    const mismatch = await send('/call', good, { 'x-santokit-env': 'not-this-env' });
    const body = (await mismatch.json()) as { error: { code: string; requestId: string } };
    expect(mismatch.status).toBe(403);
    expect(body.error.code).toBe('FORBIDDEN');
    expect(body.error.requestId).toBe(mismatch.headers.get('x-request-id'));
    // other methods on /call still get the router's 405 with Allow
    const get = await fetch(`${bridge.url}/call`, { headers: { 'x-santokit-api-key': wrong } });
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
  });

  it('a flood of 401s from many addresses: a summary line per interval, no access line per refusal, no secret', async () => {
    const before = bridge.logs().length;
    const n = 600;
    const secrets: string[] = [];
    const conns = Array.from({ length: 6 }, () => new Conn(bridge.url));
    const t0 = Date.now();
    for (let i = 0; i < n; i += conns.length) {
      await Promise.all(
        conns.map(async (c, j) => {
          const secret = newSecret();
          secrets.push(secret);
          c.write(head(formatKey(newKeyId(), secret), CALL.length, `X-Forwarded-For: 10.9.${j}.${i % 250}\r\n`) + CALL);
          expect((await c.answer()).status).toBe(401);
        }),
      );
    }
    for (const c of conns) c.sock.destroy();
    const seconds = (Date.now() - t0) / 1000;
    // the last interval's summary
    await waitFor(
      async () =>
        bridge
          .logs()
          .slice(before)
          .split('\n')
          .filter((l) => l.includes('"refused"'))
          .reduce((sum, l) => sum + (JSON.parse(l) as { refused: { '401': number } }).refused['401'], 0) >= n,
      10_000,
      'the summaries to count every refusal',
    );
    const lines = bridge.logs().slice(before).split('\n').filter(Boolean);
    const summaries = lines
      .filter((l) => l.includes('"refused"'))
      .map((l) => JSON.parse(l) as { level: number; refused: Record<string, number>; addresses: number });
    console.log(`[security] ${n} refusals in ${seconds.toFixed(1)} s → ${summaries.length} summary lines, ${lines.length} log lines in all`);
    // one per 1 s interval (STK_REFUSAL_LOG_SECONDS=1), give or take the edges
    expect(summaries.length).toBeLessThanOrEqual(Math.ceil(seconds) + 2);
    // every refusal counted (the tests before may add their few to the first interval)
    const counted = summaries.reduce((sum, j) => sum + j.refused['401']!, 0);
    expect(counted).toBeGreaterThanOrEqual(n);
    expect(counted).toBeLessThanOrEqual(n + 15);
    expect(summaries.every((j) => j.level === 40)).toBe(true);
    expect(Math.max(...summaries.map((j) => j.addresses))).toBeGreaterThan(1);
    expect(lines.filter((l) => l.includes('"statusCode":401'))).toEqual([]);
    const text = lines.join('\n');
    for (const secret of secrets) expect(text).not.toContain(secret);
  }, 60_000);
});
