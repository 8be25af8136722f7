/**
 * Fuzz `POST /call` on a real Bridge process serving a real release (examples/basic applied with
 * `stk apply`) with real API keys: seeded, reproducible requests mixing malformed JSON, wrong types in
 * every params position, huge numbers, deep nesting, unicode, long strings, bad paths, duplicate and
 * odd headers and wrong keys. Holds when: no response ≥ 500, every error is the envelope with a
 * requestId, no dropped connection, and the Bridge is still alive and serving afterwards.
 *
 * STK_FUZZ_SEED picks another seed; STK_SOAK=1 (npm run soak) sends 10× more.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checksumOf, formatKey } from '../../src/protocol/key-format.js';
import { callRecipes, type CallRecipe } from '../helpers/fuzz-gen.js';
import { HttpClient, Tally, startStack, type KeyInfo, type Resp, type Stack } from '../helpers/fuzz-stack.js';

const SOAK = process.env.STK_SOAK === '1';
const SEED = Number(process.env.STK_FUZZ_SEED ?? 20240601);
const N = SOAK ? 100_000 : 10_000;

/** The same key with one secret character changed and the checksum fixed: passes the format check, fails the HMAC. */
function wrongSecret(key: string): string {
  const body = key.slice(0, -6);
  const last = body.at(-1) === 'a' ? 'b' : 'a';
  const changed = body.slice(0, -1) + last;
  return changed + checksumOf(changed);
}

