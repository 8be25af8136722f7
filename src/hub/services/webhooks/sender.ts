/**
 * One webhook attempt: the target checked against the address policy (as written when the endpoint
 * is added, and every address its name resolves to when sending: a name re-pointed at a refused
 * address later — DNS rebinding — is refused then), a Standard Webhooks signature, a POST with a
 * timeout, no redirects followed, at most RESPONSE_CAP bytes of the answer read.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { lookup as dnsLookup } from 'node:dns/promises';
import http from 'node:http';
import https from 'node:https';
import { badRequest } from '../../../protocol/errors.js';
import {
  type HostPolicy,
  isHostName,
  parseIp,
  parseIPv4,
  parseIPv6,
  refusedNameReason,
  refusedOutsideReason,
  resolveChecked,
  type Lookup,
} from '../../../common/net-policy.js';

export const MAX_WEBHOOK_URL_LENGTH = 2048;
/** bytes of a receiver's answer read before the connection is dropped (nothing of it is kept) */
export const RESPONSE_CAP = 16 * 1024;
const ALLOW_HINT = "the Hub's operator can allow it with STK_WEBHOOK_ALLOW_HOSTS";
const URL_RULE = 'url must be an https:// URL of the receiver, e.g. https://hooks.example.com/santokit';

/** A new signing secret: `whsec_` + base64 of 32 random bytes (Standard Webhooks: 24 to 64). */
export const newWebhookSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

/** `v1,<base64 HMAC-SHA256(secret bytes, "<id>.<timestamp>.<body>")>` (Standard Webhooks, symmetric). */
export function signWebhook(secret: string, id: string, timestamp: number, body: string): string {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  return 'v1,' + createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64');
}

interface Target {
  host: string;
  kind: 'name' | 'ip';
  port: number;
}

const hostPort = (t: Target) => (t.host.includes(':') ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`);

function targetOf(u: URL): Target {
  const port = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
  const raw = u.hostname;
  if (raw.startsWith('[')) return { host: raw.slice(1, -1).toLowerCase(), kind: 'ip', port };
  if (parseIPv4(raw)) return { host: raw, kind: 'ip', port };
  return { host: raw.toLowerCase().replace(/\.$/, ''), kind: 'name', port };
}

/** Why the host as written may not be reached (null: fine, or allowed by the operator). */
function refusedAsWritten(t: Target, policy: HostPolicy): string | null {
  if (t.kind === 'ip') {
    const b = parseIp(t.host)!;
    const why = refusedOutsideReason(b);
    return why && !policy.allowsAddress(b, t.port) ? `it is ${why}` : null;
  }
  const why = refusedNameReason(t.host);
  return why && !policy.allowsName(t.host, t.port) ? `it is ${why}` : null;
}

/** Whether the operator listed this host (then http:// is accepted too: a test or internal receiver). */
function listed(t: Target, policy: HostPolicy): boolean {
  return t.kind === 'ip' ? policy.allowsAddress(parseIp(t.host)!, t.port) : policy.allowsName(t.host, t.port);
}

/**
 * Checks an endpoint URL when it is added: https (http only to a host the operator listed in
 * STK_WEBHOOK_ALLOW_HOSTS), no user:password part, no fragment, a DNS name or IP literal that the
 * address policy does not refuse as written. Returns the normalized URL. Messages never quote the
 * URL (it may carry a token).
 */
export function parseWebhookUrl(raw: unknown, policy: HostPolicy): string {
  if (typeof raw !== 'string' || raw.length === 0) throw badRequest(`url is required: ${URL_RULE}`);
  if (raw.length > MAX_WEBHOOK_URL_LENGTH) throw badRequest(`url is longer than ${MAX_WEBHOOK_URL_LENGTH} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\s\x00-\x1f\x7f-\x9f]/.test(raw)) throw badRequest(`url must not contain whitespace or control characters: ${URL_RULE}`);
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw badRequest(`url is not a valid URL: ${URL_RULE}`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw badRequest(`unsupported url scheme: ${URL_RULE}`);
  if (u.username || u.password) throw badRequest('url must not carry a user or password: put a token in the path or query if the receiver needs one');
  if (u.hash) throw badRequest('url must not have a #fragment');
  const h = u.hostname;
  const ok = h.startsWith('[') ? parseIPv6(h.slice(1, -1)) !== null : parseIPv4(h) !== null || isHostName(h);
  if (!ok) throw badRequest(`url host must be a DNS name or an IP address written in full: ${URL_RULE}`);
  const t = targetOf(u);
  const why = refusedAsWritten(t, policy);
  if (why) throw badRequest(`url host ${hostPort(t)} is not allowed: ${why}; ${ALLOW_HINT}`);
  if (u.protocol === 'http:' && !listed(t, policy))
    throw badRequest(`url must use https: (http:// only to a host the Hub's operator lists in STK_WEBHOOK_ALLOW_HOSTS)`);
  return u.toString();
}

