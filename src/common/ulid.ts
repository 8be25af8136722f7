import { randomBytes } from 'node:crypto';

/**
 * ULIDs (Crockford base32: 48-bit ms time + 80 random bits), drawing randomness from a pooled
 * `randomBytes` buffer. The `ulid` package calls `getRandomValues` once per character (16 calls per
 * id), which cost ~15 % of the Bridge's CPU when used for a request id on every request.
 */
const ENCODING = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const POOL_SIZE = 4096;
let pool = randomBytes(POOL_SIZE);
let offset = 0;

export function ulid(now: number = Date.now()): string {
  if (offset + 16 > POOL_SIZE) {
    pool = randomBytes(POOL_SIZE);
    offset = 0;
  }
  let time = '';
  let t = now;
  for (let i = 0; i < 10; i++) {
    const m = t % 32;
    time = ENCODING[m] + time;
    t = (t - m) / 32;
  }
  let rand = '';
  for (let i = 0; i < 16; i++) rand += ENCODING[pool[offset++]! & 31];
  return time + rand;
}

/** The ms timestamp of a ULID (its first 10 characters), NaN when it is not one. */
export function ulidTime(id: string): number {
  if (id.length < 10) return NaN;
  let t = 0;
  for (let i = 0; i < 10; i++) {
    const v = ENCODING.indexOf(id[i]!);
    if (v < 0) return NaN;
    t = t * 32 + v;
  }
  return t;
}
