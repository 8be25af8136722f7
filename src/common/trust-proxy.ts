import proxyAddr from '@fastify/proxy-addr';
import type { IncomingMessage } from 'node:http';
/**
 * `STK_TRUST_PROXY`: whether the client address of a request (`req.ip`) is taken from
 * `X-Forwarded-For` instead of the TCP peer. That address is what the per-address limits count
 * (invalid API keys on the Bridge, failed logins on the Hub), what "Last used" lists as a key's source
 * addresses, and what the access line logs.
 *
 * - unset, `0`, `false`: the TCP peer (right when clients connect directly; behind a proxy every
 *   client then shares the proxy's address);
 * - a comma-separated list of your proxies' addresses or CIDRs (`10.0.0.0/8,127.0.0.1`; also
 *   `loopback`, `linklocal`, `uniquelocal`): `X-Forwarded-For` is followed from the right through
 *   those hops only, so the client is the first address your own proxies did not add;
 * - `1` or `true`: every hop is trusted and the client is the left-most `X-Forwarded-For` entry,
 *   which any client can write itself: only when nothing but your proxy can reach the server.
 */
export type TrustProxy = boolean | string[];

const NAMED = new Set(['loopback', 'linklocal', 'uniquelocal']);

export function parseTrustProxy(v: string | undefined): TrustProxy {
  const s = (v ?? '').trim();
  const lower = s.toLowerCase();
  if (s === '' || s === '0' || lower === 'false') return false;
  if (s === '1' || lower === 'true') return true;
  const list = s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  for (const x of list) {
    if (!NAMED.has(x) && !/^[0-9a-fA-F.:]+(\/\d{1,3})?$/.test(x)) {
      throw new Error(`'${x.slice(0, 60)}' is not an IP address, CIDR or one of loopback, linklocal, uniquelocal (or use true)`);
    }
  }
  return list;
}

/** Whether a TCP peer is one of the proxies STK_TRUST_PROXY names (`true`: every peer is). */
export function isTrustedProxy(trust: TrustProxy): (address: string) => boolean {
  if (typeof trust === 'boolean') return () => trust;
  const compiled = proxyAddr.compile(trust);
  return (address) => compiled(address, 0);
}

const kTrusted = Symbol('trustedPeer');
type TaggedSocket = { remoteAddress?: string; [kTrusted]?: boolean };

/**
 * The client address of a raw request as Fastify's `req.ip` gives it under the same setting
 * (fastify/lib/request.js: the TCP peer without trust; else the last address @fastify/proxy-addr's
 * `all` returns), for code that answers before Fastify sees the request (the Bridge's front door).
 *
 * The common case behind one proxy is answered without proxy-addr's parsing: a trusted peer (checked
 * once per connection) and a single `X-Forwarded-For` address — proxy-addr then returns that address
 * whatever it is, since only the hops before the last are checked. Anything else goes to proxy-addr.
 */
export function clientAddress(trust: TrustProxy): (req: IncomingMessage) => string {
  if (trust === false) return (req) => req.socket.remoteAddress ?? '';
  const fn: (address: string, i: number) => boolean = trust === true ? () => true : proxyAddr.compile(trust);
  return (req) => {
    const xff = req.headers['x-forwarded-for'];
    if (typeof xff === 'string' && xff.indexOf(',') === -1) {
      // as @fastify/forwarded takes a lone address: trimmed (String.prototype.trim: tabs, no-break
      // spaces… — the same string back when there is nothing to trim), nothing left = no hop
      const a = xff.trim();
      const socket = req.socket as unknown as TaggedSocket;
      if (a === '') return socket.remoteAddress ?? '';
      let trusted = socket[kTrusted];
      if (trusted === undefined) trusted = socket[kTrusted] = socket.remoteAddress !== undefined && fn(socket.remoteAddress, 0);
      return trusted ? a : (socket.remoteAddress ?? '');
    }
    const all = proxyAddr.all(req, fn);
    return all[all.length - 1] ?? '';
  };
}
