import { randomBytes } from 'node:crypto';
import { KeyTable } from '../../src/bridge/credentials/key-table.js';
import { verifyKey } from '../../src/bridge/credentials/verifier.js';
import { hashSecret } from '../../src/protocol/key-format.js';
import { generateKey } from '../../src/protocol/key-format.js';
import type { SyncKeyRecord } from '../../src/protocol/sync.js';
import { percentile } from './util.js';

/**
 * Micro-benchmark of the Bridge's key check (`verifyKey`: checksum → Map lookup → HMAC-SHA-256 →
 * constant-time compare → status), in this process, on a table of `tableSize` keys, presenting
 * `distinct` different valid keys round-robin, each call beside a bare HMAC-SHA-256 of a 22-character
 * secret (the tight-loop half of issue 18's verify_vs_hmac). Each call is timed on its own with hrtime;
 * the timer's own cost (measured, ~tens of ns) is included, so the figures are an upper bound.
 */
export function benchVerify(o: { tableSize?: number; distinct?: number; calls?: number } = {}) {
  const tableSize = o.tableSize ?? 100_000;
  const distinct = o.distinct ?? 1000;
  const calls = o.calls ?? 200_000;
  const pepper = randomBytes(32);
  const records: SyncKeyRecord[] = [];
  const presented: string[] = [];
  for (let i = 0; i < tableSize; i++) {
    const { key, keyId, secret } = generateKey('bench');
    records.push({
      keyId,
      project: 'bench',
      env: 'bench',
      name: `k${i}`,
      roles: ['reader'],
      secretHash: hashSecret(pepper, secret).toString('hex'),
      prevSecretHash: null,
      prevExpiresAt: null,
      status: 'active',
      expiresAt: null,
      rateLimitPerMin: null,
    });
    if (i % Math.max(1, Math.floor(tableSize / distinct)) === 0 && presented.length < distinct) presented.push(key);
  }
  const table = new KeyTable();
  table.replaceAll(pepper, records);
  const now = Date.now();
  const check = (k: string) => {
    const r = verifyKey(table, k, now);
    if (typeof r === 'string') throw new Error(`verifyKey rejected a valid key: ${r}`);
  };
  // the bare HMAC-SHA-256 of a 22-character secret (what the check is built around), timed in the same
  // loop, alternately before and after each check, so both see the same machine at the same moments
  const bare = 'benchBareHmacSecret022';
  for (let i = 0; i < 50_000; i++) {
    check(presented[i % presented.length]!); // warm-up (JIT)
    hashSecret(pepper, bare);
  }
  const ns = new Float64Array(calls);
  const hmacNs = new Float64Array(calls);
  for (let i = 0; i < calls; i++) {
    const k = presented[i % presented.length]!;
    if (i & 1) {
      const t0 = process.hrtime.bigint();
      hashSecret(pepper, bare);
      const t1 = process.hrtime.bigint();
      check(k);
      hmacNs[i] = Number(t1 - t0);
      ns[i] = Number(process.hrtime.bigint() - t1);
    } else {
      const t0 = process.hrtime.bigint();
      check(k);
      const t1 = process.hrtime.bigint();
      hashSecret(pepper, bare);
      ns[i] = Number(t1 - t0);
      hmacNs[i] = Number(process.hrtime.bigint() - t1);
    }
  }
  const timer = new Float64Array(10_000);
  for (let i = 0; i < timer.length; i++) {
    const t0 = process.hrtime.bigint();
    timer[i] = Number(process.hrtime.bigint() - t0);
  }
  return {
    p50: Math.round(percentile(ns, 50)),
    p99: Math.round(percentile(ns, 99)),
    hmacP50: Math.round(percentile(hmacNs, 50)),
    hmacP99: Math.round(percentile(hmacNs, 99)),
    tableSize,
    distinct,
    calls,
    timerOverheadNs: Math.round(percentile(timer, 50)),
  };
}
