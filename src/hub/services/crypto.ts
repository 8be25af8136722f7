import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto';

/**
 * Secrets at rest. Subkeys are derived from STK_SECRET_KEY with HKDF so one master key never
 * serves two purposes: DB-URL encryption (AES-256-GCM), webhook-secret encryption (the same, its own subkey),
 * the API-key pepper (HMAC-SHA-256) and keyed hashes of identifiers kept instead of what a client typed.
 */
export class Crypto {
  readonly #encKey: Buffer;
  readonly #idKey: Buffer;
  readonly #webhookKey: Buffer;
  /** pepper for API-key hashes; shipped to Bridges over the authenticated internal channel */
  readonly apiKeyPepper: Buffer;
  /** stored in the Hub store when it is created: a later start with another master key is refused */
  readonly storeKeyCheck: string;

  constructor(masterKey: Buffer) {
    if (masterKey.length !== 32) throw new Error('master key must be 32 bytes');
    this.#encKey = Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), 'santokit/db-url-encryption/v1', 32));
    this.apiKeyPepper = Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), 'santokit/apikey-pepper/v1', 32));
    this.#idKey = Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), 'santokit/identifier-hash/v1', 32));
    this.#webhookKey = Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), 'santokit/webhook-secret-encryption/v1', 32));
    this.storeKeyCheck = 'v1:' + Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), 'santokit/store-key-check/v1', 16)).toString('hex');
  }

  /**
   * A keyed hash (HMAC-SHA-256, 96 bits as hex) of something a client typed that must not be kept in
   * clear, e.g. an unknown login email (which may be a pasted password): equal inputs match, and
   * without STK_SECRET_KEY nobody can test guesses against it.
   */
  identifierHash(s: string): string {
    return createHmac('sha256', this.#idKey).update(s).digest('hex').slice(0, 24);
  }

  encrypt(plaintext: string): string {
    return seal(this.#encKey, plaintext);
  }

  decrypt(stored: string): string {
    return open(this.#encKey, stored);
  }

  /** A webhook endpoint's signing secret at rest (the Hub signs with it, so it is kept, encrypted). */
  sealWebhookSecret(secret: string): string {
    return seal(this.#webhookKey, secret);
  }

  openWebhookSecret(stored: string): string {
    return open(this.#webhookKey, stored);
  }
}

/** AES-256-GCM, `v1:` + base64(iv ‖ tag ‖ ciphertext). */
function seal(key: Buffer, plaintext: string): string {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  const ct = Buffer.concat([c.update(plaintext, 'utf8'), c.final()]);
  return 'v1:' + Buffer.concat([iv, c.getAuthTag(), ct]).toString('base64');
}

function open(key: Buffer, stored: string): string {
  if (!stored.startsWith('v1:')) throw new Error('unknown ciphertext version');
  const raw = Buffer.from(stored.slice(3), 'base64');
  const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
  d.setAuthTag(raw.subarray(12, 28));
  return Buffer.concat([d.update(raw.subarray(28)), d.final()]).toString('utf8');
}

export const sha256Hex = (s: string) => createHash('sha256').update(s).digest('hex');

/** Opaque random token with a readable prefix, e.g. `stks_…` for sessions. */
export const randomToken = (prefix: string, bytes = 32) => `${prefix}${randomBytes(bytes).toString('base64url')}`;
