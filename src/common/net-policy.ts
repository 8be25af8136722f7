/**
 * Which network addresses a tenant's database connection may reach.
 *
 * A connection URL comes from a project admin, but the Hub (connection test, apply) and the Bridge
 * connect to it from their own machine. So, unless the operator allows them explicitly
 * (`STK_CONNECTION_ALLOW_HOSTS`), a connection may not reach this machine itself (loopback,
 * unspecified), link-local addresses or cloud metadata services, nor multicast/reserved space — in any
 * spelling: IPv4-mapped/compatible IPv6, NAT64, 6to4 and Teredo forms are checked by the IPv4 address
 * they carry. Private networks (10/8, 172.16/12, 192.168/16, fc00::/7) stay allowed: that is where
 * databases live.
 */
import { isIPv4, isIPv6 } from 'node:net';

export type IpBytes = Uint8Array; // 4 or 16 bytes

/** Strict dotted-quad IPv4 (no leading zeros, no shortened, octal, hex or integer forms) → bytes. */
export function parseIPv4(s: string): IpBytes | null {
  if (!isIPv4(s)) return null;
  const parts = s.split('.');
  if (parts.length !== 4 || parts.some((p) => p.length > 1 && p.startsWith('0'))) return null;
  return Uint8Array.from(parts.map(Number));
}

/** IPv6 text (no zone id) → 16 bytes. */
export function parseIPv6(s: string): IpBytes | null {
  if (s.includes('%') || !isIPv6(s)) return null;
  let text = s.toLowerCase();
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    // "…:a.b.c.d" → "…:abcd:efgh"
    const v4 = parseIPv4(text.slice(lastColon + 1));
    if (!v4) return null;
    text = `${text.slice(0, lastColon + 1)}${((v4[0]! << 8) | v4[1]!).toString(16)}:${((v4[2]! << 8) | v4[3]!).toString(16)}`;
  }
  const [head, rest] = text.includes('::') ? text.split('::') : [text, undefined];
  const groups = (g: string | undefined) =>
    g
      ? g
          .split(':')
          .filter((x) => x !== '')
          .map((x) => parseInt(x, 16))
      : [];
  const a = groups(head);
  const b = groups(rest);
  const fill = rest === undefined ? 0 : 8 - a.length - b.length;
  const all = [...a, ...new Array<number>(Math.max(0, fill)).fill(0), ...b];
  if (all.length !== 8 || all.some((x) => !(x >= 0 && x <= 0xffff))) return null;
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  return out;
}

export function parseIp(s: string): IpBytes | null {
  return parseIPv4(s) ?? parseIPv6(s);
}