export interface AttemptResult {
  /** the receiver's HTTP status (null: no answer) */
  status: number | null;
  /** why the attempt failed, short (null: 2xx) */
  error: string | null;
  /** the receiver's Retry-After, in ms */
  retryAfterMs: number | null;
}

const systemLookup: Lookup = (host) => dnsLookup(host, { all: true, verbatim: true });

function retryAfter(v: string | string[] | undefined): number | null {
  const s = Array.isArray(v) ? v[0] : v;
  if (!s) return null;
  if (/^\d{1,9}$/.test(s.trim())) return Number(s.trim()) * 1000;
  const at = Date.parse(s);
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : null;
}

/**
 * POSTs `body` to `url`. Never throws: every failure (refused address, DNS, connect, TLS, timeout,
 * non-2xx) is an AttemptResult. `signal` aborts it (the Hub is stopping).
 */
export function sendWebhook(
  url: string,
  headers: Record<string, string>,
  body: string,
  o: { policy: HostPolicy; timeoutMs: number; signal?: AbortSignal; resolve?: Lookup },
): Promise<AttemptResult> {
  return new Promise<AttemptResult>((done) => {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (r: AttemptResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      done(r);
    };
    const fail = (error: string, status: number | null = null) => finish({ status, error, retryAfterMs: null });
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return fail('the stored url does not parse');
    }
    const t = targetOf(u);
    const why = refusedAsWritten(t, o.policy);
    if (why) return fail(`${hostPort(t)} is not allowed: ${why}`);
    const resolve = o.resolve ?? systemLookup;
    const lookup = (name: string, opts: { all?: boolean }, cb: (err: Error | null, a?: unknown, f?: number) => void) => {
      resolveChecked(name, t.port, o.policy, resolve, refusedOutsideReason).then(
        ({ found, refused }) => {
          if (refused) return cb(Object.assign(new Error(`${hostPort(t)} is not allowed: it resolves to ${refused}`), { code: 'EADDRREFUSED' }));
          if (opts.all) cb(null, found);
          else cb(null, found[0]!.address, found[0]!.family);
        },
        (err: Error) => cb(err),
      );
    };
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(
      {
        method: 'POST',
        host: t.host,
        port: t.port,
        path: `${u.pathname}${u.search}`,
        headers: { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) },
        agent: false,
        // an IP literal needs no lookup (and gets none from node): it was checked above
        ...(t.kind === 'name' ? { lookup: lookup as never, servername: t.host } : {}),
      },
      (res) => {
        const status = res.statusCode ?? 0;
        const result: AttemptResult = {
          status,
          error: status >= 200 && status < 300 ? null : status >= 300 && status < 400 ? `HTTP ${status} (redirects are not followed)` : `HTTP ${status}`,
          retryAfterMs: retryAfter(res.headers['retry-after']),
        };
        let read = 0;
        res.on('data', (chunk: Buffer) => {
          read += chunk.length;
          if (read > RESPONSE_CAP) {
            res.destroy();
            finish(result);
          }
        });
        res.on('end', () => finish(result));
        res.on('error', () => finish(result));
        res.on('close', () => finish(result));
      },
    );
    timer = setTimeout(() => {
      fail(`timed out after ${o.timeoutMs} ms`);
      req.destroy();
    }, o.timeoutMs);
    const onAbort = () => {
      fail('the Hub stopped during the attempt');
      req.destroy();
    };
    o.signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err: NodeJS.ErrnoException) => {
      const m = err.code === 'EADDRREFUSED' || err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN' ? err.message : `${err.code ?? 'error'}: ${err.message}`;
      fail(m.slice(0, 300));
    });
    req.end(body);
  });
}
