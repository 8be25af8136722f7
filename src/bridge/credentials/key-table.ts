import type { BlockList } from 'node:net';
import { toBlockList } from '../../common/ip-allowlist.js';
import type { SyncKeyRecord } from '../../protocol/sync.js';
import type { Principal } from '../context.js';

/** A key as the verify path needs it: hashes decoded once, times as epoch ms. */
export interface KeyEntry {
  readonly keyId: string;
  readonly project: string;
  readonly env: string;
  /** HMAC of the current secret (a 32-byte view) */
  readonly hash: Buffer;
  /** HMAC of the previous secret during a rotation grace period */
  readonly prevHash: Buffer | null;
  /** epoch ms until which prevHash is accepted (0 = none) */
  readonly prevUntil: number;
  /** null = usable; otherwise why every request with this key is refused (revoked, or suspended until resumed) */
  readonly stopped: 'revoked' | 'suspended' | null;
  /** epoch ms; Infinity = never */
  readonly expiresAt: number;
  /** null → the Bridge default */
  readonly rateLimitPerMin: number | null;
  /** the client addresses the key may be used from; null = any (the common case: one null check) */
  readonly allow: BlockList | null;
  /** built on first use, then the same object for every request */
  readonly principal: Readonly<Principal>;
  /**
   * Which of this key's secrets `h` (an HMAC-SHA-256 of a presented secret) is: `SECRET_NONE` (0),
   * `SECRET_CURRENT` (1), `SECRET_CURRENT_IN_GRACE` (2: the current one while `now` is inside a rotation
   * grace period) or `SECRET_PREVIOUS` (3: the previous one, inside the grace period). Constant time per
   * hash compared, and no allocation: the hashes are compared in place in their slab (the verify hot path).
   */
  secretMatches(h: Buffer, now: number): SecretMatch;
}

/** What `KeyEntry.secretMatches` answers: a small int, so telling the secrets apart costs nothing per request. */
export type SecretMatch = 0 | 1 | 2 | 3;
export const SECRET_NONE = 0;
export const SECRET_CURRENT = 1;
export const SECRET_CURRENT_IN_GRACE = 2;
export const SECRET_PREVIOUS = 3;

/**
 * Constant-time equality of the 32 bytes `a[0..32)` and `b[at..at+32)`: every byte is compared, no
 * branch depends on the data. In place (no subarray view to allocate), which is why it is not
 * `crypto.timingSafeEqual`.
 */
export function equal32(a: Uint8Array, b: Uint8Array, at: number): boolean {
  let d = 0;
  for (let i = 0; i < 32; i++) d |= a[i]! ^ b[at + i]!;
  return d === 0;
}

/**
 * Hashes live in shared 64 KB slabs, 32 bytes each, instead of one Buffer object per key: with
 * 100,000 keys that is 100,000 fewer objects for the GC to trace and ~80 bytes less per key.
 */
const SLAB_BYTES = 64 * 1024;
let slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
let slabUsed = 0;
function allocHashes(n: number): [Buffer, number] {
  if (slabUsed + 32 * n > SLAB_BYTES) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    slabUsed = 0;
  }
  const at = slabUsed;
  slabUsed += 32 * n;
  return [slab, at];
}

/** A key's project, env and roles: one object shared by the keys of an env with the same roles. */
interface Scope {
  readonly project: string;
  readonly env: string;
  readonly roles: readonly string[];
}

/** What most keys do not have (a previous secret, a stop, an expiry, a limit, an allowlist): one object, only for keys that have any. */
interface Rare {
  readonly hasPrev: boolean;
  readonly prevUntil: number;
  readonly stopped: 'revoked' | 'suspended' | null;
  readonly expiresAt: number;
  readonly rateLimitPerMin: number | null;
  readonly allow: BlockList | null;
}

/**
 * Six fields per key (~72 bytes; 1,000,000 keys live in one Bridge): the scope and the rare fields are
 * pointers, the hashes live in a slab. The KeyEntry fields are getters over them (no allocation).
 */
class Entry implements KeyEntry {
  readonly #scope: Scope;
  readonly #slab: Buffer;
  readonly #at: number;
  readonly #rare: Rare | null;
  #principal: Readonly<Principal> | undefined;

  constructor(
    readonly keyId: string,
    scope: Scope,
    hashHex: string,
    prevHex: string | null,
    rare: Rare | null,
  ) {
    const [buf, at] = allocHashes(prevHex ? 2 : 1);
    buf.write(hashHex, at, 32, 'hex');
    if (prevHex) buf.write(prevHex, at + 32, 32, 'hex');
    this.#scope = scope;
    this.#slab = buf;
    this.#at = at;
    this.#rare = rare;
  }