export function formatIp(b: IpBytes): string {
  if (b.length === 4) return b.join('.');
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((b[i]! << 8) | b[i + 1]!);
  // RFC 5952: the longest run (≥ 2) of zero groups becomes "::"
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  return best < 0 ? hex(g) : `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

interface Cidr {
  bytes: IpBytes;
  bits: number;
}

function cidr(text: string): Cidr {
  const [ip, bits] = text.split('/');
  const bytes = parseIp(ip!);
  if (!bytes) throw new Error(`bad built-in CIDR ${text}`);
  return { bytes, bits: bits === undefined ? bytes.length * 8 : Number(bits) };
}

export function inCidr(addr: IpBytes, c: Cidr): boolean {
  if (addr.length !== c.bytes.length) return false;
  let bits = c.bits;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((addr[i]! & mask) !== (c.bytes[i]! & mask)) return false;
  }
  return true;
}

const REFUSED_V4: Array<[Cidr, string]> = [
  [cidr('0.0.0.0/8'), 'an unspecified ("this host") address'],
  [cidr('127.0.0.0/8'), 'a loopback address'],
  [cidr('169.254.0.0/16'), 'a link-local address (cloud metadata services live here)'],
  [cidr('100.100.100.200/32'), 'a cloud metadata address'],
  [cidr('192.0.0.192/32'), 'a cloud metadata address'],
  [cidr('224.0.0.0/4'), 'a multicast address'],
  [cidr('240.0.0.0/4'), 'a reserved or broadcast address'],
];
const REFUSED_V6: Array<[Cidr, string]> = [
  [cidr('::/128'), 'an unspecified address'],
  [cidr('::1/128'), 'a loopback address'],
  [cidr('fe80::/10'), 'a link-local address'],
  [cidr('fec0::/10'), 'a site-local address'],
  [cidr('fd00:ec2::254/128'), 'a cloud metadata address'],
  [cidr('ff00::/8'), 'a multicast address'],
];

/** IPv6 forms that carry an IPv4 address the packet may end up at: checked by that address too. */
function embeddedIPv4(b: IpBytes): IpBytes | null {
  if (b.length !== 16) return null;
  const last32 = () => b.slice(12, 16);
  const zeros = (from: number, to: number) => b.slice(from, to).every((x) => x === 0);
  if (zeros(0, 10) && b[10] === 0xff && b[11] === 0xff) return last32(); // ::ffff:a.b.c.d (mapped)
  if (zeros(0, 12)) return last32(); // ::a.b.c.d (compatible, deprecated)
  if (zeros(0, 8) && b[8] === 0xff && b[9] === 0xff && zeros(10, 12)) return last32(); // ::ffff:0:a.b.c.d (SIIT)
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(4, 12)) return last32(); // 64:ff9b::/96 NAT64
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && b[4] === 0 && b[5] === 1) return last32(); // 64:ff9b:1::/48
  if (b[0] === 0x20 && b[1] === 0x02) return b.slice(2, 6); // 2002::/16 6to4
  if (b[0] === 0x20 && b[1] === 0x01 && b[2] === 0 && b[3] === 0) return last32().map((x) => x ^ 0xff); // Teredo client
  return null;
}

/** Why an address is refused by default, or null when it is fine. */
export function refusedReason(addr: IpBytes): string | null {
  if (addr.length === 4) {
    for (const [c, why] of REFUSED_V4) if (inCidr(addr, c)) return why;
    return null;
  }
  for (const [c, why] of REFUSED_V6) if (inCidr(addr, c)) return why;
  const v4 = embeddedIPv4(addr);
  if (v4) {
    const why = refusedReason(v4);
    if (why) return `${why} (as ${formatIp(v4)} inside an IPv6 address)`;
  }
  return null;
}

const PRIVATE_V4: Array<[Cidr, string]> = [
  [cidr('10.0.0.0/8'), 'a private network address'],
  [cidr('172.16.0.0/12'), 'a private network address'],
  [cidr('192.168.0.0/16'), 'a private network address'],
  [cidr('100.64.0.0/10'), 'a shared (carrier-grade NAT) address'],
  [cidr('198.18.0.0/15'), 'a benchmarking network address'],
];
const PRIVATE_V6: Array<[Cidr, string]> = [[cidr('fc00::/7'), 'a unique local (private) address']];

/**
 * Why an address is refused for a request to a service outside (a webhook receiver), or null: what
 * `refusedReason` refuses, and private networks too — a database lives in one, a webhook receiver
 * is a public service, and a Hub posting into its own network is the request forgery to prevent.
 */
export function refusedOutsideReason(addr: IpBytes): string | null {
  const why = refusedReason(addr);
  if (why) return why;
  const v4 = addr.length === 4 ? addr : embeddedIPv4(addr);
  if (v4) for (const [c, r] of PRIVATE_V4) if (inCidr(v4, c)) return addr.length === 4 ? r : `${r} (as ${formatIp(v4)} inside an IPv6 address)`;
  if (addr.length === 16) for (const [c, r] of PRIVATE_V6) if (inCidr(addr, c)) return r;
  return null;
}

export interface ResolvedAddress {
  address: string;
  family: number;
}
/** Resolves a host name to all its addresses. */
export type Lookup = (host: string) => Promise<ResolvedAddress[]>;

/**
 * The addresses `host` resolves to, each checked: `refused` says why one of them may not be reached
 * (a name is refused as a whole when any of its addresses is: whichever one a connection would pick,
 * or fall back to, must be fine), null when all may. A name the policy allows is trusted with
 * whatever it resolves to. Throws `host not found: …` (code ENOTFOUND or EAI_AGAIN).
 */
export async function resolveChecked(
  host: string,
  port: number,
  policy: HostPolicy,
  resolve: Lookup,
  reasonOf: (addr: IpBytes) => string | null = refusedReason,
): Promise<{ found: ResolvedAddress[]; refused: string | null }> {
  let found: ResolvedAddress[];
  try {
    found = await resolve(host);
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    throw Object.assign(new Error(`host not found: ${host}`), { code: code === 'EAI_AGAIN' ? 'EAI_AGAIN' : 'ENOTFOUND' });
  }
  if (found.length === 0) throw Object.assign(new Error(`host not found: ${host}`), { code: 'ENOTFOUND' });
  if (policy.allowsName(host, port)) return { found, refused: null };
  for (const { address } of found) {
    const bytes = parseIp(address);
    if (!bytes) return { found, refused: 'something that is not an IP address' };
    const why = reasonOf(bytes);
    if (why && !policy.allowsAddress(bytes, port)) return { found, refused: why };
  }
  return { found, refused: null };
}

/** Host names that point at this machine or at a metadata service wherever they are resolved. */
export function refusedNameReason(name: string): string | null {
  const n = name.toLowerCase().replace(/\.$/, '');
  if (n === 'localhost' || n.endsWith('.localhost') || n === 'localhost.localdomain' || n === 'ip6-localhost' || n === 'ip6-loopback')
    return 'a name for this machine';
  if (['metadata', 'metadata.google.internal', 'metadata.goog', 'instance-data', 'instance-data.ec2.internal', 'metadata.azure.internal'].includes(n))
    return 'a cloud metadata service name';
  return null;
}

interface AllowEntry {
  /** lower-case host name without trailing dot, or undefined for an address entry */
  name?: string;
  net?: Cidr;
  /** only this port, when given */
  port?: number;
}

/**
 * The operator's exceptions: `STK_CONNECTION_ALLOW_HOSTS`, a comma-separated list of host names
 * (`db.local`), IP addresses (`127.0.0.1`, `::1` or `[::1]`), CIDRs (`10.0.0.0/8`, `fd00::/8`), each
 * host or address optionally with a port (`127.0.0.1:5432`, `[::1]:5432`, `localhost:5432`).
 * An allowed name is trusted with whatever it resolves to.
 */
export class HostPolicy {
  private constructor(
    private readonly entries: AllowEntry[],
    /** the list as given, for messages */
    readonly source: string,
  ) {}

  static readonly NONE = new HostPolicy([], '');

  /** Parses the list; throws an Error naming the bad entry. */
  static parse(list: string | undefined): HostPolicy {
    const entries: AllowEntry[] = [];
    for (const raw of (list ?? '').split(',')) {
      const item = raw.trim();
      if (!item) continue;
      entries.push(parseEntry(item));
    }
    return new HostPolicy(entries, entries.length ? (list ?? '').trim() : '');
  }

  /** This policy plus more entries (e.g. `stk dev` adding its embedded PostgreSQL). */
  with(list: string): HostPolicy {
    const more = HostPolicy.parse(list);
    return new HostPolicy([...this.entries, ...more.entries], [this.source, more.source].filter(Boolean).join(','));
  }

  get empty(): boolean {
    return this.entries.length === 0;
  }

  allowsName(name: string, port: number): boolean {
    const n = name.toLowerCase().replace(/\.$/, '');
    return this.entries.some((e) => e.name === n && (e.port === undefined || e.port === port));
  }

  allowsAddress(addr: IpBytes, port: number): boolean {
    const v4 = addr.length === 16 ? mappedIPv4(addr) : null;
    return this.entries.some((e) => e.net && (e.port === undefined || e.port === port) && (inCidr(addr, e.net) || (v4 !== null && inCidr(v4, e.net))));
  }
}

function mappedIPv4(b: IpBytes): IpBytes | null {
  return b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff ? b.slice(12, 16) : null;
}

const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** A DNS host name (letters, digits, `-`, `_`; labels of 1–63) whose last label is not numeric. */
export function isHostName(s: string): boolean {
  const n = s.toLowerCase().replace(/\.$/, '');
  if (!HOST_NAME.test(n)) return false;
  // a numeric last label makes resolvers read it as an IPv4 number (127.1, 2130706433, 0x7f.1)
  const last = n.slice(n.lastIndexOf('.') + 1);
  return !/^(?:\d+|0x[0-9a-f]*)$/.test(last);
}

function parseEntry(item: string): AllowEntry {
  const bad = () =>
    new Error(`STK_CONNECTION_ALLOW_HOSTS: ${JSON.stringify(item.slice(0, 100))} is not a host name, IP address or CIDR (optionally with :port)`);
  const portOf = (p: string) => {
    if (!/^\d{1,5}$/.test(p) || Number(p) < 1 || Number(p) > 65535) throw bad();
    return Number(p);
  };
  if (item.includes('/')) {
    const [ip, bits, extra] = item.split('/');
    const bytes = parseIp(ip!);
    if (!bytes || extra !== undefined || !/^\d{1,3}$/.test(bits!) || Number(bits) > bytes.length * 8) throw bad();
    return { net: { bytes, bits: Number(bits) } };
  }
  const bracket = /^\[([^\]]+)\](?::(.*))?$/.exec(item);
  if (bracket) {
    const bytes = parseIPv6(bracket[1]!);
    if (!bytes) throw bad();
    return { net: { bytes, bits: 128 }, port: bracket[2] === undefined ? undefined : portOf(bracket[2]) };
  }
  if ((item.match(/:/g) ?? []).length > 1) {
    const bytes = parseIPv6(item);
    if (!bytes) throw bad();
    return { net: { bytes, bits: 128 } };
  }
  const [host, port] = item.split(':');
  const p = port === undefined ? undefined : portOf(port);
  const v4 = parseIPv4(host!);
  if (v4) return { net: { bytes: v4, bits: 32 }, port: p };
  if (!isHostName(host!)) throw bad();
  return { name: host!.toLowerCase().replace(/\.$/, ''), port: p };
}
