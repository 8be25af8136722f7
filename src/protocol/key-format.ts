import { createHmac, randomBytes } from 'node:crypto';

/**
 * Project API keys: `stk_[<envTag>_]<keyId>_<secret><checksum>`.
 *
 * - `stk_`       fixed prefix (secret scanners anchor on it)
 * - `<envTag>`   optional, 1–16 of `[a-z0-9]`: the env name with other characters removed (cosmetic:
 *                the key's binding on the Hub is authoritative, the tag only makes a leaked key's blast
 *                radius readable, e.g. `stk_prod_…`)
 * - `<keyId>`    12 characters of Crockford base32, upper case (`0-9A-HJKMNP-TV-Z`, 60 random bits): the
 *                public id the Bridge looks the key up by (one Map lookup, no scan)
 * - `<secret>`   22 characters of base62 (≥ 130 random bits); only HMAC-SHA-256(pepper, secret) is stored
 * - `<checksum>` 6 characters of base62: CRC32 of everything before it, so a mistyped or truncated key
 *                is rejected before any lookup
 *
 * Every character is `[A-Za-z0-9_]`, so a double-click selects the whole key and `\S+` matches it.
 */
export const KEY_PREFIX = 'stk_';
export const KEY_ID_LENGTH = 12;
export const SECRET_LENGTH = 22;
export const CHECKSUM_LENGTH = 6;
export const MAX_TAG_LENGTH = 16;

export const KEY_ID_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
export const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** Anchored regex for one key; groups: 1 env tag (optional), 2 key id, 3 secret, 4 checksum. */
export const API_KEY_RE = /^stk_(?:([a-z0-9]{1,16})_)?([0-9A-HJKMNP-TV-Z]{12})_([A-Za-z0-9]{22})([A-Za-z0-9]{6})$/;
/** Unanchored form for secret scanners (docs/api-keys.md): finds keys inside arbitrary text. */
export const API_KEY_SCAN_RE = /\bstk_(?:[a-z0-9]{1,16}_)?[0-9A-HJKMNP-TV-Z]{12}_[A-Za-z0-9]{28}\b/g;
export const KEY_ID_RE = /^[0-9A-HJKMNP-TV-Z]{12}$/;

export const MAX_KEY_LENGTH = KEY_PREFIX.length + MAX_TAG_LENGTH + 1 + KEY_ID_LENGTH + 1 + SECRET_LENGTH + CHECKSUM_LENGTH;

// ---- CRC32 (IEEE 802.3, the zlib/PNG one), table-driven; node:zlib's crc32 needs Node ≥ 20.15 ----
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC32 of an ASCII string (key characters are all ASCII). */
export function crc32(s: string): number {
  let c = 0xffffffff;
  for (let i = 0; i < s.length; i++) c = CRC_TABLE[(c ^ s.charCodeAt(i)) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Fixed-width base62 of a 32-bit unsigned integer (6 digits: 62^6 > 2^32). */
export function checksumOf(body: string): string {
  let n = crc32(body);
  let out = '';
  for (let i = 0; i < CHECKSUM_LENGTH; i++) {
    out = BASE62[n % 62]! + out;
    n = Math.floor(n / 62);
  }
  return out;
}

/** Uniform random string over `alphabet` (rejection sampling: no modulo bias). */
export function randomString(alphabet: string, length: number): string {
  const n = alphabet.length;
  const limit = 256 - (256 % n);
  let out = '';
  while (out.length < length) {
    const buf = randomBytes(length * 2);
    for (let i = 0; i < buf.length && out.length < length; i++) {
      const b = buf[i]!;
      if (b < limit) out += alphabet[b % n];
    }
  }
  return out;
}

export const newKeyId = () => randomString(KEY_ID_ALPHABET, KEY_ID_LENGTH);
export const newSecret = () => randomString(BASE62, SECRET_LENGTH);

/** The env tag for an env name: its `[a-z0-9]` characters, at most 16; undefined when none are left. */
export function envTag(envName: string | undefined | null): string | undefined {
  if (!envName) return undefined;
  const t = envName
    .toLowerCase()
    .replace(/[^a-z0-9]/g, '')
    .slice(0, MAX_TAG_LENGTH);
  return t || undefined;
}

/** Assembles a key from its parts and appends the checksum. */
export function formatKey(keyId: string, secret: string, tag?: string): string {
  if (!KEY_ID_RE.test(keyId)) throw new Error('invalid key id');
  if (secret.length !== SECRET_LENGTH || !/^[A-Za-z0-9]+$/.test(secret)) throw new Error('invalid secret');
  if (tag !== undefined && !/^[a-z0-9]{1,16}$/.test(tag)) throw new Error('invalid env tag');
  const body = `${KEY_PREFIX}${tag ? tag + '_' : ''}${keyId}_${secret}`;
  return body + checksumOf(body);
}

/** A new key: random id and secret. `env` only feeds the cosmetic tag. */
export function generateKey(env?: string, keyId: string = newKeyId()): { key: string; keyId: string; secret: string; tag?: string } {
  const secret = newSecret();
  const tag = envTag(env);
  return { key: formatKey(keyId, secret, tag), keyId, secret, tag };
}

export interface ParsedKey {
  keyId: string;
  secret: string;
  tag?: string;
}

export type ParseFailure = 'format' | 'checksum';

/**
 * Parses and checksums a presented key. Pure string work (no allocation beyond the result), so the
 * Bridge can reject garbage before touching its key table.
 */
export function parseKey(input: unknown): ParsedKey | ParseFailure {
  if (typeof input !== 'string' || input.length > MAX_KEY_LENGTH + 64) return 'format';
  const m = input.length <= MAX_KEY_LENGTH ? API_KEY_RE.exec(input) : null;
  // `stk_` and only key characters, but not the shape of a whole key: a truncated, extended or mistyped
  // key, whose last 6 characters cannot be the checksum of the rest. Anything else is not a Santokit key.
  if (!m) return KEY_CHARS_RE.test(input) ? 'checksum' : 'format';
  if (!checksumMatches(input)) return 'checksum';
  return m[1] ? { keyId: m[2]!, secret: m[3]!, tag: m[1] } : { keyId: m[2]!, secret: m[3]! };
}

const KEY_CHARS_RE = /^stk_[A-Za-z0-9_]+$/;

/**
 * `checksumOf(key minus its last 6 characters) === its last 6 characters`, computed in place: no
 * substring, no string built (this runs for every request the Bridge sees).
 */
function checksumMatches(key: string): boolean {
  const cut = key.length - CHECKSUM_LENGTH;
  let c = 0xffffffff;
  for (let i = 0; i < cut; i++) c = CRC_TABLE[(c ^ key.charCodeAt(i)) & 0xff]! ^ (c >>> 8);
  let n = (c ^ 0xffffffff) >>> 0;
  for (let i = CHECKSUM_LENGTH - 1; i >= 0; i--) {
    const d = n % 62;
    if (BASE62.charCodeAt(d) !== key.charCodeAt(cut + i)) return false;
    n = (n - d) / 62;
  }
  return true;
}

/** Shows a key id and nothing secret: for messages and logs. */

/**
 * The only form a key's secret is kept in: HMAC-SHA-256 under the pepper (derived from STK_SECRET_KEY).
 * The Hub stores it as hex and sends it to Bridges; the Bridge computes it for a presented key and
 * compares the bytes in constant time.
 */
export function hashSecret(pepper: Buffer, secret: string): Buffer {
  return createHmac('sha256', pepper).update(secret).digest();
}
