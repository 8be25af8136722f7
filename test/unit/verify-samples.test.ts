import { describe, expect, it } from 'vitest';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeyTable, UsageCounter } from '../../src/bridge/credentials/index.js';
import { readVerifySamples, SampledApiKeyVerifier } from '../../src/bridge/credentials/verify-samples.js';
import { generateKey } from '../../src/protocol/key-format.js';

describe('SampledApiKeyVerifier (STK_BENCH_VERIFY_SAMPLES, benchmark only)', () => {
  it('answers exactly like the plain verifier and writes one verify + one bare-HMAC sample per check on dump', () => {
    const pepper = randomBytes(32);
    const k = generateKey('dev');
    const table = new KeyTable();
    table.replaceAll(pepper, [
      {
        keyId: k.keyId,
        project: 'shop',
        env: 'dev',
        name: 'k',
        roles: ['reader'],
        secretHash: createHmac('sha256', pepper).update(k.secret).digest('hex'),
        prevSecretHash: null,
        prevExpiresAt: null,
        status: 'active',
        expiresAt: null,
        rateLimitPerMin: null,
      },
    ]);
    const dir = mkdtempSync(join(tmpdir(), 'stk-vs-'));
    const file = join(dir, 'samples.bin');
    const listeners = process.listenerCount('SIGUSR2');
    const v = new SampledApiKeyVerifier(
      file,
      table,
      new UsageCounter(),
      { synced: () => true, isExpired: () => false },
      {
        rateLimitPerApiKey: 1000,
        invalidKeyLimitPerMin: 100,
      },
    );
    try {
      expect(process.listenerCount('SIGUSR2')).toBe(listeners + 1);
      for (let i = 0; i < 5; i++) expect(v.authenticate({ headers: { 'x-santokit-api-key': k.key }, ip: '10.0.0.1' }).sub).toBe(k.keyId);
      expect(v.verify('not a key', Date.now())).toBe('format');
      expect(v.verify(k.key.slice(0, -1) + (k.key.endsWith('A') ? 'B' : 'A'), Date.now())).toBe('checksum');
      v.dump(file);
      const s = readVerifySamples(readFileSync(file));
      expect(s.verifyNs.length).toBe(7);
      expect(s.hmacNs.length).toBe(7);
      for (const x of [...s.verifyNs, ...s.hmacNs]) expect(x).toBeGreaterThan(0);
      v.dump(file); // the ring restarts after each dump
      expect(readVerifySamples(readFileSync(file)).verifyNs.length).toBe(0);
    } finally {
      process.removeAllListeners('SIGUSR2');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
