/** Server-side primary key generators for `generate: ulid | uuid_v4 | uuid_v7 | nanoid`. */
import { randomBytes, randomUUID } from 'node:crypto';
import { ulid } from '../../common/ulid.js';
import type { IdGenerator } from '../../protocol/release.js';

const NANOID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';

/** 21 characters from a 64-symbol alphabet (126 bits); 64 divides 256, so masking is unbiased. */
export function nanoid(size = 21): string {
  const bytes = randomBytes(size);
  let id = '';
  for (let i = 0; i < size; i++) id += NANOID_ALPHABET[bytes[i]! & 63];
  return id;
}

/** RFC 9562 UUIDv7: 48-bit Unix milliseconds, version 7, variant 10, 74 random bits. */
export function uuidv7(now = Date.now()): string {
  const b = randomBytes(16);
  b.writeUIntBE(now, 0, 6);
  b[6] = 0x70 | (b[6]! & 0x0f);
  b[8] = 0x80 | (b[8]! & 0x3f);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The generator for a table's primary key, or null when the database or the caller provides it. */
export function idGenerator(g: IdGenerator): (() => string) | null {
  switch (g) {
    case 'ulid':
      return () => ulid();
    case 'uuid_v4':
      return randomUUID;
    case 'uuid_v7':
      return () => uuidv7();
    case 'nanoid':
      return () => nanoid();
    case 'auto_increment':
    case 'client':
      return null;
  }
}
