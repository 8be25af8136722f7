import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { createBaseApp } from '../../src/common/http.js';
import { DEFAULT_HTTP } from '../../src/common/http-config.js';
import { Refusals, MAX_TRACKED } from '../../src/bridge/refusals.js';
import { envelope, envelopeAround, stacklessError } from '../../src/protocol/errors.js';
import { formatKey, newKeyId, newSecret } from '../../src/protocol/key-format.js';
import { ulid } from '../../src/common/ulid.js';

describe('envelopeAround', () => {
  it('is the serialized envelope cut around the request id', () => {
    for (const [code, message] of [
      ['UNAUTHORIZED', 'invalid API key'],
      ['TOO_MANY_REQUESTS', 'rate limit of 60 requests/min exceeded for this API key'],
      ['UNAUTHORIZED', 'quotes " and \\ and a\u001b[31m escape\nand a newline'],
    ] as const) {
      const id = ulid();
      const { head, tail } = envelopeAround(code, message);
      expect(head + id + tail).toBe(JSON.stringify(envelope(code, message, id)));
    }
  });

  it('stacklessError is an AppError without stack frames', () => {
    const e = stacklessError('TOO_MANY_REQUESTS', 'slow down', { headers: { 'retry-after': '3' } });
    expect(e.status).toBe(429);
    expect(e.headers).toEqual({ 'retry-after': '3' });
    expect(e.stack ?? '').not.toMatch(/\n\s+at /);
    expect(Error.stackTraceLimit).toBeGreaterThan(0); // restored
  });
});

/** A Bridge-shaped app: one route whose onRequest hook refuses through Refusals, the log captured. */
async function app(intervalMs = 60_000) {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      cb();
    },
  });
  const a = createBaseApp({ name: 'bridge', loggerStream: stream, http: { ...DEFAULT_HTTP, trustProxy: ['127.0.0.1'] } });
  const refusals = new Refusals(a.log, intervalMs);
  const err401 = stacklessError('UNAUTHORIZED', 'invalid API key');
  a.post(
    '/call',
    {
      config: { auth: { kind: 'public' } } as never,
      onRequest: (req, reply, done) => {
        if (req.headers['x-ok']) return done();
        refusals.send(req, reply, req.headers['x-limit'] ? stacklessError('TOO_MANY_REQUESTS', 'rate limit', { headers: { 'retry-after': '7' } }) : err401);
      },
    },
    async () => ({ ok: true }),
  );
  await a.ready();
  return { a, refusals, lines };
}

describe('Refusals', () => {
  it('answers with the envelope, the request id, Retry-After, and no access line', async () => {
    const { a, refusals, lines } = await app();
    const r = await a.inject({ method: 'POST', url: '/call', headers: { 'content-type': 'application/json', 'x-limit': '1' }, payload: '{}' });
    expect(r.statusCode).toBe(429);
    expect(r.headers['retry-after']).toBe('7');
    expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(r.json()).toEqual({ error: { code: 'TOO_MANY_REQUESTS', message: 'rate limit', requestId: r.headers['x-request-id'] } });
    const ok = await a.inject({ method: 'POST', url: '/call', headers: { 'x-ok': '1', 'content-type': 'application/json' }, payload: '{}' });
    expect(ok.statusCode).toBe(200);
    await new Promise((res) => setTimeout(res, 100)); // access lines are written when the response finishes
    expect(lines.filter((l) => l.includes('"statusCode":429'))).toEqual([]);
    expect(lines.filter((l) => l.includes('"statusCode":200'))).toHaveLength(1);
    refusals.flush();
    const summary = lines.map((l) => JSON.parse(l)).filter((j) => j.refused);
    expect(summary).toHaveLength(1);
    expect(summary[0].refused).toEqual({ '401': 0, '429': 1 });
    await a.close();
  });

  it('counts a flood of distinct key ids and addresses in bounded memory, logs one summary, and no secret', async () => {
    const { a, refusals, lines } = await app();
    const n = MAX_TRACKED + 2_500;
    const secrets: string[] = [];
    for (let i = 0; i < n; i++) {
      const secret = newSecret();
      if (i % 1000 === 0) secrets.push(secret);
      const key = formatKey(newKeyId(), secret);
      await a.inject({
        method: 'POST',
        url: '/call',
        remoteAddress: '127.0.0.1',
        headers: { 'x-santokit-api-key': key, 'x-forwarded-for': `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}` },
      });
    }
    expect(refusals.tracked).toEqual({ keys: MAX_TRACKED, addresses: MAX_TRACKED });
    refusals.flush();
    expect(refusals.tracked).toEqual({ keys: 0, addresses: 0 });
    const summary = lines.map((l) => JSON.parse(l)).filter((j) => j.refused);
    expect(summary).toHaveLength(1);
    const s = summary[0];
    expect(s.level).toBe(40);
    expect(s.refused).toEqual({ '401': n, '429': 0 });
    expect(s.untracked).toEqual({ keys: 2_500, addresses: 2_500 });
    expect(s.topKeys.length).toBeLessThanOrEqual(5);
    expect(s.topAddresses.length).toBeLessThanOrEqual(5);
    const all = lines.join('\n');
    for (const secret of secrets) expect(all).not.toContain(secret);
    expect(lines.filter((l) => l.includes('request completed'))).toEqual([]);
    // nothing counted since: no line at the next flush
    refusals.flush();
    expect(lines.map((l) => JSON.parse(l)).filter((j) => j.refused)).toHaveLength(1);
    await a.close();
  }, 60_000);

  it('logs a summary per interval on its own, only while there are refusals', async () => {
    const { a, lines } = await app(100);
    for (let i = 0; i < 50; i++) await a.inject({ method: 'POST', url: '/call' });
    await new Promise((res) => setTimeout(res, 400));
    const summaries = lines.filter((l) => l.includes('"refused"'));
    expect(summaries).toHaveLength(1);
    expect(JSON.parse(summaries[0]!).refused['401']).toBe(50);
    await a.close();
  });
});