describe('fuzz POST /call', () => {
  let s: Stack;
  let admin: KeyInfo;
  let reader: KeyInfo;
  let client: HttpClient;

  beforeAll(async () => {
    // the flood limit and per-key rate limit would turn most of the fuzz into 429s: the abuse test covers those
    s = await startStack({ bridges: 0 });
    admin = await s.createKey('fuzz-admin', ['admin']);
    reader = await s.createKey('fuzz-reader', ['reader']);
    await s.startBridge({ STK_INVALID_KEY_LIMIT_PER_MIN: '0', STK_RATE_LIMIT_PER_API_KEY: '100000000' });
    client = new HttpClient(s.bridges[0]!.url, 16);
  }, 120_000);
  afterAll(async () => {
    client?.close();
    await s?.stop();
  });

  function headersFor(r: CallRecipe, i: number): Record<string, string | string[]> {
    const h: Record<string, string | string[]> = {};
    if (r.contentType !== null) h['content-type'] = r.contentType;
    const unknownKey = formatKey(
      'ZZZZZZZZ' +
        String(i % 10000)
          .padStart(4, '0')
          .replace(/[^0-9]/g, '0'),
      'a'.repeat(22),
      'dev',
    );
    switch (r.key) {
      case 'admin':
        h['x-santokit-api-key'] = admin.key;
        break;
      case 'reader':
        h['x-santokit-api-key'] = reader.key;
        break;
      case 'none':
        break;
      case 'empty':
        h['x-santokit-api-key'] = '';
        break;
      case 'garbage':
        h['x-santokit-api-key'] = `garbage-${i}`;
        break;
      case 'checksum':
        h['x-santokit-api-key'] = admin.key.slice(0, -1) + (admin.key.endsWith('A') ? 'B' : 'A');
        break;
      case 'unknown':
        h['x-santokit-api-key'] = unknownKey;
        break;
      case 'secret':
        h['x-santokit-api-key'] = wrongSecret(admin.key);
        break;
      case 'long':
        h['x-santokit-api-key'] = 'stk_' + 'a'.repeat(8000);
        break;
      case 'dup':
        h['x-santokit-api-key'] = [`garbage-${i}`, admin.key];
        break;
      case 'dup-real':
        h['x-santokit-api-key'] = [admin.key, reader.key];
        break;
      case 'bearer':
        h.authorization = `Bearer stks_${'x'.repeat(40)}`;
        break;
    }
    switch (r.hints) {
      case 'right':
        h['x-santokit-project'] = s.project;
        h['x-santokit-env'] = s.env;
        break;
      case 'wrong':
        h['x-santokit-project'] = 'other';
        h['x-santokit-env'] = 'prod';
        break;
      case 'dup':
        h['x-santokit-project'] = [s.project, s.project];
        h['x-santokit-env'] = [s.env, 'prod'];
        break;
      case 'latin1':
        h['x-santokit-project'] = 'sh\u00f6p';
        break;
      case 'none':
        break;
    }
    for (const [k, v] of r.extraHeaders) {
      const prev = h[k];
      h[k] = prev === undefined ? v : ([] as string[]).concat(prev, v);
    }
    return h;
  }

  it(
    `${N} seeded requests: 0 × 5xx, every error an envelope with a requestId, the Bridge still serving`,
    async () => {
      const tally = new Tally();
      let ok2xx = 0;
      let badSuccess = 0;
      const t0 = Date.now();
      // batches of 10,000 (seed, seed + 1, …) keep a soak run's memory flat
      for (let batch = 0; batch * 10_000 < N; batch++) {
        const recipes = callRecipes(SEED + batch, Math.min(10_000, N - batch * 10_000));
        await client.run(recipes, async (r, j) => {
          const i = batch * 10_000 + j;
          const body = r.body.kind === 'json' ? r.body.text : r.body.kind === 'bytes' ? r.body.data : undefined;
          const what = `#${i} ${r.method} ${r.url.slice(0, 60)} key=${r.key} ct=${JSON.stringify(r.contentType)} hints=${r.hints} extra=${JSON.stringify(r.extraHeaders)} body=${r.body.kind === 'json' ? r.body.text.slice(0, 200) : r.body.kind}`;
          let res: Resp;
          try {
            res = await client.send(r.method, r.url, headersFor(r, i), body);
          } catch (e) {
            tally.fail(e, what);
            return;
          }
          // a HEAD answer has no body by definition: the request id header is all it can carry
          if (r.method === 'HEAD')
            res = { ...res, json: res.status >= 400 ? { error: { code: 'HEAD', message: 'HEAD', requestId: res.headers['x-request-id'] } } : res.json };
          tally.add(res, what);
          if (res.status >= 200 && res.status < 300) {
            ok2xx++;
            if (r.method !== 'HEAD' && (typeof res.json !== 'object' || res.json === null || !('data' in res.json))) {
              badSuccess++;
              tally.problems.push(`2xx without {data} ← ${what}`);
            }
          }
        });
      }
      const secs = ((Date.now() - t0) / 1000).toFixed(1);
      console.log(
        `fuzz /call: ${tally.requests} requests (seed ${SEED}, ${secs}s), ${tally.fiveXX} × 5xx, ${tally.missingRequestId} missing requestId, ${tally.badEnvelope} bad envelopes, ${tally.transportErrors} dropped connections, ${ok2xx} × 2xx; statuses ${tally.statuses()}`,
      );
      if (tally.problems.length) console.log('fuzz /call problems:\n  ' + tally.problems.join('\n  '));

      // the Bridge process survived and still answers correctly
      const bridge = s.bridges[0]!;
      expect(bridge.child.exitCode, 'bridge exited').toBeNull();
      expect(bridge.child.signalCode, 'bridge killed').toBeNull();
      const health = await fetch(bridge.url + '/healthz');
      const ready = await fetch(`${bridge.url}/readyz?project=${s.project}&env=${s.env}`, { headers: { 'x-santokit-service-token': s.hub.serviceToken } });
      const after = await client.send(
        'POST',
        '/call',
        { 'content-type': 'application/json', 'x-santokit-api-key': admin.key },
        { path: 'db/users/select', params: { limit: 1 } },
      );
      console.log(`fuzz /call: after the run /healthz ${health.status}, /readyz ${ready.status}, select ${after.status}`);

      expect(tally.requests).toBe(N);
      expect(tally.problems, tally.problems.join('\n')).toEqual([]);
      expect(tally.fiveXX).toBe(0);
      expect(tally.missingRequestId).toBe(0);
      expect(tally.transportErrors).toBe(0);
      expect(badSuccess).toBe(0);
      // the fuzz reached the database, not only the front door
      expect(ok2xx).toBeGreaterThan(N / 50);
      expect(health.status).toBe(200);
      expect(ready.status).toBe(200);
      expect(after.status).toBe(200);
    },
    SOAK ? 1_800_000 : 300_000,
  );

  /** Requests node's own HTTP client refuses to send, written byte by byte on a fresh socket. */
  it('malformed HTTP on the wire gets a 4xx envelope (or a closed socket), never a 5xx', async () => {
    const url = new URL(s.bridges[0]!.url);
    const host = `${url.hostname}:${url.port}`;
    const body = '{"path":"db/users/select"}';
    const cases: Array<[string, string]> = [
      ['bad header line', `POST /call HTTP/1.1\r\nHost: ${host}\r\nthis is not a header\r\n\r\n`],
      ['header name with a space', `POST /call HTTP/1.1\r\nHost: ${host}\r\nX Bad: 1\r\n\r\n`],
      [
        'content-length and transfer-encoding',
        `POST /call HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`,
      ],
      [
        'two different content-lengths',
        `POST /call HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n${body}`,
      ],
      ['negative content-length', `POST /call HTTP/1.1\r\nHost: ${host}\r\nContent-Length: -1\r\n\r\n`],
      ['non-numeric content-length', `POST /call HTTP/1.1\r\nHost: ${host}\r\nContent-Length: abc\r\n\r\n`],
      [
        'bad chunk size',
        `POST /call HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n${body}\r\n0\r\n\r\n`,
      ],
      ['unknown transfer-encoding', `POST /call HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: gzip\r\n\r\n`],
      ['invalid method', `P@ST /call HTTP/1.1\r\nHost: ${host}\r\n\r\n`],
      ['HTTP/9.9', `POST /call HTTP/9.9\r\nHost: ${host}\r\n\r\n`],
      ['no version', `POST /call\r\n\r\n`],
      ['NUL in the URL', `POST /ca\u0000ll HTTP/1.1\r\nHost: ${host}\r\n\r\n`],
      ['control character in a header value', `POST /call HTTP/1.1\r\nHost: ${host}\r\nX-Santokit-Api-Key: a\u0001b\r\n\r\n`],
      ['bare LF line endings', `POST /call HTTP/1.1\nHost: ${host}\nContent-Length: 0\n\n`],
      ['obsolete line folding', `POST /call HTTP/1.1\r\nHost: ${host}\r\nX-Santokit-Api-Key: a\r\n b\r\n\r\n`],
      ['headers larger than 16 KB', `POST /call HTTP/1.1\r\nHost: ${host}\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`],
      ['20,000 tiny headers', `POST /call HTTP/1.1\r\nHost: ${host}\r\n${'a: b\r\n'.repeat(20_000)}\r\n`],
      ['URL of 100 KB', `GET /${'a'.repeat(100_000)} HTTP/1.1\r\nHost: ${host}\r\n\r\n`],
      ['Expect: something', `POST /call HTTP/1.1\r\nHost: ${host}\r\nExpect: teapot\r\nContent-Length: 0\r\n\r\n`],
      ['garbage bytes', '\u0016\u0003\u0001\u0002\u0000\u0001\u0000\u0001\u00fc\u0003\u0003 TLS hello?\r\n\r\n'],
    ];
    let envelopes = 0;
    let closed = 0;
    const problems: string[] = [];
    for (const [name, text] of cases) {
      const reply = await rawExchange(url.hostname, Number(url.port), Buffer.from(text, 'latin1'));
      if (!reply) {
        closed++;
        continue;
      }
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(reply);
      const status = m ? Number(m[1]) : 0;
      const bodyText = reply.slice(reply.indexOf('\r\n\r\n') + 4);
      let json: any;
      try {
        json = JSON.parse(bodyText);
      } catch {
        json = undefined;
      }
      const e = json?.error;
      if (status >= 500 || status < 400) problems.push(`${name}: status ${status}`);
      else if (!e || typeof e.code !== 'string' || typeof e.message !== 'string' || typeof e.requestId !== 'string')
        problems.push(`${name}: ${status} without the envelope: ${bodyText.slice(0, 120)}`);
      else envelopes++;
    }
    console.log(
      `fuzz /call wire: ${cases.length} malformed requests, ${envelopes} × 4xx envelope, ${closed} × closed without a reply, ${problems.length} problems`,
    );
    expect(problems, problems.join('\n')).toEqual([]);
    expect((await fetch(s.bridges[0]!.url + '/healthz')).status).toBe(200);
  }, 60_000);
});

/** Writes bytes on a fresh socket and returns what came back before the server closed or 3 s passed. */
function rawExchange(host: string, port: number, data: Buffer): Promise<string | null> {
  return new Promise((resolve) => {
    const sock = connect(port, host);
    const chunks: Buffer[] = [];
    const done = () => {
      sock.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      resolve(text.length ? text : null);
    };
    const timer = setTimeout(done, 3000);
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      // one complete response is enough
      const text = Buffer.concat(chunks).toString('latin1');
      const i = text.indexOf('\r\n\r\n');
      const len = /content-length: (\d+)/i.exec(text)?.[1];
      if (i >= 0 && len !== undefined && text.length >= i + 4 + Number(len)) {
        clearTimeout(timer);
        done();
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      done();
    });
    sock.write(data);
  });
}
