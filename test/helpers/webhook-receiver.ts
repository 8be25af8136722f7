/**
 * A local webhook receiver for the tests, and a Standard Webhooks verifier written from the spec
 * (https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md),
 * independent of the Hub's signing code: the secret is `whsec_` + base64, the signed content is
 * `<webhook-id>.<webhook-timestamp>.<raw body>`, `webhook-signature` is a space-separated list of
 * `v1,<base64 HMAC-SHA256>` entries, compared in constant time; the timestamp must be recent.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export function verifyStandardWebhook(secret: string, headers: Record<string, string | undefined>, rawBody: string, toleranceSeconds = 300): boolean {
  const id = headers['webhook-id'];
  const ts = headers['webhook-timestamp'];
  const sigs = headers['webhook-signature'];
  if (!id || !ts || !sigs || !secret.startsWith('whsec_')) return false;
  if (!/^\d+$/.test(ts) || Math.abs(Date.now() / 1000 - Number(ts)) > toleranceSeconds) return false;
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  const expected = createHmac('sha256', key).update(`${id}.${ts}.${rawBody}`).digest();
  return sigs.split(' ').some((entry) => {
    const [version, b64] = entry.split(',');
    if (version !== 'v1' || !b64) return false;
    const got = Buffer.from(b64, 'base64');
    return got.length === expected.length && timingSafeEqual(got, expected);
  });
}

export interface Received {
  /** the receiver path, e.g. /a */
  path: string;
  headers: Record<string, string | undefined>;
  body: string;
  json: { type: string; timestamp: string; data: Record<string, any> };
  at: number;
}

/** What to do with a request: answer `status` (after `delayMs`), or never answer (`hang`). */
export type Behaviour = { status: number; delayMs?: number; hang?: boolean; headers?: Record<string, string> };

export interface Receiver {
  url: string;
  port: number;
  received: Received[];
  /** requests to a path, in arrival order */
  at(path: string): Received[];
  /** the answers for a path: each request takes the next one; the last one repeats */
  script(path: string, answers: Behaviour[]): void;
  /** called on each request as it arrives */
  onRequest?: (r: Received) => void;
  close(): Promise<void>;
}

export async function startReceiver(): Promise<Receiver> {
  const scripts = new Map<string, Behaviour[]>();
  const hanging = new Set<ServerResponse>();
  const received: Received[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const headers: Record<string, string | undefined> = {};
      for (const [k, v] of Object.entries(req.headers)) headers[k] = Array.isArray(v) ? v.join(',') : v;
      let json: Received['json'];
      try {
        json = JSON.parse(body) as Received['json'];
      } catch {
        json = { type: '(not json)', timestamp: '', data: {} };
      }
      const path = (req.url ?? '/').split('?')[0]!;
      const r: Received = { path, headers, body, json, at: Date.now() };
      received.push(r);
      recv.onRequest?.(r);
      const list = scripts.get(path) ?? [{ status: 200 }];
      const b = list.length > 1 ? list.shift()! : list[0]!;
      if (b.hang) {
        hanging.add(res);
        res.on('close', () => hanging.delete(res));
        return;
      }
      setTimeout(() => {
        res.writeHead(b.status, { 'content-type': 'text/plain', ...b.headers });
        res.end('ok');
      }, b.delayMs ?? 0);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const recv: Receiver = {
    url: `http://127.0.0.1:${port}`,
    port,
    received,
    at: (path) => received.filter((r) => r.path === path),
    script: (path, answers) => void scripts.set(path, [...answers]),
    close: async () => {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  return recv;
}
