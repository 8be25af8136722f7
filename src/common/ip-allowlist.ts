import { BlockList, isIP } from 'node:net';

/**
 * An API key's IP/CIDR allowlist: parsed and validated the same way by the Hub (422 naming the bad
 * entry) and the Bridge (which matches client addresses against a `node:net` BlockList; an
 * IPv4-mapped IPv6 client address such as `::ffff:1.2.3.4` matches IPv4 rules).
 */
export const MAX_ALLOWED_IPS = 100;
const MAX_ENTRY_CHARS = 64;

export interface IpRule {
  address: string;
  /** null: a single address */
  prefix: number | null;
  family: 'ipv4' | 'ipv6';
}

/** One entry (`203.0.113.7`, `203.0.113.0/24`, `2001:db8::/32`) → a rule, or why it is not one. */
export function parseIpRule(entry: string): IpRule | string {
  if (entry.length > MAX_ENTRY_CHARS) return 'too long';
  const slash = entry.indexOf('/');
  const address = slash < 0 ? entry : entry.slice(0, slash);
  const v = isIP(address);
  if (v === 0 || address.includes('%')) return 'not an IPv4 or IPv6 address (zone ids are not allowed)';
  const family = v === 4 ? 'ipv4' : 'ipv6';
  if (slash < 0) return { address, prefix: null, family };
  const p = entry.slice(slash + 1);
  const max = v === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(p) || Number(p) > max) return `the prefix length must be 0 to ${max}`;
  return { address, prefix: Number(p), family };
}

/**
 * Input (an array or a comma-separated string) → the trimmed entries, each valid, duplicates dropped;
 * throws an Error whose message names the first bad entry (the Hub answers it with 422).
 */
export function normalizeAllowlist(input: unknown): string[] {
  let list: unknown[];
  if (typeof input === 'string') list = input.split(',');
  else if (Array.isArray(input)) list = input;
  else throw new Error('allowedIps must be an array of IP addresses or CIDR ranges, or null for any address');
  if (list.length > MAX_ALLOWED_IPS) throw new Error(`at most ${MAX_ALLOWED_IPS} allowlist entries per key (got ${list.length})`);
  const out: string[] = [];
  for (const raw of list) {
    if (typeof raw !== 'string') throw new Error('allowedIps must be an array of strings');
    const e = raw.trim();
    if (!e) throw new Error('empty allowlist entry: remove the extra comma');
    const r = parseIpRule(e);
    if (typeof r === 'string') throw new Error(`invalid allowlist entry ${JSON.stringify(e.slice(0, MAX_ENTRY_CHARS))}: ${r}`);
    if (!out.includes(e)) out.push(e);
  }
  if (out.length === 0) throw new Error('the allowlist is empty: pass at least one address or range, or null to allow any address');
  return out;
}

/** The Bridge's matcher; entries that do not parse are skipped (a list that had any stays a list: fail closed). */
export function toBlockList(entries: readonly unknown[]): BlockList {
  const b = new BlockList();
  for (const e of entries.slice(0, MAX_ALLOWED_IPS)) {
    if (typeof e !== 'string') continue;
    const r = parseIpRule(e);
    if (typeof r === 'string') continue;
    if (r.prefix === null) b.addAddress(r.address, r.family);
    else b.addSubnet(r.address, r.prefix, r.family);
  }
  return b;
}

/** Whether the client address `ip` (as Fastify resolved it, STK_TRUST_PROXY applied) is on the list. */
export function ipAllowed(list: BlockList, ip: string | undefined): boolean {
  if (typeof ip !== 'string' || ip === '') return false;
  return list.check(ip, ip.includes(':') ? 'ipv6' : 'ipv4');
}