  get project(): string {
    return this.#scope.project;
  }
  get env(): string {
    return this.#scope.env;
  }
  get roles(): readonly string[] {
    return this.#scope.roles;
  }
  get prevUntil(): number {
    return this.#rare === null ? 0 : this.#rare.prevUntil;
  }
  get stopped(): 'revoked' | 'suspended' | null {
    return this.#rare === null ? null : this.#rare.stopped;
  }
  get expiresAt(): number {
    return this.#rare === null ? Infinity : this.#rare.expiresAt;
  }
  get rateLimitPerMin(): number | null {
    return this.#rare === null ? null : this.#rare.rateLimitPerMin;
  }
  get allow(): BlockList | null {
    return this.#rare === null ? null : this.#rare.allow;
  }

  get hash(): Buffer {
    return this.#slab.subarray(this.#at, this.#at + 32);
  }

  get prevHash(): Buffer | null {
    return this.#rare !== null && this.#rare.hasPrev ? this.#slab.subarray(this.#at + 32, this.#at + 64) : null;
  }

  secretMatches(h: Buffer, now: number): SecretMatch {
    const r = this.#rare;
    const grace = r !== null && r.hasPrev && now < r.prevUntil;
    if (equal32(h, this.#slab, this.#at)) return grace ? SECRET_CURRENT_IN_GRACE : SECRET_CURRENT;
    return grace && equal32(h, this.#slab, this.#at + 32) ? SECRET_PREVIOUS : SECRET_NONE;
  }

  get principal(): Readonly<Principal> {
    return (this.#principal ??= Object.freeze({
      kind: 'apikey' as const,
      sub: this.keyId,
      roles: this.roles as string[],
      project: this.project,
      env: this.env,
    }));
  }
}

/**
 * What an unknown key id is checked against: an entry of the same class whose hash no HMAC output can
 * be expected to match (all zeros) and no previous hash, so that path does exactly the work of a known
 * key with a wrong secret (the time taken does not tell whether an id exists).
 */
export const NO_SUCH_KEY: KeyEntry = new Entry('', { project: '', env: '', roles: [] }, '0'.repeat(64), null, null);

const HASH_RE = /^[0-9a-f]{64}$/;
const isHash = (s: unknown): s is string => typeof s === 'string' && HASH_RE.test(s);

function ms(iso: string | null): number {
  if (!iso) return Infinity;
  const t = Date.parse(iso);
  return Number.isFinite(t) ? t : 0;
}

/**
 * Role lists shared between keys: 100,000 keys usually carry a handful of distinct lists, so each key
 * points at a shared frozen array instead of owning a copy (bounded, in case every key is different).
 */
const ROLE_LISTS = new Map<string, readonly string[]>();
const MAX_ROLE_LISTS = 10_000;
function sharedRoles(roles: unknown): readonly string[] {
  const list = Array.isArray(roles) ? roles.filter((x): x is string => typeof x === 'string') : [];
  const k = list.join('\u0000');
  let shared = ROLE_LISTS.get(k);
  if (!shared) {
    shared = Object.freeze(list);
    if (ROLE_LISTS.size < MAX_ROLE_LISTS) ROLE_LISTS.set(k, shared);
  }
  return shared;
}

/** Scopes shared between keys (bounded like the role lists; past the bound a key gets its own). */
const SCOPES = new Map<string, Scope>();
const MAX_SCOPES = 100_000;
function sharedScope(project: string, env: string, roles: readonly string[]): Scope {
  const k = project + '\u0000' + env + '\u0000' + roles.join('\u0000');
  let scope = SCOPES.get(k);
  if (!scope) {
    scope = Object.freeze({ project, env, roles });
    if (SCOPES.size < MAX_SCOPES) SCOPES.set(k, scope);
  }
  return scope;
}

/** Builds an entry; malformed records (bad hash) come back as null and are skipped. */
export function toEntry(r: SyncKeyRecord): KeyEntry | null {
  if (!r) return null;
  const scope = sharedScope(r.project, r.env, sharedRoles(r.roles));
  return entry(r.keyId, scope, r.secretHash, r.status, r.expiresAt, r.rateLimitPerMin, r.prevSecretHash, r.prevExpiresAt, r.allowedIps);
}

/** The checks and conversions of a key record's fields, whichever message carried them. */
function entry(
  keyId: unknown,
  scope: Scope,
  secretHash: unknown,
  status: unknown,
  expiresAt: unknown,
  rateLimitPerMin: unknown,
  prevSecretHash: unknown,
  prevExpiresAt: unknown,
  allowedIps: unknown,
): KeyEntry | null {
  if (typeof keyId !== 'string' || !isHash(secretHash)) return null;
  const prevOk = isHash(prevSecretHash) && typeof prevExpiresAt === 'string' && prevExpiresAt !== '';
  // a status this Bridge does not know (a newer Hub) is refused like a revoked key: fail closed
  const stopped: Rare['stopped'] = status === 'active' ? null : status === 'suspended' ? 'suspended' : 'revoked';
  // no expiry only when there is none: anything but a date string or null (a malformed record) is expired
  const expires = expiresAt === null || expiresAt === undefined ? Infinity : typeof expiresAt === 'string' ? ms(expiresAt) : 0;
  const limit = typeof rateLimitPerMin === 'number' && rateLimitPerMin > 0 ? rateLimitPerMin : null;
  const allow = Array.isArray(allowedIps) ? toBlockList(allowedIps) : null;
  const rare =
    prevOk || stopped !== null || expires !== Infinity || limit !== null || allow !== null
      ? { hasPrev: prevOk, prevUntil: prevOk ? ms(prevExpiresAt) : 0, stopped, expiresAt: expires, rateLimitPerMin: limit, allow }
      : null;
  return new Entry(keyId, scope, secretHash, prevOk ? prevSecretHash : null, rare);
}

/**
 * Adds the keys of a `keyrows` snapshot batch to `into` (rows that do not read as a key — wrong types,
 * bad hash, an env or role index outside the batch's lists — are skipped, like malformed records).
 * Each batch's role lists and scopes are shared once, not per key.
 */
export function addKeyRows(batch: { rows: unknown; envs: unknown; roles: unknown }, into: Map<string, KeyEntry>): void {
  if (!Array.isArray(batch.rows) || !Array.isArray(batch.envs) || !Array.isArray(batch.roles)) return;
  const envs = (batch.envs as unknown[]).map((n) =>
    Array.isArray(n) && typeof n[0] === 'string' && typeof n[1] === 'string' ? (n as [string, string]) : null,
  );
  const roles = (batch.roles as unknown[]).map(sharedRoles);
  const scopes = new Map<number, Scope>();
  for (const r of batch.rows as unknown[]) {
    if (!Array.isArray(r)) continue;
    const ei = r[0] as unknown;
    const ri = r[1] as unknown;
    if (typeof ei !== 'number' || typeof ri !== 'number') continue;
    const names = envs[ei];
    const roleList = roles[ri];
    if (!names || !roleList) continue;
    const at = ei * roles.length + ri;
    let scope = scopes.get(at);
    if (!scope) scopes.set(at, (scope = sharedScope(names[0], names[1], roleList)));
    const e = entry(r[2], scope, r[3], r[4], r[5], r[6], r[7], r[8], r[9]);
    if (e) into.set(e.keyId, e);
  }
}

/**
 * Every key this Bridge knows, by key id (a key id is globally unique, so one Map serves all
 * projects and envs). Replaced wholesale on a snapshot, patched per change.
 */
export class KeyTable {
  #keys = new Map<string, KeyEntry>();
  #pepper: Buffer | null = null;

  get pepper(): Buffer | null {
    return this.#pepper;
  }

  get size(): number {
    return this.#keys.size;
  }

  get(keyId: string): KeyEntry | undefined {
    return this.#keys.get(keyId);
  }

  /** Swaps in a complete table (after a snapshot). */
  replaceAll(pepper: Buffer, records: Iterable<SyncKeyRecord>): void {
    const next = new Map<string, KeyEntry>();
    for (const r of records) {
      const e = toEntry(r);
      if (e) next.set(e.keyId, e);
    }
    this.install(pepper, next);
  }

  /**
   * Swaps in entries built while a snapshot streamed in (each batch converted on arrival, so the raw
   * records of 100,000 keys are never all held at once).
   */
  install(pepper: Buffer, entries: Map<string, KeyEntry>): void {
    this.#pepper = pepper;
    this.#keys = entries;
  }

  /** Applies one key change; null = the key no longer exists. */
  upsert(keyId: string, record: SyncKeyRecord | null): void {
    const e = record ? toEntry(record) : null;
    if (e) this.#keys.set(keyId, e);
    else this.#keys.delete(keyId);
  }
}
