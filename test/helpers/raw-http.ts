/**
 * One HTTP/1.1 request over a fresh TCP connection, with the request target sent exactly as given
 * (no normalisation by a client library: `/%69nternal/…`, `//x`, `/./`, absolute-form `http://h/x`).
 * Reads the status line and headers, then the body up to Content-Length or `maxBody` bytes (a
 * streaming response is cut there), and closes.
 */
import { request, type ClientRequest, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  json: any;
}

export function rawRequest(
  base: string,
  method: string,
  target: string,
  headers: Record<string, string> = {},
  body?: string,
  opts: { maxBody?: number; timeoutMs?: number } = {},
): Promise<RawResponse> {
  const u = new URL(base);
  const maxBody = opts.maxBody ?? 1 << 20;
  return new Promise((resolve, reject) => {
    const sock = connect({ host: u.hostname, port: Number(u.port) });
    const lines = [`${method} ${target} HTTP/1.1`, `Host: ${u.host}`, 'Connection: close'];
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    if (body !== undefined) lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
    sock.write(lines.join('\r\n') + '\r\n\r\n' + (body ?? ''));
    let buf = Buffer.alloc(0);
    let head: { status: number; headers: Record<string, string>; bodyStart: number } | null = null;
    const timer = setTimeout(
      () => finish(new Error(`no complete response to ${method} ${target} within ${opts.timeoutMs ?? 10_000} ms`)),
      opts.timeoutMs ?? 10_000,
    );
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err && !head) return reject(err);
      const text = head ? buf.subarray(head.bodyStart, head.bodyStart + maxBody).toString('utf8') : '';
      let json: any;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      resolve({ status: head!.status, headers: head!.headers, body: text, json });
    };
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!head) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const [statusLine, ...hs] = buf.subarray(0, end).toString('latin1').split('\r\n');
        const headersOut: Record<string, string> = {};
        for (const h of hs) {
          const i = h.indexOf(':');
          if (i > 0) headersOut[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
        }
        head = { status: Number(statusLine!.split(' ')[1]), headers: headersOut, bodyStart: end + 4 };
      }
      // a stream (the Hub's sync stream) is answered: its headers are the answer
      if ((head.headers['content-type'] ?? '').includes('ndjson')) return finish();
      const len = Number(head.headers['content-length'] ?? NaN);
      const got = buf.length - head.bodyStart;
      if ((Number.isFinite(len) && got >= len) || got >= maxBody) finish();
    });
    sock.on('end', () => finish());
    sock.on('error', (e) => finish(e));
  });
}

export interface BodyAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  /** the body parsed as JSON (undefined when it is not) */
  json: any;
  /** from the call to the end of the answer */
  ms: number;
}

/**
 * POST a (large) body over a connection of its own (node:http, no keep-alive) and read the whole
 * answer, for the tests that flood Hub and Bridge with bodies. `chunked`: no Content-Length, the body
 * in 64 KB writes. `hold`: all but the last byte is sent until `finish()`. `from`: the local address
 * to send from. `done` rejects when the connection fails before an answer.
 */
export function postBody(
  url: string,
  headers: Record<string, string>,
  body: string | Buffer,
  o: { chunked?: boolean; hold?: boolean; from?: string } = {},
): { done: Promise<BodyAnswer>; finish(): void } {
  const t0 = performance.now();
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const h: Record<string, string | number> = { ...headers };
  if (!o.chunked) h['content-length'] = buf.length;
  let req!: ClientRequest;
  const done = new Promise<BodyAnswer>((resolve, reject) => {
    req = request(url, { method: 'POST', headers: h, localAddress: o.from, agent: false }, (res) => {
      let data = '';
      res.on('data', (d) => (data += d));
      res.on('end', () => {
        let json: any;
        try {
          json = JSON.parse(data);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, json, ms: performance.now() - t0 });
      });
    });
    req.on('error', reject);
  });
  if (o.hold) req.write(buf.subarray(0, buf.length - 1));
  else if (o.chunked) {
    // several writes: the server sees chunks, not one complete body
    for (let i = 0; i < buf.length; i += 64 * 1024) req.write(buf.subarray(i, Math.min(buf.length, i + 64 * 1024)));
    req.end();
  } else req.end(buf);
  return { done, finish: () => req.end(buf.subarray(buf.length - 1)) };
}
